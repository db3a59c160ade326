"""The vector unit's lanes in the resource estimate (sim/resources.py datapath_resources, docs/engine.md
section 7) use the measured per-lane cells of sim/boards/resource_model.yaml (rtl/vector_lane.v, yosys
synth_xilinx -family xcup: 1254 LUT, 787 FF, 6 DSP48E2 a lane; docs/rtl.md "The vector unit's lane").
Expected values worked by hand below, not by the code under test."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.arch import load_arch, with_overrides
from sim.resources import datapath_resources, estimate_resources

# The lane as measured (tests/rtl/test_vector_lane.py checks the synthesis against these numbers).
LUT, FF, DSP = 1254, 787, 6

# A fixed arch: KV260, 64 x 64 `none`, int8 unit 32 x 32 (2 MACs a DSP), 16 lanes, top-k on the host (so
# the top-k unit, whose size also scales with the lanes, is not built and only the lanes differ).
FIXED = {"compute.pe": 64, "compute.simd": 64, "compute.skip_mode": "none", "int8_unit.rows": 32,
         "int8_unit.cols": 32, "vector_unit.lanes": 16, "schedule.topk": "host", "schedule.handoffs": "dram",
         "schedule.attention": "split"}


def arch(**extra):
    return with_overrides(load_arch("kv260"), {**FIXED, **extra})


def test_the_model_holds_the_measured_lane():
    r = load_arch("kv260").resource_model
    assert (r.lut_per_vector_lane.value, r.ff_per_vector_lane.value, r.dsp_per_vector_lane.value) == (LUT, FF, DSP)
    for f in (r.lut_per_vector_lane, r.ff_per_vector_lane, r.dsp_per_vector_lane):
        assert f.source.startswith("yosys 0.70") and "rtl/vector_lane.v" in f.source and "NOT included" in f.source


def test_lanes_are_charged_per_lane():
    fabric, host = datapath_resources(arch()), datapath_resources(arch(**{"vector_unit.mode": "host"}))
    # 16 lanes on the fabric, none when the vector ops run on the host: 16 x 1254, 16 x 787, 16 x 6, and the
    # unit's row steps once (rtl/row_steps.v: 704 + 16 x 80 LUT, 308 + 16 x 80 FF): 20064 + 1984, 12592 + 1588
    assert fabric["lut"] - host["lut"] == pytest.approx(22048, abs=1e-6)
    assert fabric["ff"] - host["ff"] == pytest.approx(14180, abs=1e-6)
    assert fabric["dsp"] - host["dsp"] == pytest.approx(96, abs=1e-6)
    # 64 lanes against 16: 48 more lanes, each with its reduction share: 48 x (1254 + 80), 48 x (787 + 80)
    wide = datapath_resources(arch(**{"vector_unit.lanes": 64}))
    assert [wide[k] - fabric[k] for k in ("lut", "ff", "dsp")] == pytest.approx([64032, 41616, 288], abs=1e-6)


def test_dsp_total_by_hand():
    # DSP = PE x 1 (requant) + ceil(32 x 32 / 2) (int8 unit) + 16 lanes x 6 = 64 + 512 + 96 = 672 of 1,248
    e = estimate_resources(arch())
    assert e["used"]["dsp"] == 672
    assert abs(e["utilisation"]["dsp"] - 672 / 1248) < 1e-12


# The row steps as measured (tests/rtl/test_row_steps.py fits yosys to these; docs/rtl.md "The vector unit's
# row steps"): the vector unit's (LUT 704 + 80 a lane, FF 308 + 80 a lane; with LayerNorm's mean and variance), the fused attention's softmax-only
# unit (LUT 64 + 32 a lane, FF 92 + 32 a lane), the int8 unit's row-max comparators (23 LUT, 32 FF a row).
ROW_STEPS = {"lut_row_steps_fixed": 704, "lut_per_row_step_lane": 80, "ff_row_steps_fixed": 308,
             "ff_per_row_step_lane": 80, "lut_softmax_row_steps_fixed": 64, "lut_per_softmax_row_step_lane": 32,
             "ff_softmax_row_steps_fixed": 92, "ff_per_softmax_row_step_lane": 32, "lut_per_row_max": 23,
             "ff_per_row_max": 32}


def test_the_model_holds_the_measured_row_steps():
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "sim" / "boards" / "resource_model.yaml").read_text())
    r = load_arch("kv260").resource_model
    for name, value in ROW_STEPS.items():
        assert raw[name]["value"] == value == getattr(r, name).value, name
        src = raw[name]["source"]
        assert src.startswith("yosys 0.70") and "rtl/row_steps.v" in src and "-family xcup" in src, name


def test_row_steps_charged_by_hand():
    """The fused attention (split -> fused, 12 attention lanes, int8 rows 32) adds 12 softmax-only lanes
    (637 / 408 / 5), its row steps (64 + 12 x 32 LUT, 92 + 12 x 32 FF) and 32 comparators (32 x 23 LUT,
    32 x 32 FF): LUT 7644 + 448 + 736 = 8828, FF 4896 + 476 + 1024 = 6396, DSP 60; the vector unit's own row
    steps are there in both (16 lanes)."""
    split = datapath_resources(arch())
    fused = datapath_resources(arch(**{"schedule.attention": "fused", "schedule.attention_lanes": 12,
                                       "schedule.overlap": "pipelined"}))
    assert [fused[k] - split[k] for k in ("lut", "ff", "dsp")] == pytest.approx([8828, 6396, 60], abs=1e-6)
    # int8 rows 16 against 32 (cols 64 keeps the DSP count: ceil(16 x 64 / 2) = 512): 16 fewer comparators
    f16 = datapath_resources(arch(**{"schedule.attention": "fused", "schedule.attention_lanes": 12,
                                     "schedule.overlap": "pipelined", "int8_unit.rows": 16, "int8_unit.cols": 64}))
    assert [fused[k] - f16[k] for k in ("lut", "ff", "dsp")] == pytest.approx([16 * 23, 16 * 32, 0], abs=1e-6)


def test_row_steps_on_the_host_vector_unit_are_not_charged():
    """vector_unit.mode host: no lanes, no row steps (the difference to the fabric unit is exactly the lanes
    and the unit's row steps at 8 lanes: 8 x 1334 + 704 LUT, 8 x 867 + 308 FF)."""
    fab = datapath_resources(arch(**{"vector_unit.lanes": 8}))
    host = datapath_resources(arch(**{"vector_unit.lanes": 8, "vector_unit.mode": "host"}))
    assert [fab[k] - host[k] for k in ("lut", "ff")] == pytest.approx([11376, 7244], abs=1e-6)
