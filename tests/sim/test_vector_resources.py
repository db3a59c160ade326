"""The vector unit's lanes in the resource estimate (sim/resources.py datapath_resources, docs/engine.md
section 7) use the measured per-lane cells of sim/boards/resource_model.yaml (rtl/vector_lane.v, yosys
synth_xilinx -family xcup: 1254 LUT, 787 FF, 6 DSP48E2 a lane; docs/rtl.md "The vector unit's lane").
Expected values worked by hand below, not by the code under test."""

from __future__ import annotations

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
    # 16 lanes on the fabric, none when the vector ops run on the host: 16 x 1254, 16 x 787, 16 x 6
    assert fabric["lut"] - host["lut"] == pytest.approx(20064, abs=1e-6)
    assert fabric["ff"] - host["ff"] == pytest.approx(12592, abs=1e-6)
    assert fabric["dsp"] - host["dsp"] == pytest.approx(96, abs=1e-6)
    # 64 lanes against 16: 48 more lanes
    wide = datapath_resources(arch(**{"vector_unit.lanes": 64}))
    assert [wide[k] - fabric[k] for k in ("lut", "ff", "dsp")] == pytest.approx([60192, 37776, 288], abs=1e-6)


def test_dsp_total_by_hand():
    # DSP = PE x 1 (requant) + ceil(32 x 32 / 2) (int8 unit) + 16 lanes x 6 = 64 + 512 + 96 = 672 of 1,248
    e = estimate_resources(arch())
    assert e["used"]["dsp"] == 672
    assert abs(e["utilisation"]["dsp"] - 672 / 1248) < 1e-12
