"""The act-mode bank scheduler's cycle (rtl/bank_scheduler.v: a token presented in cycle t issues
its first chunk in t + 1, and the next token follows with no bubble), charged once per ternary
layer by the engine and the literal reference alike (docs/engine.md section 4), worked by hand."""

import math

import numpy as np
import pytest

from sim.arch import with_overrides
from sim.buffers import buffer_by_name
from sim.engine import scheduler_fill_cycles, ternary_layer
from sim.errors import SimInputError
from sim.packing import pack_ternary2
from sim.reference import reference_layer
from sim.simulator import simulate
from sim.trace import VERSION, TernaryLinearOp, Trace, VectorOp

# K = 8, SIMD = 4, B = 4 banks (q = 1 lane per bank), PE = 2.
# token 0: nonzeros at 0, 4, 5, 6, 7 -> bank 0 holds 0 and 4 -> 2 cycles; token 1: none -> 1 cycle
# (the accumulator write): C_f = 3 in every fold. fill = ceil(log2 4) + 2 = 4.
# make_arch: 250 MHz, 1 GB/s at efficiency 1 -> D = 4 bytes per cycle; 40 ns -> L = 10 cycles.
# A fold's weights: 2 PE x 8 x 2 bits = 4 bytes -> X = 1 cycle. The input (16 bytes) is resident.
MASK = np.zeros((2, 8), bool)
MASK[0, [0, 4, 5, 6, 7]] = True


def _op(n: int, name: str = "l") -> TernaryLinearOp:
    w = np.ones((n, 8), np.int8)
    return TernaryLinearOp(name, 2, 8, n, pack_ternary2(w), MASK)


def _arch(make_arch, mode="act", **kw):
    return with_overrides(make_arch(pe=2, simd=4, mode=mode, latency_ns=40, **kw), {"compute.gather.banks": 4})


def _reference(op, arch):
    c = arch.spec.compute
    return reference_layer(op.act_mask, op.weights(), pe=c.pe, simd=c.simd, skip_mode=c.skip_mode,
                           dram_bytes_per_cycle=arch.dram_bytes_per_cycle,
                           double_buffering=arch.spec.double_buffering, latency_cycles=arch.dram_latency_cycles,
                           banks=c.gather.banks, act_buffer_words=buffer_by_name(arch)["activations"]["depth"],
                           out_buffer_tokens=buffer_by_name(arch)["outputs"]["depth"])


def test_one_fold_by_hand(make_arch):
    arch = _arch(make_arch)
    assert (arch.dram_bytes_per_cycle, arch.dram_latency_cycles) == (4.0, 10)
    t = ternary_layer(_op(2), arch)
    # L + X_0 + C_0 + fill + scheduler = 10 + 1 + 3 + 4 + 1
    assert t.cycles == 19
    # the array waits for X_0 only: stall = 19 - 3 - 4 - 1 - 10 = 1
    assert (t.compute_cycles, t.fill_cycles, t.scheduler_fill_cycles, t.stall_cycles) == (3, 4, 1, 1)
    assert _reference(_op(2), arch)["cycles"] == 19


def test_once_per_layer_not_per_fold(make_arch):
    # N = 6: three folds, X_j = 1 < C_j = 3: the next fold's first token enters the scheduler in
    # the cycle the last chunk leaves, so no fold after the first waits for the register:
    # 10 + 1 + max(3, 1) + max(3, 1) + max(3, 0) + 4 + 1 = 25 (once per fold would be 27)
    arch = _arch(make_arch)
    assert ternary_layer(_op(6), arch).cycles == 25 == _reference(_op(6), arch)["cycles"]
    # no double buffering: 10 + 3 * (1 + 3) + 4 + 1 = 27
    single = _arch(make_arch, db=False)
    assert ternary_layer(_op(6), single).cycles == 27 == _reference(_op(6), single)["cycles"]


def test_once_per_layer_when_every_fold_stalls(make_arch):
    # 0.25 GB/s -> D = 1 byte per cycle -> X = 4 > C = 3: the array waits for every fold; the
    # scheduler's register is timed with the tokens, so the stalls do not repeat it:
    # 10 + 4 + max(3, 4) + max(3, 4) + max(3, 0) + 4 + 1 = 30; stalls = X_0 + 2 x (4 - 3) = 6
    arch = _arch(make_arch, bw=0.25)
    t = ternary_layer(_op(6), arch)
    assert t.cycles == 30 == _reference(_op(6), arch)["cycles"]
    assert t.stall_cycles == 6


@pytest.mark.parametrize("mode", ["none", "weight", "both"])
def test_no_scheduler_in_the_other_modes(make_arch, mode):
    # none: bank 0 holds ceil(8 / 4) = 2 channels -> 2 cycles per token; weight/both: the token
    # copy load ceil(8 / 4) = 2 bounds each token: C = 4, 10 + 1 + 4 + 4 = 19, no scheduler cycle
    arch = _arch(make_arch, mode=mode)
    t = ternary_layer(_op(2), arch)
    assert (t.cycles, t.scheduler_fill_cycles) == (19, 0)
    assert _reference(_op(2), arch)["cycles"] == 19
    assert scheduler_fill_cycles(mode) == 0


def test_scheduler_fill_rejects_a_bad_mode():
    assert scheduler_fill_cycles("act") == 1
    with pytest.raises(SimInputError, match="skip_mode 'sparse'"):
        scheduler_fill_cycles("sparse")


def test_sim_json_reports_it_per_layer_and_per_query(make_arch):
    ops = [_op(2, "a"), VectorOp("g", "gelu", 4), _op(6, "b")]
    act = simulate(_arch(make_arch), Trace(VERSION, {}, ops)).to_dict()
    tern = [r for r in act["layers"] if r["type"] == "ternary_linear"]
    assert [r["scheduler_fill_cycles"] for r in tern] == [1, 1]
    assert [r["cycles"] for r in tern] == [19, 25]
    assert act["ternary_scheduler_fill_cycles"] == 2
    none = simulate(_arch(make_arch, mode="none"), Trace(VERSION, {}, ops)).to_dict()
    assert none["ternary_scheduler_fill_cycles"] == 0
