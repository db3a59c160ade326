"""evaluate_run end to end on a tiny synthetic benchmark with stand-in models."""

from __future__ import annotations

import json

from brevitas_models.sparsity import get_sparsity, set_sparsity
from tatvpr_hw.config import parse_config
from tatvpr_hw.evaluation import FIG_2A, FIG_2B, evaluate_run


def test_records_files_and_figures(tmp_path, tiny_cfg, pixel_models, stub_ops):
    teacher, student = pixel_models
    set_sparsity(student, 0.3)
    out = tmp_path / "run"
    records = evaluate_run(tiny_cfg, teacher, student, None, out)

    assert [(r["model"], r["format"], r["sparsity"]) for r in records] == [
        ("teacher", "fp32", 0.0), ("teacher_fp16", "fp16", 0.0), ("teacher_int8", "int8", 0.0),
        ("student", "ternary2", 0.0), ("student", "ternary2", 0.5)]
    for r in records:
        assert set(r) == {"model", "format", "sparsity", "recall@1", "recall@5", "recall@10", "gmacs", "memory_mb"}
        assert 0.0 <= r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= 100.0
    # at difficulty 0 a query is its database view re-encoded: raw pixels find it
    assert records[0]["recall@1"] >= 90.0
    assert [r["memory_mb"] for r in records] == [4.0, 2.0, 1.0, 0.3, 0.3]
    assert [r["gmacs"] for r in records] == [1.5, 1.5, 1.5, 1.5, 0.75]

    # separate resolutions: the teacher saw 28 px, the student 42 px; ops counted on real queries
    assert teacher.seen_sizes == {28} and student.seen_sizes == {42}
    assert ("PixelVPR", (4, 3, 42, 42), 0.5) in stub_ops
    assert get_sparsity(student) == 0.3          # restored after the sweep

    assert json.loads((out / "metrics.json").read_text()) == records
    table = (out / "metrics.md").read_text().splitlines()
    assert len(table) == 2 + len(records) and table[0].startswith("| model | weights | sparsity | R@1 (%)")
    assert table[-1].startswith("| student | ternary2 | 0.5 |") and "| 50.0 % |" in table[-1]
    details = json.loads((out / "eval.json").read_text())
    assert details["database_images"] == 12 and details["query_images"] == 12
    assert details["chance_recall@1"] == pytest_approx(100 / 12)
    assert details["pixel_baseline"]["recall@1"] >= 90.0
    assert parse_config(json.loads((out / "config.json").read_text())).model.student_img_size == 42
    for fig in (FIG_2A, FIG_2B):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
