"""evaluate_run end to end on a tiny synthetic benchmark with stand-in models."""

from __future__ import annotations

import json

from brevitas_models.sparsity import get_sparsity, set_sparsity
from tatvpr_hw.config import parse_config
from tatvpr_hw.evaluation import FIG_2A, FIG_2B, FIG_LATENCY, evaluate_run


def test_records_files_and_figures(tmp_path, tiny_cfg, pixel_models, stub_ops, fake_sim):
    teacher, student = pixel_models
    set_sparsity(student, 0.3)
    out = tmp_path / "run"
    records = evaluate_run(tiny_cfg, teacher, student, None, out)

    grans = ["token", "bank", "tensor"]           # the config's default eval.granularities
    assert [(r["model"], r["format"], r["granularity"], r["sparsity"]) for r in records] == [
        ("teacher", "fp32", None, 0.0), ("teacher_fp16", "fp16", None, 0.0), ("teacher_int8", "int8", None, 0.0),
        *[("student", "ternary2", g, s) for g in grans for s in (0.0, 0.5)]]
    base_keys = {"model", "format", "granularity", "sparsity", "recall@1", "recall@5", "recall@10", "r1_ci95", "gmacs",
                 "memory_mb", "sim_latency_ms", "sim_energy_mj"}
    for r in records:
        if r["model"] == "student":
            assert set(r) == base_keys | {"sim_cycles", "sim_ternary_cycles", "sim_compute_cycles",
                                          "sim_conflict_cycles"}
            # each record carries its own (granularity, sparsity)'s simulation; s = 0 is one model
            want = fake_sim("token" if r["sparsity"] == 0.0 else r["granularity"], r["sparsity"])
            assert {k: r[k] for k in want} == want
        else:
            assert set(r) == base_keys and r["sim_latency_ms"] is None and r["sim_energy_mj"] is None
        assert 0.0 <= r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= 100.0
        lo, hi = r["r1_ci95"]  # the bootstrap interval holds the point estimate
        assert 0.0 <= lo <= r["recall@1"] <= hi <= 100.0
    # at difficulty 0 a query is its database view re-encoded: raw pixels find it
    assert records[0]["recall@1"] >= 90.0
    assert [r["memory_mb"] for r in records] == [4.0, 2.0, 1.0] + [0.3] * 6
    assert [r["gmacs"] for r in records] == [1.5, 1.5, 1.5] + [1.5, 0.75] * 3
    # s = 0 is simulated once (no top-k runs there), every other (granularity, s) once, on the first query
    sims = [c for c in stub_ops if c[0] == "sim"]
    assert sorted(sims) == sorted([("sim", (3, 42, 42), 0.0, "token")] +
                                  [("sim", (3, 42, 42), 0.5, g) for g in grans])

    # separate resolutions: the teacher saw 28 px, the student 42 px; ops counted on real queries
    assert teacher.seen_sizes == {28} and student.seen_sizes == {42}
    assert ("PixelVPR", (4, 3, 42, 42), 0.5) in stub_ops
    assert get_sparsity(student) == 0.3          # restored after the sweep
    assert student.sparsity.granularity == "token"

    assert json.loads((out / "metrics.json").read_text()) == records
    table = [ln for ln in (out / "metrics.md").read_text().splitlines() if ln.startswith("|")]
    assert len(table) == 2 + len(records)
    assert table[0].startswith("| model | weights | granularity | sparsity | R@1 (%)")
    assert "latency (ms, SIMULATED, stub-arch)" in table[0] and "energy (mJ, SIMULATED, stub-arch)" in table[0]
    assert table[-1].startswith("| student | ternary2 | tensor | 0.5 |") and "| 50.0 % |" in table[-1]
    assert table[-1].endswith(f"| {fake_sim('tensor', 0.5)['sim_latency_ms']:.4f} | "
                              f"{fake_sim('tensor', 0.5)['sim_energy_mj']:.4f} |")
    details = json.loads((out / "eval.json").read_text())
    assert details["database_images"] == 12 and details["query_images"] == 12
    assert details["chance_recall@1"] == pytest_approx(100 / 12)
    assert details["pixel_baseline"]["recall@1"] >= 90.0
    assert details["granularities"] == grans and details["sim"]["arch_name"] == "stub-arch"
    assert details["sim"]["simulated"] is True and details["sim"]["trained_granularity"] == "token"
    assert parse_config(json.loads((out / "config.json").read_text())).model.student_img_size == 42
    for fig in (FIG_2A, FIG_2B, FIG_LATENCY):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_granularity_changes_student_descriptors(tmp_path, tiny_cfg, pixel_models):
    from tatvpr_hw.data.vpr import VPREvalSet, eval_root
    from tatvpr_hw.evaluation import compute_descriptors

    _, student = pixel_models
    ev = VPREvalSet(eval_root(tiny_cfg.data), 42)
    d = compute_descriptors(student, ev.queries, batch_size=4, sparsities=[0.0, 0.6],
                            granularities=["token", "bank"])
    assert set(d) == {("token", 0.0), ("token", 0.6), ("bank", 0.0), ("bank", 0.6)}
    assert (d[("token", 0.0)] == d[("bank", 0.0)]).all()
    assert not (abs(d[("token", 0.6)] - d[("bank", 0.6)]) < 1e-6).all()
    assert student.sparsity.granularity == "token" and student.sparsity.sparsity == 0.0


def test_eval_granularities_option(tmp_path, tiny_cfg, pixel_models, stub_ops):
    teacher, student = pixel_models
    records = evaluate_run(tiny_cfg, teacher, student, [0.4], tmp_path / "r", granularities=["bank", "token"])
    assert [(r["granularity"], r["sparsity"]) for r in records if r["model"] == "student"] == [
        ("bank", 0.4), ("token", 0.4)]
    import pytest

    from tatvpr_hw.errors import UserError
    with pytest.raises(UserError, match="granularities"):
        evaluate_run(tiny_cfg, teacher, student, [0.4], tmp_path / "r2", granularities=["channel"])


def test_sparsity_changes_student_descriptors(tmp_path, tiny_cfg, pixel_models, stub_ops):
    teacher, student = pixel_models
    from tatvpr_hw.evaluation import compute_descriptors
    from tatvpr_hw.data.vpr import VPREvalSet, eval_root

    ev = VPREvalSet(eval_root(tiny_cfg.data), 42)
    d = compute_descriptors(student, ev.queries, batch_size=4, sparsities=[0.0, 0.9])
    assert d[0.0].shape == (12, 108)
    assert not (abs(d[0.0] - d[0.9]) < 1e-6).all()
    again = compute_descriptors(student, ev.queries, batch_size=7, sparsities=[0.9])
    assert abs(again[0.9] - d[0.9]).max() < 1e-5          # batch size does not matter


def pytest_approx(v):
    import pytest
    return pytest.approx(v, rel=1e-3)
