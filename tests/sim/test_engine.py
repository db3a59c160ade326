"""Fast engine == literal cycle-stepping reference, closed forms, monotonicity under skipping."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def run_reference(op, arch, values=None):
    c = arch.spec.compute
    return reference_layer(op.act_mask, op.weights(), pe=c.pe, simd=c.simd, skip_mode=c.skip_mode,
                           weight_format=c.weight_format, dram_bytes_per_cycle=arch.dram_bytes_per_cycle,
                           double_buffering=arch.spec.double_buffering, tree_stages=c.adder_tree_stages,
                           decode_latency_cycles=c.decode_latency_cycles, latency_cycles=arch.dram_latency_cycles,
                           act_resident=op.m * op.k <= arch.spec.buffers.activations_kb * 1024,
                           act_values=values)


def check_equal(op, arch, rng):
    fast = ternary_layer(op, arch)
    values = rng.integers(-128, 128, size=(op.m, op.k))
    ref = run_reference(op, arch, values)
    assert fast.cycles == ref["cycles"]
    assert fast.compute_cycles == int(ref["compute"].sum())
    c = arch.spec.compute
    assert np.array_equal(fold_compute_cycles(op.act_mask, op.weights(), c.pe, c.simd, c.skip_mode), ref["compute"])
    for key, val in ref["counts"].items():
        assert fast.counts[key] == val, key
    # skipping only drops zero products: the accumulated outputs are the exact integer GEMM
    expect = np.where(op.act_mask, values, 0) @ op.weights().astype(np.int64).T
    assert np.array_equal(ref["y"], expect)


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 5), k=st.integers(1, 37), n=st.integers(1, 19), pe=st.integers(1, 8),
       simd=st.integers(1, 9), mode=st.sampled_from(MODES), fmt=st.sampled_from(FORMATS), db=st.booleans(),
       act_density=st.floats(0, 1), w_zero=st.floats(0, 1), small_act_buf=st.booleans(),
       bw=st.sampled_from([0.1, 0.37, 1.0, 4.0]), seed=st.integers(0, 2**16))
def test_fast_equals_reference_random(make_arch, m, k, n, pe, simd, mode, fmt, db, act_density, w_zero, small_act_buf, bw, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((m, k)) < act_density
    u = rng.random((n, k))
    w = np.where(u < w_zero, 0, np.where(rng.random((n, k)) < 0.5, 1, -1)).astype(np.int8)
    act_kb = (m * k - 1) / 1024 if small_act_buf and m * k > 1 else 64
    arch = make_arch(pe=pe, simd=simd, mode=mode, fmt=fmt, db=db, act_kb=max(act_kb, 1e-3), bw=bw)
    check_equal(make_op(mask, w), arch, rng)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_fast_equals_reference_on_trace_layers(make_arch, mode, fmt):
    tr = synthetic_vit_trace(depth=1, dim=24, tokens=6, heads=2, mlp_ratio=2, sparsity=0.5, weight_zero_frac=0.4,
                             natural_zero_frac=0.1, seed=3)
    arch = make_arch(pe=8, simd=8, mode=mode, fmt=fmt, bw=2.0)
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
    assert cyc["act"] < cyc["none"] and cyc["both"] <= cyc["act"]


@pytest.mark.parametrize("m,k,n,batch,rows,cols", [(5, 3, 7, 2, 2, 4), (197, 64, 197, 12, 16, 16), (1, 1, 1, 1, 8, 8)])
def test_dense_unit_cycles(m, k, n, batch, rows, cols):
    if m * n * k * batch > 2e5:
        assert dense_cycles(m, k, n, batch, rows, cols, 4) == batch * math.ceil(m / rows) * math.ceil(n / cols) * k + 4
    else:
        assert dense_cycles(m, k, n, batch, rows, cols, 4) == reference_dense(m, k, n, batch, rows, cols, 4)


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
