"""The demo's `paper` step summary: fastest fitting point against the 60 queries/s target, what binds."""

from __future__ import annotations

import math
from pathlib import Path

from tatvpr_hw.demo import PAPER_TARGET_QPS, paper_summary


def row(pe, qps, fits, lut, uram, overlap="pipelined", misfit=math.nan, skip="none", clock=400, handoffs="dram"):
    return {"schedule.handoffs": handoffs, "pe": pe, "simd": 64, "skip_mode": skip, "clock_mhz": clock, "overlap": overlap, "int8_rows": 32,
            "int8_cols": 32, "tile_tokens": 32, "queries_per_s": qps, "latency_ms": 1e3 / qps, "energy_mj": 1.0,
            "fits": fits, "misfit": misfit, "util_lut": lut, "util_uram": uram, "util_dsp": math.nan}


def test_fastest_fitting_point_and_what_binds():
    rows = [row(32, 34.5, True, 0.5, 0.76), row(64, 63.2, True, 0.762, 0.766), row(64, 33.1, True, 0.76, 0.5, "none"),
            row(128, 71.2, False, 1.37, 0.87, misfit="lut: 160,538 of 117,120")]
    s = paper_summary(rows, Path("kv260_query_demo.yaml"), 333)
    assert s["target_qps"] == PAPER_TARGET_QPS == 60.0
    b = s["best_fitting"]
    assert (b["pe"], b["queries_per_s"], b["binding"], b["max_util"]) == (64, 63.2, "uram", 0.766)
    assert s["met"] is True
    assert s["best_serial"]["queries_per_s"] == 33.1
    assert [p["pe"] for p in s["faster_not_fitting"]] == [128]
    assert s["faster_not_fitting"][0]["binding"] == "lut" and s["faster_not_fitting"][0]["misfit"].startswith("lut:")
    assert [p["queries_per_s"] for p in s["points"]] == [71.2, 63.2, 34.5, 33.1]   # fastest first
    assert all(p["misfit"] == "" for p in s["points"] if p["fits"])                 # NaN is not a reason


def test_target_not_met_and_nothing_fits():
    s = paper_summary([row(64, 59.9, True, 0.7, 0.7)], Path("x.yaml"), 333)
    assert s["met"] is False and s["best_fitting"]["queries_per_s"] == 59.9
    s = paper_summary([row(128, 71.0, False, 1.4, 0.9)], Path("x.yaml"), 333)
    assert s["met"] is False and s["best_fitting"] is None and len(s["faster_not_fitting"]) == 1


def test_what_the_ip_builds_is_act_or_none_under_its_clock_cap_through_ddr():
    rows = [row(64, 63.2, True, 0.7, 0.7, skip="weight"), row(32, 30.0, True, 0.5, 0.5, skip="act", clock=400),
            row(32, 27.0, True, 0.5, 0.5, skip="act", clock=333, handoffs="onchip"),
            row(32, 25.0, True, 0.5, 0.5, skip="act", clock=333), row(32, 20.0, True, 0.5, 0.5, clock=333)]
    s = paper_summary(rows, Path("x.yaml"), 333)
    assert s["best_fitting"]["queries_per_s"] == 63.2
    # act at <= 333 MHz with DDR hand-offs; not weight skipping, not 400 MHz, not on-chip hand-offs
    assert s["best_buildable"]["queries_per_s"] == 25.0
    assert [p["ip_builds"] for p in s["points"]] == [False, False, False, True, True]   # none builds too
    assert s["ip_skip_modes"] == ["act", "none"]
    assert {p["topk"] for p in s["points"]} == {"fabric"}        # the simulator's default when the sweep is silent
    assert paper_summary([{**rows[0], "schedule.topk": "host"}], Path("x.yaml"), 333)["points"][0]["topk"] == "host"
    assert {p["attention"] for p in s["points"]} == {"split"}    # the simulator's default: QK^T, softmax, P.V apart
    assert paper_summary([{**rows[0], "schedule.attention": "fused"}], Path("x.yaml"),
                         333)["points"][0]["attention"] == "fused"
    assert paper_summary(rows[:1], Path("x.yaml"), 333)["best_buildable"] is None
    no_column = {k: v for k, v in rows[3].items() if k != "schedule.handoffs"}   # the sim's default: on chip
    assert paper_summary([no_column], Path("x.yaml"), 333)["best_buildable"] is None


def test_invalid_and_refused_rows_are_counted_not_ranked():
    # a sweep's invalid combination (no numbers, its rule in `invalid`) and a point the simulator
    # refused (`error`) are not points of the table; the summary counts them
    nan_row = {k: math.nan for k in row(64, 1.0, True, 0.5, 0.5)}
    bad = {**nan_row, "pe": 64, "invalid": "schedule.attention = 'fused' needs schedule.overlap = 'pipelined'"}
    refused = {**nan_row, "pe": 128, "error": "trace has no ops", "invalid": math.nan}
    good = {**row(32, 30.0, True, 0.7, 0.5), "invalid": math.nan, "error": math.nan}
    s = paper_summary([bad, good, refused], Path("x.yaml"), 333)
    assert [p["pe"] for p in s["points"]] == [32]
    assert (s["invalid"], s["failed"]) == (1, 1)
    assert s["invalid_reasons"] == [bad["invalid"]]
    assert s["best_fitting"]["queries_per_s"] == 30.0
