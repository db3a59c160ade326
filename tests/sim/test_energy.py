"""Energy model: totals equal the sum of their breakdowns, hand-checked action costs, resources/fit."""

import math

import numpy as np
import pytest

from sim.arch import load_arch, with_overrides
from sim.energy import COMPONENTS, energy_pj
from sim.engine import ternary_layer
from sim.packing import pack_ternary2
from sim.simulator import simulate
from sim.trace import VERSION, TernaryLinearOp, Trace, synthetic_vit_trace


@pytest.fixture(scope="module")
def trace():
    return synthetic_vit_trace(depth=2, dim=48, tokens=9, heads=3, mlp_ratio=2, sparsity=0.4, seed=2)


@pytest.mark.parametrize("mode", ["none", "act", "weight", "both"])
@pytest.mark.parametrize("table", ["horowitz45nm", "ultrascale_plus"])
def test_totals_equal_sum_of_breakdowns(make_arch, trace, mode, table):
    r = simulate(make_arch(mode=mode, table=table, pe=8, simd=8), trace)
    s = r.summary
    assert s["energy_mj"] == pytest.approx(sum(s["energy_by_component_mj"].values()), rel=1e-12)
    assert s["energy_mj"] == pytest.approx(sum(s["energy_by_layer_mj"].values()), rel=1e-12)
    assert s["cycles"] == sum(s["cycles_by_unit"].values()) == sum(l["cycles"] for l in r.layers)
    assert set(s["energy_by_component_mj"]) == set(COMPONENTS)
    for layer in r.layers:
        assert layer["energy_pj_total"] == pytest.approx(sum(layer["energy_pj"].values()), rel=1e-12)
    assert s["latency_ms"] == pytest.approx(s["cycles"] / 250e3)
    assert s["queries_per_s"] == pytest.approx(1e3 / s["latency_ms"])
    # static energy is static power x latency
    assert s["energy_by_component_mj"]["static"] == pytest.approx(0.5 * s["latency_ms"], rel=1e-9)
    assert 0 < s["mac_utilisation"] <= 1


def test_hand_computed_layer(make_arch):
    """A 2-token, 4-channel layer in act mode on the Horowitz table, every component by hand."""
    w = np.array([[1, 0, -1, 1], [0, 0, 1, -1], [1, 1, 1, 1]], np.int8)
    mask = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], bool)
    op = TernaryLinearOp("l", 2, 4, 3, pack_ternary2(w), mask)
    arch = make_arch(pe=2, simd=2, mode="act", bw=1.0, clock=100, latency_ns=0)
    t = ternary_layer(op, arch)
    # tokens: 3 nonzeros -> 2 chunks, 0 nonzeros -> 1 cycle; 2 folds
    assert t.compute_cycles == 2 * 3
    c = t.counts
    assert c["pairs_processed"] == 3 * 3 and c["pairs_skipped"] == 2 * 3 * 4 - 9
    assert c["acc_updates"] == 3 * (2 + 1)
    e = energy_pj(c, arch, t.cycles)
    wkb = 64 / 2  # 64 KiB weight buffer, double-buffered: 32 KiB halves
    per_bit_w = arch.energy.sram_read_64b_pj.pj_per_64b(wkb) / 64
    assert per_bit_w == pytest.approx(20 / 64)  # 32 KiB point of the Horowitz curve
    assert e["mac_array"] == pytest.approx(9 * 0.03 + 9 * 0.1)
    assert e["skip_logic"] == pytest.approx(15 * 0.01 + 9 * 0.03)
    assert e["requant"] == pytest.approx(6 * 3.1)
    assert e["weight_buffer"] == pytest.approx((9 * 2 + 3 * 4 * 2) * per_bit_w)
    assert e["dram"] == pytest.approx(2 * 2 * 4 * 2 * 20.3)
    assert e["static"] == pytest.approx(0.5 * t.cycles / 100e6 * 1e12)


def test_sram_interpolation():
    tab = load_arch("kv260").energy
    h = load_arch("kv260")
    h = with_overrides(h, {"energy_table": "horowitz45nm"}).energy.sram_read_64b_pj
    assert h.pj_per_64b(8) == 10 and h.pj_per_64b(32) == 20 and h.pj_per_64b(1024) == 100
    assert h.pj_per_64b(1) == 10 and h.pj_per_64b(4096) == 100
    assert h.pj_per_64b(16) == pytest.approx(10 * math.sqrt(2))
    assert tab.name == "ultrascale_plus"


def test_every_energy_entry_has_a_source():
    import yaml
    from sim.arch import ENERGY_DIR
    for path in ENERGY_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for key, val in data.items():
            if isinstance(val, dict) and "value" in val:
                assert len(val["source"]) > 10, (path, key)


def test_resources_and_fit():
    kv = simulate(load_arch("kv260"), synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0))
    res = kv.resources
    assert res["fits"] and not res["over"]
    assert res["available"]["dsp"] == 1248 and res["available"]["lut"] == 117120
    big = with_overrides(load_arch("kv260"), {"compute.pe": 256, "compute.simd": 64})
    r2 = simulate(big, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0)).resources
    assert not r2["fits"] and "lut" in r2["over"]
    assert r2["used"]["lut"] > res["used"]["lut"]
    # URAM buffers on a board without URAM cannot fit
    pz = with_overrides(load_arch("pynq_z2"), {"buffers.activations_memory": "uram"})
    r3 = simulate(pz, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0)).resources
    assert not r3["fits"] and "uram" in r3["over"] and r3["utilisation"]["uram"] is None


def test_sparsity_lowers_energy_on_kv260():
    arch = load_arch("kv260")
    e = [simulate(arch, synthetic_vit_trace(depth=1, dim=96, tokens=17, heads=3, sparsity=s, seed=0))["energy_mj"]
         for s in (0.0, 0.3, 0.6)]
    assert e[0] > e[1] > e[2]


def test_one_op_trace(make_arch):
    op = TernaryLinearOp("x", 1, 4, 1, pack_ternary2(np.zeros((1, 4), np.int8)), np.zeros((1, 4), bool))
    r = simulate(make_arch(), Trace(VERSION, {}, [op]))
    assert r["cycles"] > 0 and r["energy_mj"] > 0
