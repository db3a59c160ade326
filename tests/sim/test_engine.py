"""Fast engine == literal cycle-stepping reference (random and fixed cases), hand-worked tiling, loop order,
spills and int8-weight streaming, closed forms, monotonicity under skipping."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sim.arch import with_overrides
from sim.buffers import buffer_by_name
from sim.engine import (dense_cycles, dense_op, fill_cycles, fold_compute_cycles, ternary_layer, vector_cycles,
                        vector_op)
from sim.errors import SimInputError
from sim.packing import pack_ternary2
from sim.reference import reference_dense, reference_layer
from sim.simulator import simulate
from sim.trace import VERSION, DenseOp, TernaryLinearOp, Trace, VectorOp, synthetic_vit_trace

MODES = ("none", "act", "weight", "both")
FORMATS = ("ternary2", "ternary1.6")


def make_op(mask, w, name="l"):
    m, k = mask.shape
    return TernaryLinearOp(name, m, k, w.shape[0], pack_ternary2(w), mask)


def arch_v2(make_arch, *, banks=None, ports=1, out_kb=256, order="auto", **kw):
    """``make_arch`` plus the version-2 keys (gather banks/ports, output buffer, loop order)."""
    return with_overrides(make_arch(**kw), {"compute.gather.banks": banks, "compute.gather.ports": ports,
                                            "buffers.outputs_kb": out_kb, "buffers.loop_order": order})


def run_reference(op, arch, values=None, *, banks="arch", input_in_dram=False):
    c = arch.spec.compute
    b = arch.spec.buffers
    return reference_layer(op.act_mask, op.weights(), pe=c.pe, simd=c.simd, skip_mode=c.skip_mode,
                           weight_format=c.weight_format, dram_bytes_per_cycle=arch.dram_bytes_per_cycle,
                           double_buffering=arch.spec.double_buffering, tree_stages=c.adder_tree_stages,
                           decode_latency_cycles=c.decode_latency_cycles, latency_cycles=arch.dram_latency_cycles,
                           banks=c.gather.banks if banks == "arch" else banks, ports=c.ports if banks == "arch" else 1,
                           act_buffer_words=buffer_by_name(arch)["activations"]["depth"], input_in_dram=input_in_dram,
                           out_buffer_bytes=math.floor(b.outputs_kb * 1024),
                           out_buffer_tokens=buffer_by_name(arch)["outputs"]["depth"], loop_order=b.loop_order,
                           act_values=values)


def check_equal(op, arch, rng, *, input_in_dram=False):
    fast = ternary_layer(op, arch, input_in_dram=input_in_dram)
    values = rng.integers(-128, 128, size=(op.m, op.k))
    ref = run_reference(op, arch, values, input_in_dram=input_in_dram)
    assert fast.cycles == ref["cycles"]
    assert fast.compute_cycles == int(ref["compute"].sum())
    assert (fast.loop_order, fast.token_blocks, fast.spill_cycles) == (ref["loop_order"], ref["token_blocks"],
                                                                       ref["spill"])
    for key, val in ref["counts"].items():
        assert fast.counts[key] == val, key
    # conflict cycles: the same machine with one bank of SIMD ports, stepped by the reference
    one = run_reference(op, arch, banks=1, input_in_dram=input_in_dram)
    assert fast.conflict_cycles == int(ref["compute"].sum()) - int(one["compute"].sum())
    c = arch.spec.compute
    if fast.token_blocks == 1:  # one block: the steps are the folds
        assert np.array_equal(fold_compute_cycles(op.act_mask, op.weights(), c.pe, c.simd, c.skip_mode,
                                                  banks=c.gather.banks, ports=c.ports), ref["compute"])
    # skipping only drops zero products: the accumulated outputs are the exact integer GEMM
    expect = np.where(op.act_mask, values, 0) @ op.weights().astype(np.int64).T
    assert np.array_equal(ref["y"], expect)
    return fast, ref


def with_act_words(arch, depth):
    """``arch`` with an activation buffer of exactly ``depth`` words (its width is the arch's)."""
    width = buffer_by_name(arch)["activations"]["width_bits"]
    out = with_overrides(arch, {"buffers.activations_kb": (depth * width - 0.5) / 8192})
    assert buffer_by_name(out)["activations"]["depth"] == depth
    return out


def _gather(simd, bank_pick, port_pick):
    """A valid (banks, ports) for ``simd`` from two random picks."""
    divisors = [b for b in range(1, simd + 1) if simd % b == 0]
    banks = divisors[bank_pick % len(divisors)]
    ports = 2 if port_pick and (simd // banks) % 2 == 0 else 1
    return banks, ports


@settings(max_examples=80, deadline=None, database=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 6), k=st.integers(1, 33), n=st.integers(1, 13), pe=st.integers(1, 5),
       simd=st.sampled_from([1, 2, 3, 4, 6, 8]), bank_pick=st.integers(0, 7), port_pick=st.booleans(),
       mode=st.sampled_from(MODES), fmt=st.sampled_from(FORMATS), db=st.booleans(),
       act_density=st.floats(0, 1), w_zero=st.floats(0, 1), tiling=st.sampled_from(["resident", "tiled", "dram"]),
       order=st.sampled_from(["auto", "fold_outer", "token_outer"]), spill=st.booleans(),
       bw=st.sampled_from([0.1, 0.37, 1.0, 4.0]), seed=st.integers(0, 2**16))
def test_fast_equals_reference_random(make_arch, m, k, n, pe, simd, bank_pick, port_pick, mode, fmt, db, act_density,
                                      w_zero, tiling, order, spill, bw, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((m, k)) < act_density
    u = rng.random((n, k))
    w = np.where(u < w_zero, 0, np.where(rng.random((n, k)) < 0.5, 1, -1)).astype(np.int8)
    h = 2 if db else 1
    banks, ports = _gather(simd, bank_pick, port_pick)
    # words of a dense token in the activation buffer: chunks of q = SIMD / B lanes per bank (act),
    # else SIMD values a word
    dense = -(-(-(-k // banks)) // (simd // banks)) if mode == "act" else -(-k // simd)
    # tiled: room for between h and (M - 1) dense tokens; dram: the previous op spilled
    if tiling == "tiled" and h >= m:
        tiling = "dram"  # no buffer holds h tokens but not all M
    depth = int(rng.integers(h * dense, m * dense)) if tiling == "tiled" else max(m, h) * dense
    out_kb = (m * n - 1) / 1024 if spill and m * n > 1 else 64
    arch = arch_v2(make_arch, banks=banks, ports=ports, out_kb=out_kb, order=order, pe=pe, simd=simd, mode=mode,
                   fmt=fmt, db=db, bw=bw)
    arch = with_act_words(arch, depth)
    check_equal(make_op(mask, w), arch, rng, input_in_dram=tiling == "dram")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_fast_equals_reference_on_trace_layers(make_arch, mode, fmt):
    tr = synthetic_vit_trace(depth=1, dim=24, tokens=6, heads=2, mlp_ratio=2, sparsity=0.5, weight_zero_frac=0.4,
                             natural_zero_frac=0.1, seed=3)
    arch = arch_v2(make_arch, banks=4, pe=8, simd=8, mode=mode, fmt=fmt, bw=2.0)
    rng = np.random.default_rng(0)
    for op in tr.ternary_ops():
        check_equal(op, arch, rng)


@pytest.mark.parametrize("db", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
def test_dense_mode_closed_form(make_arch, db, fmt):
    rng = np.random.default_rng(1)
    m, k, n, pe, simd = 7, 50, 21, 4, 8
    op = make_op(rng.random((m, k)) < 0.3, rng.integers(-1, 2, (n, k)).astype(np.int8))
    arch = make_arch(pe=pe, simd=simd, mode="none", fmt=fmt, db=db, bw=0.5, clock=100, latency_ns=100)
    t = ternary_layer(op, arch)
    n_f = math.ceil(n / pe)
    c_f = m * math.ceil(k / simd)
    bpc = 0.5e9 / 100e6  # bytes per cycle
    bits = 2 if fmt == "ternary2" else 1.6
    t_f = math.ceil(pe * k * bits / 8 / bpc) + (3 if fmt == "ternary1.6" else 0)
    lat = math.ceil(100e-9 * 100e6)
    fill = math.ceil(math.log2(simd)) + 2
    expect = (lat + t_f + (n_f - 1) * max(c_f, t_f) + c_f + fill) if db else (lat + n_f * (t_f + c_f) + fill)
    assert t.cycles == expect
    assert t.compute_cycles == n_f * c_f
    assert t.counts["pairs_processed"] == m * n * k


def test_fill_cycles():
    assert [fill_cycles(s) for s in (1, 2, 3, 32, 33)] == [2, 3, 4, 7, 8]


def _one_op_sim(mask, w, arch):
    return simulate(arch, Trace(VERSION, {}, [make_op(mask, w)]))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 6), k=st.integers(2, 64), n=st.integers(1, 24), mode=st.sampled_from(("act", "weight", "both")),
       fmt=st.sampled_from(FORMATS), extra_a=st.floats(0, 1), extra_w=st.floats(0, 1), seed=st.integers(0, 9999))
def test_more_zeros_never_cost_more(make_arch, m, k, n, mode, fmt, extra_a, extra_w, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((m, k)) < 0.7
    w = rng.integers(-1, 2, (n, k)).astype(np.int8)
    mask2 = mask & (rng.random((m, k)) >= extra_a)
    w2 = np.where(rng.random((n, k)) < extra_w, 0, w).astype(np.int8)
    arch = make_arch(pe=4, simd=4, mode=mode, fmt=fmt)
    a, b = _one_op_sim(mask, w, arch), _one_op_sim(mask2, w2, arch)
    assert b["cycles"] <= a["cycles"]
    assert b["energy_mj"] <= a["energy_mj"] * (1 + 1e-12)


def test_skipping_saves_cycles_at_sparsity(make_arch):
    tr = synthetic_vit_trace(depth=1, dim=64, tokens=10, heads=2, sparsity=0.6, seed=0)
    cyc = {mode: simulate(make_arch(pe=8, simd=16, mode=mode, bw=16), tr)["cycles_by_unit"]["ternary_array"]
           for mode in MODES}
    assert cyc["act"] < cyc["none"]
    # version 2: loading each token into the PE copies takes ceil(K / SIMD) cycles, so weight-side
    # skipping never saves time (docs/engine.md section 3); version 1 had both <= act here
    assert cyc["weight"] == cyc["both"] == cyc["none"]


@pytest.mark.parametrize("m,k,n,batch,rows,cols", [(5, 3, 7, 2, 2, 4), (197, 64, 197, 12, 16, 16), (1, 1, 1, 1, 8, 8)])
def test_dense_unit_cycles(m, k, n, batch, rows, cols):
    if m * n * k * batch > 2e5:
        assert dense_cycles(m, k, n, batch, rows, cols, 4) == batch * math.ceil(m / rows) * math.ceil(n / cols) * k + 4
    else:
        assert dense_cycles(m, k, n, batch, rows, cols, 4) == reference_dense(m, k, n, batch, rows, cols, 4)["cycles"]


def test_vector_unit_cycles(make_arch):
    arch = make_arch()
    v = arch.spec.vector_unit
    assert vector_cycles(1000, "softmax", arch) == math.ceil(1000 / v.lanes) * v.cycles_per_element["softmax"] + v.pipeline_cycles
    from sim.arch import with_overrides
    host = with_overrides(arch, {"vector_unit.mode": "host"})
    ns = host.spec.vector_unit.host_call_overhead_us * 1e3 + 1000 * host.spec.vector_unit.host_ns_per_element["gelu"]
    assert vector_cycles(1000, "gelu", host) == math.ceil(ns * 250 / 1e3)


def test_weight_buffer_too_small_is_named(make_arch):
    from sim.errors import SimInputError
    rng = np.random.default_rng(0)
    op = make_op(rng.random((2, 4096)) < 0.5, rng.integers(-1, 2, (8, 4096)).astype(np.int8), name="blocks.0.mlp.fc2")
    with pytest.raises(SimInputError, match="blocks.0.mlp.fc2.*weights_kb"):
        ternary_layer(op, make_arch(pe=8, w_kb=2))


def test_accumulator_width_checked(make_arch):
    from sim.arch import with_overrides
    from sim.errors import SimInputError
    rng = np.random.default_rng(0)
    op = make_op(rng.random((2, 768)) < 0.5, rng.integers(-1, 2, (4, 768)).astype(np.int8), name="fc")
    ternary_layer(op, with_overrides(make_arch(), {"compute.accumulator_bits": 18}))  # 768 * 128 < 2**17
    with pytest.raises(SimInputError, match="accumulator_bits = 16.*'fc'.*18 bits"):
        ternary_layer(op, with_overrides(make_arch(), {"compute.accumulator_bits": 16}))


# =====================================================================================================
# docs/engine.md sections 4 and 5 worked by hand: token tiling, loop order, overlap, output spills and
# read-back, int8-unit weight streaming; fixed edge cases of fast engine == literal reference.
# Arch of the hand-worked cases (conftest ``make_arch``): 250 MHz, DRAM 1 GB/s at efficiency 1 ->
# D = 4 bytes per cycle; latency 40 ns -> L = 10 cycles.

def op_of(mask, w, name="l"):
    return TernaryLinearOp(name, mask.shape[0], mask.shape[1], w.shape[0], pack_ternary2(w), mask)


def tiled_case(make_arch, order, db=True, fmt="ternary2"):
    # M = 5 tokens, K = 8, N = 4, PE 2 (2 folds), SIMD 4, mode none: c(m) = ceil(8/4) = 2.
    # activation buffer 32 bytes < M*K = 40: tiled; h = 2 -> M_t = floor(32 / 16) = 2 -> blocks 2, 2, 1
    mask = np.ones((5, 8), bool)
    w = np.ones((4, 8), np.int8)
    arch = arch_v2(make_arch, banks=4, order=order, pe=2, simd=4, mode="none", db=db, act_kb=32 / 1024, bw=1.0,
                   latency_ns=40, fmt=fmt, decode=3)
    assert arch.dram_bytes_per_cycle == 4.0 and arch.dram_latency_cycles == 10
    return op_of(mask, w), arch


def test_token_outer_by_hand(make_arch):
    op, arch = tiled_case(make_arch, "token_outer")
    t = ternary_layer(op, arch)
    # steps (f,b): (0,0) (1,0) (0,1) (1,1) (0,2) (1,2); a fold's weights 2*8*2/8 = 4 bytes
    # C = 4 4 4 4 2 2; X = (4+16)/4=5, 4/4=1, 5, 1, (4+8)/4=3, 1
    # L + X0 + max(4,1)+max(4,5)+max(4,1)+max(4,3)+max(2,1)+max(2,0) + fill(log2 4 + 2 = 4)
    assert t.cycles == 10 + 5 + (4 + 5 + 4 + 4 + 2 + 2) + 4 == 40
    assert (t.loop_order, t.token_blocks, t.act_resident) == ("token_outer", 3, False)
    assert t.transfer_cycles == 5 + 1 + 5 + 1 + 3 + 1
    assert t.counts["dram_weight_bits"] == 3 * 2 * 4 * 8  # every block reloads both folds
    assert t.counts["dram_act_bits"] == t.counts["act_buf_write_bits"] == 40 * 8  # input once


def test_fold_outer_by_hand(make_arch):
    op, arch = tiled_case(make_arch, "fold_outer")
    t = ternary_layer(op, arch)
    # steps (0,0) (0,1) (0,2) (1,0) (1,1) (1,2): X = (4+16)/4=5, 16/4=4, 8/4=2, 5, 4, 2; C = 4 4 2 4 4 2
    # 10 + 5 + max(4,4)+max(4,2)+max(2,5)+max(4,4)+max(4,2)+max(2,0) + 4
    assert t.cycles == 10 + 5 + (4 + 4 + 5 + 4 + 4 + 2) + 4 == 42
    assert t.counts["dram_weight_bits"] == 2 * 4 * 8  # weights once
    assert t.counts["dram_act_bits"] == 2 * 40 * 8  # the input once per fold


def test_decoder_latency_only_on_steps_that_load_weights(make_arch):
    op, arch = tiled_case(make_arch, "fold_outer", fmt="ternary1.6")
    t = ternary_layer(op, arch)
    # a fold's 16 weights at 1.6 bits = 3.2 bytes; steps (0,0) (0,1) (0,2) (1,0) (1,1) (1,2):
    # X = ceil(19.2/4) + 3 = 8, 16/4 = 4, 8/4 = 2, 8, 4, 2 (the decoder only follows a weight load)
    # 10 + 8 + max(4,4)+max(4,2)+max(2,8)+max(4,4)+max(4,2)+max(2,0) + 4
    assert t.cycles == 10 + 8 + (4 + 4 + 8 + 4 + 4 + 2) + 4 == 48
    assert t.transfer_cycles == 8 + 4 + 2 + 8 + 4 + 2
    assert t.counts["base3_decodes"] == 2 * math.ceil(16 / 5)
    assert t.counts["dram_weight_bits"] == 2 * math.ceil(16 * 1.6)
    assert run_reference(op, arch)["cycles"] == 48


def test_auto_picks_least_dram_bytes_and_fold_outer_on_a_tie(make_arch):
    op, arch = tiled_case(make_arch, "auto")
    # fold_outer: 2*4 + 2*40 = 88 bytes; token_outer: 3*2*4 + 40 = 64 bytes -> token_outer
    assert ternary_layer(op, arch).loop_order == "token_outer"
    # one fold (N = 2 = PE): both orders are the same steps and bytes -> fold_outer
    op1 = op_of(np.ones((5, 8), bool), np.ones((2, 8), np.int8))
    assert ternary_layer(op1, arch).loop_order == "fold_outer"
    # a resident input (M*K = 40 fits 64 bytes) is one block: a tie
    res = arch_v2(make_arch, banks=4, pe=2, simd=4, mode="none", act_kb=64 / 1024, bw=1.0)
    t = ternary_layer(op, res)
    assert (t.loop_order, t.token_blocks, t.act_resident, t.counts["dram_act_bits"]) == ("fold_outer", 1, True, 0)


def test_no_double_buffering_serialises(make_arch):
    op, arch = tiled_case(make_arch, "token_outer", db=False)
    t = ternary_layer(op, arch)
    # h = 1: M_t = floor(32 / 8) = 4 -> blocks 4, 1; steps (0,0) (1,0) (0,1) (1,1)
    # C = 8 8 2 2; X = (4+32)/4 = 9, 1, (4+8)/4 = 3, 1;  L + sum(X + C) + fill
    assert t.token_blocks == 2
    assert t.cycles == 10 + (9 + 8) + (1 + 8) + (3 + 2) + (1 + 2) + 4 == 48


def test_one_token_must_fit(make_arch):
    op, _ = tiled_case(make_arch, "auto")
    # mode none, SIMD 4: words of 4 x 8 bits; a token of K = 8 takes 2 words. 12 bytes = 3 words:
    # not resident (10 words), a block holds floor(3 / 2) = 1 word < 2
    arch = arch_v2(make_arch, banks=4, pe=2, simd=4, mode="none", act_kb=12 / 1024)
    with pytest.raises(SimInputError, match=r"activations_kb = 0.0117188 holds 3 words of 32 bits, a token block "
                                            r"at most 1; one token of layer 'l' takes 2 words: need "
                                            r"buffers.activations_kb >= 0.015625"):
        ternary_layer(op, arch)
    # 16 bytes = 4 words: a block of 2 words, one token
    assert ternary_layer(op, with_overrides(arch, {"buffers.activations_kb": 16 / 1024})).token_blocks == 5


def test_output_spill_and_read_back_by_hand(make_arch):
    # M*N = 5*4 = 20 output bytes > a 16-byte output buffer: ceil(20 / 4) = 5 cycles to write them
    op, _ = tiled_case(make_arch, "auto")
    arch = arch_v2(make_arch, banks=4, pe=2, simd=4, mode="none", act_kb=64 / 1024, out_kb=16 / 1024, bw=1.0)
    alone = ternary_layer(op, arch)
    fits = ternary_layer(op, with_overrides(arch, {"buffers.outputs_kb": 20 / 1024}))
    assert alone.spill_cycles == 5 and alone.output_spilled and not fits.output_spilled
    assert alone.cycles == fits.cycles + 5
    assert alone.counts["dram_spill_bits"] == 20 * 8
    # the next op reads them back: a vector op of 20 elements streams 20 bytes in (5 cycles)
    vec = VectorOp("gelu", "gelu", 20)
    base = vector_op(vec, arch)
    back = vector_op(vec, arch, readback_bytes=20)
    assert back.cycles == base.cycles + 5 and back.readback_cycles == 5
    assert back.counts["dram_spill_bits"] == base.counts["dram_spill_bits"] + 20 * 8
    # through simulate: ternary (spills) -> vector (reads back) -> ternary (input from DRAM: tiled)
    sim = simulate(arch, Trace(VERSION, {}, [op, vec, op_of(np.ones((5, 8), bool), np.ones((4, 8), np.int8), "l2")]))
    recs = sim.layers
    assert recs[0]["spill_cycles"] == 5 and recs[1]["readback_cycles"] == 5
    # the vector op's 20-byte output spills too (16-byte buffer): l2's input is in DRAM
    assert recs[1]["spill_cycles"] == 5
    l2 = ternary_layer(sim_op := op_of(np.ones((5, 8), bool), np.ones((4, 8), np.int8), "l2"), arch,
                       input_in_dram=True)
    assert not recs[2]["act_resident"] and recs[2]["cycles"] == l2.cycles and sim_op.m == 5
    assert sim["dram_spill_bytes"] == 20 + (20 + 20) + 20  # l spill, gelu read-back + spill, l2 spill


def int8_arch(make_arch, **buf):
    arch = make_arch(bw=1.0, latency_ns=40)
    return with_overrides(arch, {"int8_unit.rows": 4, "int8_unit.cols": 16, "int8_unit.pipeline_cycles": 4,
                                 **{f"buffers.{k}": v for k, v in buf.items()}})


def test_int8_weights_streamed_by_hand(make_arch):
    arch = int8_arch(make_arch)
    op = DenseOp("head", 20, 6, 40, weights=True)
    t = dense_op(op, arch)
    # row tiles ceil(20/4) = 5; column tiles 16, 16, 8: C_j = 5 * 6 = 30; X_j = 6*16/4 = 24, 24, 6*8/4 = 12
    # L + X0 + max(30,24) + max(30,12) + max(30,0) + pipeline
    assert t.cycles == 10 + 24 + 30 + 30 + 30 + 4 == 128
    assert dense_op(DenseOp("qk", 20, 6, 40), arch).cycles == 3 * 5 * 6 + 4  # activations: no streaming
    c = t.counts
    assert c["dram_int8_weight_bits"] == c["int8_weight_buf_write_bits"] == 6 * 40 * 8
    assert c["int8_weight_buf_read_bits"] == 6 * 40 * 5 * 8  # every row tile reads its column's slice
    assert c["act_buf_read_bits"] == 6 * 8 * 3 * 20  # A only: k x 8 bits per row per column tile
    # DRAM slower than the grid: 0.25 GB/s -> D = 1: X = 96, 96, 48
    slow = with_overrides(arch, {"dram.bandwidth_gb_per_s": 0.25})
    assert dense_op(op, slow).cycles == 10 + 96 + 96 + 48 + 30 + 4
    for a in (arch, slow):
        ref = reference_dense(20, 6, 40, 1, 4, 16, 4, weights=True, dram_bytes_per_cycle=a.dram_bytes_per_cycle,
                              latency_cycles=a.dram_latency_cycles)
        t = dense_op(op, a)
        assert ref["cycles"] == t.cycles
        for key, val in ref["counts"].items():
            assert t.counts[key] == val, key


def test_int8_weight_buffer_too_small_is_named(make_arch):
    arch = int8_arch(make_arch, int8_weights_kb=0.1)  # 102 bytes < 2 * 6 * 16 = 192
    with pytest.raises(SimInputError, match="int8_weights_kb = 0.1.*'head'.*192 bytes"):
        dense_op(DenseOp("head", 20, 6, 40, weights=True), arch)


@pytest.mark.parametrize("m,k,n,batch,rows,cols,bw", [(7, 5, 33, 1, 2, 8, 0.3), (3, 40, 5, 2, 4, 4, 4.0),
                                                      (16, 9, 16, 1, 16, 16, 1.0), (1, 1, 1, 1, 1, 1, 0.1)])
def test_int8_weights_equal_reference(make_arch, m, k, n, batch, rows, cols, bw):
    arch = with_overrides(make_arch(bw=bw), {"int8_unit.rows": rows, "int8_unit.cols": cols})
    op = DenseOp("d", m, k, n, batch=batch, weights=True)
    t = dense_op(op, arch, readback_bytes=m * k)
    ref = reference_dense(m, k, n, batch, rows, cols, arch.spec.int8_unit.pipeline_cycles, weights=True,
                          dram_bytes_per_cycle=arch.dram_bytes_per_cycle, latency_cycles=arch.dram_latency_cycles,
                          readback_bytes=m * k, out_buffer_bytes=math.floor(arch.spec.buffers.outputs_kb * 1024))
    assert t.cycles == ref["cycles"]
    for key, val in ref["counts"].items():
        assert t.counts[key] == val, key


# ------------------------------------------------------------- fixed edge cases, fast == reference

def test_both_mode_token_with_no_overlap(make_arch):
    # token 0 is nonzero only where every weight is zero: no pair processed, but the token still
    # takes its copy load ceil(K/SIMD) = 3 cycles and one accumulator write per lane
    k = 10
    mask = np.zeros((2, k), bool)
    mask[0, [0, 1]] = True
    mask[1, :] = True
    w = np.zeros((3, k), np.int8)
    w[:, 2:] = 1
    arch = arch_v2(make_arch, banks=2, pe=2, simd=4, mode="both", bw=4.0)
    fast, ref = check_equal(op_of(mask, w), arch, np.random.default_rng(0))
    assert fast.compute_cycles == 2 * 2 * 3  # 2 folds x 2 tokens x 3
    # token 0: 0 pairs; token 1: 8 per lane x 3 lanes
    assert fast.counts["pairs_processed"] == 24
    # chunks: token 0 one empty chunk per lane; token 1: 8 channels 2..9, 4 per bank, q = 2 -> 2 chunks
    assert fast.counts["acc_updates"] == 3 * 1 + 3 * 2


def test_a_stall_every_fold(make_arch):
    # tiny bandwidth: every transfer is longer than the step's compute
    rng = np.random.default_rng(3)
    mask = rng.random((3, 16)) < 0.5
    w = rng.integers(-1, 2, (9, 16)).astype(np.int8)
    arch = arch_v2(make_arch, banks=2, pe=2, simd=4, mode="act", bw=0.05)
    fast, ref = check_equal(op_of(mask, w), arch, rng)
    x = math.ceil(2 * 16 * 2 / 8 / arch.dram_bytes_per_cycle)
    assert x > max(ref["compute"])
    # the array waits for every fold: L + 5 transfers + the last fold's compute + fill + the bank
    # scheduler's one cycle (act), once for the layer however often the array waits
    assert fast.cycles == arch.dram_latency_cycles + 5 * x + int(ref["compute"][-1]) + fast.fill_cycles + 1
    assert fast.stall_cycles == 5 * x - int(ref["compute"][:-1].sum())


def test_uneven_last_block(make_arch):
    # act, SIMD 4, B 4 (q = 1), K = 8: a token's chunks = its busiest bank's nonzeros (channels b, b + 4)
    rng = np.random.default_rng(4)
    two, one = [1] * 8, [1, 1, 1, 1, 0, 0, 0, 0]  # 2 chunks, 1 chunk
    mask = np.array([two, one, one, two, two, one, two], bool)  # words 2 1 1 2 2 1 2 = 11
    w = rng.integers(-1, 2, (6, 8)).astype(np.int8)
    for order in ("fold_outer", "token_outer"):
        # 6 words < 11, h = 2: a block holds 3 words -> [2 1] [1 2] [2 1] [2]: 4 blocks of 2, 2, 2, 1 tokens
        arch = with_act_words(arch_v2(make_arch, banks=4, order=order, pe=4, simd=4, mode="act", bw=0.5), 6)
        fast, ref = check_equal(op_of(mask, w), arch, rng)
        assert fast.token_blocks == ref["token_blocks"] == 4 and fast.loop_order == order
        # act reads the IP's stream: 11 chunks x 4 uint32 slots + 7 uint16 counts = 190 bytes a pass
        # (fold_outer: one pass per fold, 2 folds), not the dense 7 x 8 int8
        assert fast.counts["dram_act_bits"] == (1 if order == "token_outer" else 2) * (11 * 4 * 4 + 7 * 2) * 8
        # the buffer stores each loaded chunk's 4 slots as value + ceil(log2 8) = 3 index bits
        assert fast.counts["act_buf_write_bits"] == (1 if order == "token_outer" else 2) * 11 * 4 * (8 + 3)
        # 5 words: a block holds 2 -> [2] [1 1] [2] [2] [1] [2]: 6 blocks
        arch5 = with_act_words(arch, 5)
        fast, ref = check_equal(op_of(mask, w), arch5, rng)
        assert fast.token_blocks == ref["token_blocks"] == 6
        # 11 words hold the whole input: resident, one block
        fast, ref = check_equal(op_of(mask, w), with_act_words(arch, 11), rng)
        assert (fast.token_blocks, fast.act_resident, fast.counts["dram_act_bits"]) == (1, True, 0)


def test_output_buffer_bounds_a_block(make_arch):
    """A block holds at most the output buffer's depth in tokens (one fold's PE outputs each, the
    HLS IP's obuf[MMAX][PE]), resident input or not."""
    mask = np.ones((5, 8), bool)
    w = np.ones((4, 8), np.int8)
    rng = np.random.default_rng(0)
    # PE 2: output words of 16 bits; 31.5 bits -> depth 2 tokens; the input (10 words) is resident
    arch = arch_v2(make_arch, banks=4, order="token_outer", pe=2, simd=4, mode="none", act_kb=64 / 1024,
                   out_kb=31.5 / 8192, bw=1.0)
    fast, ref = check_equal(op_of(mask, w), arch, rng)
    # blocks of 2, 2, 1 tokens; token_outer reloads both folds' weights (2 x 4 bytes) per block
    assert (fast.token_blocks, fast.act_resident) == (3, True) and ref["token_blocks"] == 3
    assert fast.counts["dram_weight_bits"] == 3 * 2 * 4 * 8 and fast.counts["dram_act_bits"] == 0


def test_everything_in_one_bank(make_arch):
    # SIMD 8, B 8 (q = 1): every token's nonzeros at channels 0, 8, 16, 24 (bank 0): 4 cycles each,
    # where one bank of 8 ports (version 1) takes ceil(4/8) = 1
    mask = np.zeros((3, 32), bool)
    mask[:, ::8] = True
    w = np.ones((8, 32), np.int8)
    arch = arch_v2(make_arch, banks=8, pe=4, simd=8, mode="act", bw=4.0)
    fast, ref = check_equal(op_of(mask, w), arch, np.random.default_rng(5))
    assert fast.compute_cycles == 2 * 3 * 4  # 2 folds x 3 tokens x 4
    assert fast.conflict_cycles == 2 * 3 * (4 - 1)
    one = arch_v2(make_arch, banks=1, pe=4, simd=8, mode="act", bw=4.0)
    assert ternary_layer(op_of(mask, w), one).compute_cycles == 2 * 3 * 1
    # ports 2 with 4 banks: q = 2 -> ceil(4 / 2) = 2 per token
    two = arch_v2(make_arch, banks=4, ports=2, pe=4, simd=8, mode="act", bw=4.0)
    assert check_equal(op_of(mask, w), two, np.random.default_rng(6))[0].compute_cycles == 2 * 3 * 2


def test_reference_has_its_own_constants():
    import ast
    import inspect

    import sim.reference as r

    tree = ast.parse(inspect.getsource(r))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not any(m and m.startswith("sim") for m in imported), imported
    # index bits = ceil(log2 K) by its own rule
    assert [r._idx_bits(k) for k in (1, 2, 3, 4, 5, 1024, 1025)] == [1, 1, 2, 2, 3, 10, 11]


def test_reference_runs_steps_in_the_order_asked(make_arch):
    op, arch = tiled_case(make_arch, "token_outer")
    ref = run_reference(op, arch)
    # per-step compute of token_outer: blocks (2, 2, 1 tokens) x 2 cycles, each block over both folds
    assert ref["compute"].tolist() == [4, 4, 4, 4, 2, 2] and ref["cycles"] == 40


@pytest.mark.parametrize("fmt, x0", [("ternary2", 1), ("ternary1.6", 1 + 3)])
@pytest.mark.parametrize("db", [False, True])
def test_resident_blocks_of_one_fold_load_nothing_after_the_first(make_arch, fmt, x0, db):
    """A resident input (10 words in 16) cut into blocks 2, 2, 1 by a 2-token output buffer, one
    fold (N = PE = 2): only the first step loads (the fold's 2 * 8 * 2 / 8 = 4 bytes, or 3.2 at
    1.6 bits, + 3 decoder cycles); the others have nothing to load and start at once, with or
    without double buffering. mode none, SIMD 4: C = 4, 4, 2; L = 10, fill 4; the 10 output
    bytes spill the 4-byte output buffer: ceil(10 / 4) = 3."""
    mask = np.ones((5, 8), bool)
    w = np.ones((2, 8), np.int8)
    arch = arch_v2(make_arch, banks=4, pe=2, simd=4, mode="none", act_kb=64 / 1024, out_kb=31.5 / 8192, bw=1.0,
                   db=db, fmt=fmt, decode=3)
    fast, ref = check_equal(op_of(mask, w), arch, np.random.default_rng(1))
    assert (fast.token_blocks, fast.act_resident, fast.loop_order) == (3, True, "fold_outer")
    assert fast.cycles == ref["cycles"] == 10 + x0 + 4 + 4 + 2 + 4 + 3
