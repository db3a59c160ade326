"""``compute.mode: systolic``: per-layer compute cycles are SCALE-Sim v3's (sim.systolic), dense accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from sim import load_arch, simulate, synthetic_vit_trace, with_overrides
from sim.arch import ARCH_DIR, arch_from_dict
from sim.energy import COMPONENTS
from sim.engine import ternary_layer
from sim.errors import SimInputError
from sim.reference import reference_systolic
from sim.systolic import DATAFLOWS, systolic_cycles, systolic_folds, trace_systolic
from sim.trace import ternary_linear_op


def _arch(dataflow="os", pe=4, simd=8, db=True, act_kb=256, w_kb=64, bw=19.2, latency_ns=40, fmt="ternary2",
          out_kb=256):
    return arch_from_dict({
        "name": "sys", "board": "kv260", "energy_table": "horowitz45nm", "clock_mhz": 250,
        "double_buffering": db,
        "compute": {"mode": "systolic", "dataflow": dataflow, "pe": pe, "simd": simd, "skip_mode": "none",
                    "weight_format": fmt},
        "buffers": {"weights_kb": w_kb, "activations_kb": act_kb, "outputs_kb": out_kb},
        "dram": {"bandwidth_gb_per_s": bw, "efficiency": 1.0, "latency_ns": latency_ns},
    }, "sys-arch")


SHAPES = [(50, 192, 64), (13, 7, 33), (3, 5, 2), (197, 96, 40)]  # m, n, k


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_compute_cycles_are_systolic_cycles(dataflow, m, n, k):
    op = ternary_linear_op("l", m, k, n, sparsity=0.5, rng=np.random.default_rng(m * n + k))
    arch = _arch(dataflow)
    t = ternary_layer(op, arch)
    want = systolic_cycles(m, n, k, 4, 8, dataflow)
    assert t.compute_cycles == want
    assert t.fill_cycles == 0
    # the documented fixed terms: DRAM latency + the first fold's transfer; no stall at 76.8 B/cycle here
    sf = systolic_folds(m, n, k, 4, 8, dataflow)
    x0 = math.ceil(int(sf.weight_elems[0]) * 2 / 8 / arch.dram_bytes_per_cycle)
    assert x0 <= sf.cycles.min()
    assert t.cycles == arch.dram_latency_cycles + x0 + want
    # dense: every pair processed once, nothing skipped, whatever the sparsity
    assert t.counts["pairs_processed"] == m * n * k and t.counts["pairs_skipped"] == 0
    assert t.counts["index_decodes"] == 0 and t.counts["intersect_compares"] == 0


def test_no_double_buffering_adds_every_transfer():
    m, n, k = 40, 24, 64
    op = ternary_linear_op("l", m, k, n, sparsity=0.3, rng=np.random.default_rng(1))
    arch = _arch("ws", db=False, bw=0.5)
    t = ternary_layer(op, arch)
    sf = systolic_folds(m, n, k, 4, 8, "ws")
    bpc = arch.dram_bytes_per_cycle
    xfer = sum(math.ceil(int(w) * 2 / 8 / bpc) for w in sf.weight_elems)
    assert t.cycles == arch.dram_latency_cycles + xfer + systolic_cycles(m, n, k, 4, 8, "ws")


def test_dram_weight_traffic_per_dataflow():
    m, n, k = 50, 24, 40
    op = ternary_linear_op("l", m, k, n, rng=np.random.default_rng(2))
    got = {df: ternary_layer(op, _arch(df)).counts["dram_weight_bits"] for df in DATAFLOWS}
    assert got["ws"] == 2 * n * k                      # weights stay: fetched once
    assert got["os"] == 2 * n * k * math.ceil(m / 4)   # re-fetched for every token row tile
    assert got["is"] == 2 * n * k * math.ceil(m / 8)   # re-fetched for every token column tile


def test_non_resident_activations_are_streamed():
    op = ternary_linear_op("l", 64, 64, 16, rng=np.random.default_rng(3))
    small = ternary_layer(op, _arch("os", act_kb=1))  # 64*64 bytes = 4 KiB do not fit 1 KiB
    big = ternary_layer(op, _arch("os"))
    assert not small.act_resident and big.act_resident
    assert small.counts["dram_act_bits"] == 8 * 64 * 64 * math.ceil(16 / 8)  # A rows once per column fold
    assert big.counts["dram_act_bits"] == 0
    assert small.cycles >= big.cycles


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_output_spill_and_spilled_input(dataflow):
    # docs/engine.md section 4 holds in systolic mode too: M*N = 64*40 = 2560 output bytes over a
    # 2 KiB output buffer are written to DRAM at 19.2 GB/s / 250 MHz = 76.8 B/cycle: ceil(33.3) = 34
    op = ternary_linear_op("l", 64, 64, 40, rng=np.random.default_rng(4))
    fits = ternary_layer(op, _arch(dataflow))
    spills = ternary_layer(op, _arch(dataflow, out_kb=2))
    assert spills.spill_cycles == 34 and spills.output_spilled and not fits.output_spilled
    assert spills.cycles == fits.cycles + 34 and spills.compute_cycles == fits.compute_cycles
    assert spills.counts["dram_spill_bits"] == 2560 * 8 and fits.counts["dram_spill_bits"] == 0
    # an input the previous op spilled is streamed like one over the activation buffer
    from_dram = ternary_layer(op, _arch(dataflow), input_in_dram=True)
    over = ternary_layer(op, _arch(dataflow, act_kb=1))
    assert not from_dram.act_resident
    assert from_dram.cycles == over.cycles and from_dram.counts["dram_act_bits"] == over.counts["dram_act_bits"] > 0
    assert from_dram.counts["act_buf_write_bits"] == from_dram.counts["dram_act_bits"]


def test_shipped_systolic_arch_whole_trace():
    arch = load_arch(ARCH_DIR / "kv260_systolic.yaml")
    assert arch.spec.compute.mode == "systolic" and arch.spec.compute.skip_mode == "none"
    tr = synthetic_vit_trace(depth=1, dim=64, tokens=20, heads=2, sparsity=0.4, seed=0)
    r = simulate(arch, tr)
    lin = [op for op in tr.ops if op.type == "ternary_linear"]
    want = trace_systolic(lin, 32, 32, "os")["cycles"]
    got = sum(rec["compute_cycles"] for rec in r.layers if rec["type"] == "ternary_linear")
    assert got == want
    assert r["energy_mj"] == pytest.approx(sum(r["energy_by_component_mj"][c] for c in COMPONENTS), rel=1e-12)
    # sparsity does not change a dense array's cycles
    r0 = simulate(arch, synthetic_vit_trace(depth=1, dim=64, tokens=20, heads=2, sparsity=0.0, seed=0))
    assert r0["cycles_by_unit"]["ternary_array"] == r["cycles_by_unit"]["ternary_array"]


@pytest.mark.parametrize("overrides,needles", [
    ({"compute.skip_mode": "act"}, ["compute.skip_mode = 'act'", "systolic", "'none'"]),
    ({"compute.skip_mode": "both"}, ["compute.skip_mode = 'both'", "'none'"]),
    ({"compute.dataflow": "rs"}, ["compute.dataflow", "'rs'", "'os', 'ws' or 'is'"]),
    ({"compute.mode": "tpu"}, ["compute.mode", "'tpu'", "'mvau' or 'systolic'"]),
])
def test_invalid_combinations_rejected(overrides, needles):
    with pytest.raises(SimInputError) as ei:
        with_overrides(load_arch("kv260_systolic"), overrides)
    for s in needles:
        assert s in str(ei.value), str(ei.value)


def test_default_mode_is_mvau_and_kv260_rejects_systolic_with_act_skipping():
    assert load_arch("kv260").spec.compute.mode == "mvau"
    with pytest.raises(SimInputError, match="skip_mode = 'act'"):
        with_overrides(load_arch("kv260"), {"compute.mode": "systolic"})


def test_weight_buffer_too_small_for_a_fold_is_named():
    op = ternary_linear_op("big", 8, 4096, 8, rng=np.random.default_rng(0))
    with pytest.raises(SimInputError, match="systolic fold.*'big'"):
        ternary_layer(op, _arch("os", pe=4, simd=64, w_kb=1))


@settings(max_examples=60, deadline=None, database=None, derandomize=True, phases=(Phase.explicit, Phase.generate))
@given(m=st.integers(1, 12), n=st.integers(1, 12), k=st.integers(1, 12), pe=st.integers(1, 4), simd=st.integers(1, 4),
       dataflow=st.sampled_from(DATAFLOWS), db=st.booleans(), fmt=st.sampled_from(["ternary2", "ternary1.6"]),
       bw=st.sampled_from([0.05, 0.3, 2.0, 19.2]), small_act=st.booleans(), spill=st.booleans())
def test_engine_equals_literal_systolic_reference(m, n, k, pe, simd, dataflow, db, fmt, bw, small_act, spill):
    """Stalls included: at 0.05 GB/s (0.2 B/cycle) every fold waits for its slices."""
    act_kb = (m * k - 1) / 1024 if small_act and m * k > 1 else 256
    out_kb = (m * n - 1) / 1024 if spill and m * n > 1 else 256
    arch = _arch(dataflow, pe=pe, simd=simd, db=db, act_kb=act_kb, bw=bw, fmt=fmt, out_kb=out_kb)
    op = ternary_linear_op("l", m, k, n, rng=np.random.default_rng(m * 131 + n * 17 + k))
    t = ternary_layer(op, arch)
    c = arch.spec.compute
    ref = reference_systolic(m, n, k, rows=pe, cols=simd, dataflow=dataflow, weight_format=fmt,
                             dram_bytes_per_cycle=arch.dram_bytes_per_cycle, double_buffering=db,
                             decode_latency_cycles=c.decode_latency_cycles, latency_cycles=arch.dram_latency_cycles,
                             act_resident=m * k <= act_kb * 1024, out_buffer_bytes=math.floor(out_kb * 1024))
    assert t.cycles == ref["cycles"]
    assert (t.compute_cycles, t.spill_cycles) == (ref["compute"], ref["spill"])
    for key, val in ref["counts"].items():
        assert t.counts[key] == val, key


def test_systolic_reference_stalls_by_hand():
    # os, M = N = K = 4 on a 2 x 2 array: 4 folds of K + rows + cols - 2 = 6 ticks (the last 5);
    # each fold loads K x 2 = 8 weights = 2 bytes at 0.25 B/cycle: 8 cycles, longer than 6
    ref = reference_systolic(4, 4, 4, rows=2, cols=2, dataflow="os", dram_bytes_per_cycle=0.25, latency_cycles=3)
    # L + X0 + max(6, 8) * 3 + last fold 5 (no next transfer)
    assert ref["cycles"] == 3 + 8 + 3 * 8 + 5 and ref["compute"] == 6 * 3 + 5
