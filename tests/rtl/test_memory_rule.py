"""The simulator's block rule (sim/buffers.py, docs/engine.md section 7) against yosys.

yosys 0.70 `synth_xilinx -family xcup` maps the tile's weight buffer (rtl/weight_buffer.v,
the module rtl/ternary_tile.v instantiates) and the test counts the RAM cells it built; the
simulator's `weights` buffer for the same design point (PE, SIMD, K_max = K, banks, ports,
halves) must charge exactly those LUTRAM LUT sites and BRAM18/BRAM36 blocks, cell type by
cell type. Nothing in sim was fitted to these points: the rule is yosys' memory_libmap cost
model read from its source, so every point here is held out.

The points cover each way the rule and the former rule (`d <= 64` LUTRAM at 1 LUT per bit
per read port, else the cheapest BRAM) disagreed:
  - 2 x 4, K 64, B 4, P 1: 16 x 4-bit memories, 64 bits: the former rule said registers,
    yosys builds one RAM32M16 (8 LUTs) each;
  - 4 x 8, K 256, B 4, P 2: 64 x 8 bits, two read ports: the former rule 2 x 8 LUTs
    (RAM64X1D per bit = 16), yosys packs both ports into the dual-port LUTRAM option of 6
    address bits: 8 RAM64X1D = 16 LUTs -- the same count, the same cells (the rule's own
    2 LUTs per bit of a RAM64X1D holds);
  - 2 x 4, K 512, B 2, P 1, H 2: 256 x 4 bits: the former rule BRAM18, yosys 4 RAM64M8 each;
  - 2 x 4, K 1024, B 2, P 2: 512 x 4 bits, two ports: one RAMB18 true-dual-port each;
  - 32 x 2, K 256, B 2, P 1: 128 x 64 bits: one RAMB36 (512 x 72 simple dual port) each.
"""

import pytest

from sim.arch import arch_from_dict
from sim.buffers import buffer_by_name
from tatvpr_hw.lower.rtl import flow as rtl

# (PE, SIMD, K, B, P, H) and the cells yosys is expected to build, worked by hand from the
# memory_libmap cost model in docs/engine.md section 7 (see the module docstring): memories
# = H * R * B with R = SIMD / (B * P).
POINTS = [
    ((2, 4, 64, 4, 1, 1), {"RAM32M16": 4}),           # 4 memories x 1
    ((4, 8, 256, 4, 2, 1), {"RAM64X1D": 32}),         # 4 memories x 8 bits
    ((2, 4, 512, 2, 1, 2), {"RAM64M8": 32}),          # 2 halves x 2 replicas x 2 banks x 4
    ((2, 4, 1024, 2, 2, 1), {"RAMB18E2": 2}),         # 2 memories x 1
    ((32, 2, 256, 2, 1, 1), {"RAMB36E2": 2}),         # 2 memories x 1
]


def _sim_weights(pe, simd, k, banks, ports, halves) -> dict:
    spec = {"name": "memory-rule", "board": "kv260", "double_buffering": halves == 2,
            "compute": {"pe": pe, "simd": simd, "skip_mode": "act", "gather": {"banks": banks, "ports": ports}},
            "buffers": {"weights_kb": 4096, "k_max": k}}
    w = buffer_by_name(arch_from_dict(spec, "test-arch"))["weights"]
    assert w["depth"] == -(-k // banks) and w["width_bits"] == 2 * pe and w["ports"] == ports
    return w


def _yosys_cells(r: dict) -> dict:
    cells = dict(r["lutram_cells"])
    for kind in ("RAMB18E2", "RAMB36E2"):
        n = sum(v for c, v in r["cells"].items() if c.startswith(kind[:6]))
        if n:
            cells[kind] = n
    return cells


@pytest.mark.parametrize("point,cells", POINTS, ids=[":".join(map(str, p)) for p, _ in POINTS])
def test_sim_charges_what_yosys_builds_for_the_tile_buffer(tmp_path, point, cells):
    pe, simd, k, banks, ports, halves = point
    y = rtl.synth_xilinx(pe, simd, "xcup", "buffer", True, tmp_path, k=k, banks=banks, ports=ports, halves=halves)
    got = _yosys_cells(y)
    assert got == cells, f"yosys built {got}"                   # the hand expectation holds in yosys
    w = _sim_weights(*point)
    # the simulator: LUTRAM LUT sites, BRAM18 and BRAM36 blocks, and the cell type, as built
    assert w["lut"] == y["lutram_luts"], (w, y["lutram_cells"])
    assert w["bram18"] == y["bram18"] and w["bram36"] - w["bram18"] / 2 == y["bram36"], w
    assert w["ff"] == 0 and y["uram"] == 0
    rule = rtl.tile_block_rule(y)
    assert {rule["primitive"]: rule["cells"]} == cells
    assert rule["lut"] == w["lut"]
