"""int8-unit and vector-unit op checks added for the mutants `make mutation` found alive
(docs/testing.md). Every number is worked by hand from docs/engine.md sections 4 and 5.

Arch (tests/sim/conftest.py make_arch): 250 MHz, DRAM 1 GB/s x efficiency 1 -> D = 4 bytes per
cycle, latency 40 ns -> L = 10 cycles; int8 unit 4 x 16, pipeline 4; vector unit defaults
(16 lanes, 1 cycle per element, pipeline 8; host: 5 us per call + 1 ns per element).
"""

import re

import numpy as np
import pytest

from sim.arch import with_overrides
from sim.engine import dense_op, fold_compute_cycles, token_cycles, vector_op
from sim.errors import SimInputError
from sim.trace import DenseOp, VectorOp


def _arch(make_arch, **over):
    arch = make_arch(bw=1.0, latency_ns=40)
    return with_overrides(arch, {"int8_unit.rows": 4, "int8_unit.cols": 16, "int8_unit.pipeline_cycles": 4,
                                 **over})


def test_dense_activations_op_spills_and_reads_back(make_arch):
    # 2 GEMMs [20, 6] x [6, 40], both operands activations; 512-byte output buffer.
    arch = _arch(make_arch, **{"buffers.outputs_kb": 0.5})
    t = dense_op(DenseOp("qk", 20, 6, 40, batch=2), arch, readback_bytes=100)
    # grid: 2 x ceil(20/4) x ceil(40/16) x 6 + 4 = 2 x 5 x 3 x 6 + 4 = 184
    # output 2 x 20 x 40 = 1600 bytes > 512: spills, ceil(1600 / 4) = 400; read-back 100 / 4 = 25
    assert t.name == "qk"
    assert t.cycles == 184 + 400 + 25 == 609
    assert (t.spill_cycles, t.readback_cycles, t.transfer_cycles, t.latency_cycles) == (400, 25, 0, 0)
    assert t.output_bytes == 1600 and t.output_spilled is True
    # whole bytes and bits (the JSON report prints them): ints, not floats
    assert type(t.output_bytes) is int and all(type(v) is int for v in t.counts.values())
    assert t.counts == {
        "dsp_macs": 2 * 20 * 6 * 40,                             # 9600
        # A: each of 3 column tiles reads the 20 rows x 6 bytes; B: each of 5 row tiles the 40 columns
        "act_buf_read_bits": 2 * 6 * 8 * (3 * 20 + 5 * 40),      # 24960
        "out_buf_write_bits": 2 * 20 * 40 * 8,                   # 12800
        "int8_weight_buf_write_bits": 0,
        "int8_weight_buf_read_bits": 0,
        "dram_int8_weight_bits": 0,
        "dram_spill_bits": (1600 + 100) * 8,                     # 13600
    }


def test_dense_weights_op_timing_fields(make_arch):
    # [20, 6] x [6, 40] weights: X_j = 6*16/4 = 24, 24, 6*8/4 = 12 (sum 60); L = 10; output 800 bytes fits
    t = dense_op(DenseOp("head", 20, 6, 40, weights=True), _arch(make_arch))
    assert (t.spill_cycles, t.readback_cycles, t.transfer_cycles, t.latency_cycles) == (0, 0, 60, 10)
    assert t.output_bytes == 800 and t.output_spilled is False
    assert t.counts["out_buf_write_bits"] == 800 * 8 and t.counts["dram_spill_bits"] == 0
    assert t.counts["dsp_macs"] == 4800


def test_int8_weight_slices_fit_exactly_and_message(make_arch):
    op = DenseOp("head", 20, 6, 40, weights=True)
    # two 6 x 16 slices = 192 bytes = 0.1875 KiB: fits exactly
    dense_op(op, _arch(make_arch, **{"buffers.int8_weights_kb": 0.1875}))
    # 0.1874 KiB = 191.9 bytes: does not
    # (the arch's source, with its overrides, comes first)
    with pytest.raises(SimInputError, match=re.escape(
            "): buffers.int8_weights_kb = 0.1874 cannot hold two 6 x 16 int8 weight slices of 'head' "
            "(192 bytes); need buffers.int8_weights_kb >= 0.1875 or a smaller int8_unit.cols") + "$"):
        dense_op(op, _arch(make_arch, **{"buffers.int8_weights_kb": 0.1874}))


def test_vector_op_fabric_spills_and_reads_back(make_arch):
    arch = _arch(make_arch, **{"buffers.outputs_kb": 0.5})
    t = vector_op(VectorOp("sm", "softmax", 600), arch, readback_bytes=64)
    # ceil(600 / 16) x 1 + 8 = 46; 600 bytes > 512 spill: 150; read-back 64 / 4 = 16
    assert t.name == "sm"
    assert t.cycles == 46 + 150 + 16 == 212
    assert (t.spill_cycles, t.readback_cycles) == (150, 16)
    assert t.output_bytes == 600 and t.output_spilled is True
    assert type(t.output_bytes) is int and all(type(v) is int for v in t.counts.values())
    # an op without a row length has no row steps (sim.energy prices them per step)
    assert t.counts == {"vector_elements": 600, "act_buf_read_bits": 600 * 8, "out_buf_write_bits": 600 * 8,
                        "dram_spill_bits": (600 + 64) * 8, "vector_row_steps": 0}


def test_vector_op_on_the_host(make_arch):
    arch = _arch(make_arch, **{"vector_unit.mode": "host"})
    t = vector_op(VectorOp("ln", "layernorm", 600), arch)
    # 5 us + 600 x 1 ns = 5600 ns x 250 MHz = 1400 cycles; in and out through DRAM: 2 x 600 bytes
    assert t.cycles == 1400
    assert t.counts == {"host_elements": 600, "dram_act_bits": 2 * 600 * 8, "dram_spill_bits": 0}
    assert t.output_spilled is False and t.output_bytes == 600


# --------------------------------------------------------------------- per-token cycles c(m, f)
# SIMD 4, B = 2 banks (q = 2 lanes per bank), K = 8: channel k in bank k mod 2, 4 channels a bank.
# PE 2, N = 3 output channels -> folds {0, 1} and {2, pad}.
ACT = np.array([[1, 1, 1, 1, 1, 1, 1, 1],     # bank 0: 4, bank 1: 4 -> ceil(4/2) = 2
                [1, 0, 1, 0, 0, 0, 0, 0]],    # bank 0: 2, bank 1: 0 -> ceil(2/2) = 1
               dtype=bool)
W = np.array([[1, 1, 0, 0, 0, 0, 0, 0],
              [1, 0, -1, 0, 1, 0, 1, 0],
              [0, 1, 0, 1, 0, 1, 0, 0]], dtype=np.int8)


@pytest.mark.parametrize("mode, want", [
    ("none", [[2, 2], [2, 2]]),   # ceil(ceil(8/2) / 2) = 2 for every token and fold
    ("act", [[2, 2], [1, 1]]),    # the token's busiest bank (above)
    # weight / both: g <= ceil(ceil(K/B) / q) = ceil(K / SIMD) = 2, the token-load bound, so 2
    ("weight", [[2, 2], [2, 2]]),
    ("both", [[2, 2], [2, 2]]),
])
def test_token_cycles_by_hand(mode, want):
    c = token_cycles(ACT, W, 2, 4, mode, banks=2)
    assert c.dtype == np.int64
    assert c.tolist() == want
    f = fold_compute_cycles(ACT, W, 2, 4, mode, banks=2)
    assert f.dtype == np.int64 and f.tolist() == [want[0][0] + want[1][0], want[0][1] + want[1][1]]


def test_token_cycles_bad_inputs_named():
    with pytest.raises(SimInputError, match="^" + re.escape(
            "skip_mode 'dense'; allowed: none, act, weight, both") + "$"):
        token_cycles(ACT, W, 2, 4, "dense")
    with pytest.raises(SimInputError, match="^" + re.escape(
            "weights have K = 7 but the activation mask has K = 8") + "$"):
        token_cycles(ACT, W[:, :7], 2, 4, "act")
    with pytest.raises(SimInputError, match="banks = True"):
        token_cycles(ACT, W, 2, 4, "act", banks=True)
    # 2 banks x 2 ports = 4 divides SIMD 4; 4 banks x 2 ports = 8 does not
    fold_compute_cycles(ACT, W, 2, 4, "act", banks=2, ports=2)
    with pytest.raises(SimInputError, match="banks x ports = 4 x 2 does not divide simd = 4"):
        fold_compute_cycles(ACT, W, 2, 4, "act", banks=4, ports=2)
