"""Fast engine == literal cycle-stepping reference, closed forms, monotonicity under skipping."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.arch import with_overrides
from sim.engine import (dense_cycles, fill_cycles, fold_compute_cycles, ternary_layer, vector_cycles)
from sim.packing import pack_ternary2
from sim.reference import reference_dense, reference_layer
from sim.simulator import simulate
from sim.trace import VERSION, TernaryLinearOp, Trace, synthetic_vit_trace

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
                           act_buffer_bytes=math.floor(b.activations_kb * 1024), input_in_dram=input_in_dram,
                           out_buffer_bytes=math.floor(b.outputs_kb * 1024), loop_order=b.loop_order,
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


def _gather(simd, bank_pick, port_pick):
    """A valid (banks, ports) for ``simd`` from two random picks."""
    divisors = [b for b in range(1, simd + 1) if simd % b == 0]
    banks = divisors[bank_pick % len(divisors)]
    ports = 2 if port_pick and (simd // banks) % 2 == 0 else 1
    return banks, ports


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
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
    # tiled: room for between h and (M - 1) tokens' worth of blocks; dram: the previous op spilled
    if tiling == "tiled" and h * k >= m * k:
        tiling = "dram"  # no buffer holds h tokens but not all M
    act_bytes = int(rng.integers(h * k, m * k)) if tiling == "tiled" else max(m, h) * k
    banks, ports = _gather(simd, bank_pick, port_pick)
    out_kb = (m * n - 1) / 1024 if spill and m * n > 1 else 64
    arch = arch_v2(make_arch, banks=banks, ports=ports, out_kb=out_kb, order=order, pe=pe, simd=simd, mode=mode,
                   fmt=fmt, db=db, act_kb=act_bytes / 1024, bw=bw)
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
