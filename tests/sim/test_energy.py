"""Energy model: every component worked by hand from table values, buffers priced per block type
(docs/engine.md section 7), the block energies derived from each table's own SRAM curve, fit."""

import math

import numpy as np
import pytest
import yaml

from sim.arch import ENERGY_DIR, arch_from_dict, load_arch, with_overrides
from sim.energy import COMPONENTS, energy_pj
from sim.engine import ternary_layer
from sim.packing import pack_ternary2
from sim.simulator import simulate
from sim.trace import VERSION, TernaryLinearOp, Trace, synthetic_vit_trace

# Hand-written action counts (every key the energy model prices); act_gather bits only where
# the machine has per-PE token copies (weight/both).
COUNTS = dict(pairs_processed=1000, pairs_skipped=300, acc_updates=50, index_decodes=70, intersect_compares=90,
              base3_decodes=11, requant_mults=40, weight_buf_read_bits=2000, weight_buf_write_bits=500,
              act_buf_read_bits=800, act_buf_write_bits=256, out_buf_write_bits=320,
              int8_weight_buf_read_bits=64, int8_weight_buf_write_bits=128, dram_weight_bits=1000,
              dram_act_bits=2000, dram_int8_weight_bits=300, dram_spill_bits=400, dsp_macs=500)
GATHER = dict(act_gather_read_bits=4096, act_gather_write_bits=1024)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    """The Horowitz table with distinct block energies and a write factor of 2 (so a wrong block
    type or a write priced as a read changes the number)."""
    data = yaml.safe_load((ENERGY_DIR / "horowitz45nm.yaml").read_text())
    for kind, pj in dict(registers=0.001, lutram=0.002, bram18=0.03, bram36=0.04, uram=0.5).items():
        data["block_pj_per_bit"][kind]["value"] = pj
    data["sram_write_factor"]["value"] = 2.0
    p = tmp_path_factory.mktemp("e") / "distinct.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _point(mode, fmt, table):
    # PE 8 x SIMD 8, banks 2 (R = 4), weights 2 KiB double-buffered: K_max = 8192*2/(2*8*2) = 512, I = 9.
    # Blocks (sim.buffers rule = yosys' memory_libmap costs, docs/engine.md section 7, by hand):
    #   none/act weights: 2*4*2 = 16 memories of 16 bits x 256 -> BRAM18 1Kx18 (129 + 2 = 131 <
    #     LUTRAM 64x7, 4 segments: 16*4*16/7 + 0.5*3*16 + 0.5*4 + 2 = 174.3)
    #   weight/both weights: 2*8 = 16 memories of 8*(2+9) = 88 bits x 64 -> LUTRAM 64x7 (203 < BRAM36 2 x 257)
    #   weight/both act_gather: 2*8*4*2 = 128 memories of 8 bits x 256 -> LUTRAM 64x7
    #     (16*4*8/7 + 0.5*3*8 + 0.5*4 + 2 = 89.1 < BRAM18 131)
    #   activations 4 KiB: 64 bits x 512 (none, weight) or 136 x 241 (act, both) -> BRAM36 512x72
    #     (259 / 2 x 257 + 2; d < 2048 so no URAM)
    #   outputs 16 KiB: 64 bits x 2048 -> URAM (preferred by default, d >= 2048): 1
    #   int8_weights: cols 2 -> 16 bits x 4 -> LUTRAM 32x14 (16*16/14 + 2 = 20.3 < 64 flip-flops)
    spec = {"name": "e", "energy_table": str(table), "clock_mhz": 250, "static_power_w": 0.5,
            "compute": {"pe": 8, "simd": 8, "skip_mode": mode, "weight_format": fmt, "gather": {"banks": 2}},
            "int8_unit": {"rows": 2, "cols": 2},
            "buffers": {"weights_kb": 2, "activations_kb": 4, "outputs_kb": 16, "int8_weights_kb": 8 / 1024}}
    return arch_from_dict(spec, "energy-test")


@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
@pytest.mark.parametrize("mode", ["none", "act", "weight", "both"])
def test_every_component_by_hand(table_path, mode, fmt):
    arch = _point(mode, fmt, table_path)
    gathered_w = mode in ("none", "act")
    counts = dict(COUNTS, **({} if gathered_w else GATHER))
    e = energy_pj(counts, arch, 1000)
    want = {
        "mac_array": 1000 * 0.03 + 50 * 0.1,                           # add8, add32
        "skip_logic": 300 * 0.01 + 70 * 0.03 + 90 * 0.0375,            # skip, index decode, compare
        "weight_decode": 11 * 0.3,                                     # base3 decodes
        "requant": 40 * 3.1,                                           # mult32
        # read + 2 x write bits, x BRAM18 0.03 (none/act) or LUTRAM 0.002 (weight/both)
        "weight_buffer": (2000 + 2 * 500) * (0.03 if gathered_w else 0.002),
        "act_gather": 0.0 if gathered_w else (4096 + 2 * 1024) * 0.002,  # LUTRAM
        "act_buffer": (800 + 2 * 256) * 0.04,                          # BRAM36
        "out_buffer": 2 * 320 * 0.5,                                   # URAM, writes only
        "int8_weight_buffer": (64 + 2 * 128) * 0.002,                  # LUTRAM
        "dram": (1000 + 2000 + 300 + 400) * 20.3,                      # every DRAM bit
        "int8_unit": 500 * 0.3,
        "vector_unit": 0.0,
        "static": 0.5 * 1000 / 250e6 * 1e12,                           # W x s in pJ
    }
    assert set(e) == set(COMPONENTS) == set(want)
    for k, v in want.items():
        assert e[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_gather_bits_without_a_gather_buffer_are_an_error(table_path):
    with pytest.raises(ValueError, match="act_gather"):
        energy_pj(dict(COUNTS, **GATHER), _point("act", "ternary2", table_path), 10)


@pytest.mark.parametrize("table,pj", [("horowitz45nm", (10, 20, 100)), ("ultrascale_plus", (22.4, 44.8, 224.0))])
def test_block_energies_are_the_tables_own_curve(table, pj):
    """BRAM18 (2.25 KB) and BRAM36 (4.5 KB) extrapolate the curve's first segment (log-log slope
    log(p32/p8)/log(4) = 0.5), URAM (36 KB) interpolates 32 KB -> 1 MB; LUTRAM / registers are
    one LUT bit-slice of an 8-bit add (add8 / 8). Per bit = per 64 bits / 64."""
    p8, p32, p1m = pj
    b = with_overrides(load_arch("kv260"), {"energy_table": table}).energy
    slope = math.log(p32 / p8) / math.log(4)
    assert slope == pytest.approx(0.5)
    assert b.block_pj_per_bit["bram36"].value == pytest.approx(p8 * 0.75 / 64, rel=1e-3)   # (4.5/8)^0.5 = 0.75
    assert b.block_pj_per_bit["bram18"].value == pytest.approx(p8 * math.sqrt(2.25 / 8) / 64, rel=1e-3)
    u = p32 * (36 / 32) ** (math.log(p1m / p32) / math.log(1024 / 32)) / 64
    assert b.block_pj_per_bit["uram"].value == pytest.approx(u, rel=1e-3)
    for kind in ("lutram", "registers"):
        assert b.block_pj_per_bit[kind].value == pytest.approx(b.add8_pj.value / 8)
    # the point: a 36 KB block costs ~4x less per bit than the old one-SRAM-of-1-MB price
    assert (p1m / 64) / b.block_pj_per_bit["uram"].value > 4


@pytest.mark.parametrize("fmt", ["ternary2", "ternary1.6"])
@pytest.mark.parametrize("mode", ["none", "act", "weight", "both"])
def test_engine_counts_priced_by_block(make_arch, mode, fmt):
    """A 2-token layer on the real Horowitz table: each buffer's bits x its block's pJ/bit.
    PE 2 x SIMD 2, weights 1 KiB: K_max = 8192/(2*2*2) = 1024, I = 10. Blocks by hand:
    weights none/act 4 memories of 4 x 512 -> LUTRAM 64x7 (8 segments: 16*8*4/7 + 0.5*7*4 + 0.5*8
    + 2 = 93.1 < BRAM18 131); weight/both 4 of 2*12 = 24 x 512 -> BRAM18 512x36 (131 < LUTRAM 438.9
    + ...); act_gather 8 of 8 x 512 -> BRAM18 2Kx9 (131 < LUTRAM 146.3 + 28 + 4 + 2 = 180.3);
    activations / outputs 256 KiB -> URAM (depth >= 2048); so buffers cost 0.00375 (LUTRAM),
    0.08286 (BRAM18) and 0.3301 (URAM) pJ/bit."""
    w = np.array([[1, 0, -1, 1], [0, 0, 1, -1], [1, 1, 1, 1]], np.int8)
    mask = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], bool)
    op = TernaryLinearOp("l", 2, 4, 3, pack_ternary2(w), mask)
    arch = make_arch(pe=2, simd=2, mode=mode, fmt=fmt, w_kb=1, bw=1.0, clock=100, latency_ns=0)
    t = ternary_layer(op, arch)
    c = t.counts
    e = energy_pj(c, arch, t.cycles)
    g = lambda k: c.get(k, 0)  # noqa: E731
    w_pj = 0.00375 if mode in ("none", "act") else 0.08286
    assert e["weight_buffer"] == pytest.approx((g("weight_buf_read_bits") + g("weight_buf_write_bits")) * w_pj)
    assert e["act_gather"] == pytest.approx((g("act_gather_read_bits") + g("act_gather_write_bits")) * 0.08286)
    assert (e["act_gather"] > 0) == (mode in ("weight", "both"))
    assert e["act_buffer"] == pytest.approx((g("act_buf_read_bits") + g("act_buf_write_bits")) * 0.3301)
    assert e["out_buffer"] == pytest.approx(g("out_buf_write_bits") * 0.3301)
    assert g("out_buf_write_bits") == 2 * 3 * 8  # M x N int8 outputs
    assert e["weight_decode"] == pytest.approx(g("base3_decodes") * 0.3)
    assert (g("base3_decodes") > 0) == (fmt == "ternary1.6")
    dram = g("dram_weight_bits") + g("dram_act_bits") + g("dram_int8_weight_bits") + g("dram_spill_bits")
    assert e["dram"] == pytest.approx(dram * 20.3) and dram > 0
    assert e["requant"] == pytest.approx(6 * 3.1)  # one requant per output
    assert e["static"] == pytest.approx(0.5 * t.cycles / 100e6 * 1e12)


def test_every_energy_entry_has_a_source():
    for path in ENERGY_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        for key, val in data.items():
            if isinstance(val, dict) and "value" in val:
                assert len(val["source"]) > 10, (path, key)
        for kind, val in data["block_pj_per_bit"].items():
            assert len(val["source"]) > 20, (path, kind)


def test_resources_and_fit():
    kv = simulate(load_arch("kv260"), synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0))
    res = kv.resources
    assert res["fits"] and not res["over"] and res["why"] == []
    assert res["available"]["dsp"] == 1248 and res["available"]["lut"] == 117120
    assert kv.summary["buffers"] == res["buffers"] and "wall-plug" in kv.summary["power_scope"]
    big = with_overrides(load_arch("kv260"), {"compute.pe": 256, "compute.simd": 64})
    r2 = simulate(big, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0)).resources
    assert not r2["fits"] and "lut" in r2["over"]
    assert r2["used"]["lut"] > res["used"]["lut"]
    # URAM preferred on a board without URAM: the buffer maps to BRAM instead (rule 3 needs URAM)
    pz = with_overrides(load_arch("pynq_z2"), {"buffers.activations_memory": "uram"})
    r3 = simulate(pz, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, seed=0)).resources
    assert r3["used"]["uram"] == 0 and r3["utilisation"]["uram"] == 0.0
    act = next(b for b in r3["buffers"] if b["name"] == "activations")
    assert act["block_type"] in ("bram18", "bram36")


def test_sparsity_lowers_energy_on_kv260():
    arch = load_arch("kv260")
    e = [simulate(arch, synthetic_vit_trace(depth=1, dim=96, tokens=17, heads=3, sparsity=s, seed=0))["energy_mj"]
         for s in (0.0, 0.3, 0.6)]
    assert e[0] > e[1] > e[2]


def test_one_op_trace(make_arch):
    op = TernaryLinearOp("x", 1, 4, 1, pack_ternary2(np.zeros((1, 4), np.int8)), np.zeros((1, 4), bool))
    r = simulate(make_arch(), Trace(VERSION, {}, [op]))
    assert r["cycles"] > 0 and r["energy_mj"] > 0
