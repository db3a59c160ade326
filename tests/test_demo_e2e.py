"""The front door end to end: `tatvpr demo` runs all its named steps on a small twin of
configs/tiny.yaml (the shipped teacher, a few training steps, 40 evaluation places), and the
report it writes is rendered in headless Chromium: every figure loads at full width, no console
error (issue 14 item 8: the demo's own report, not a hand-built one).

The twin changes only sizes (steps, places, the sparsity sweep), so every step's code path is the
demo's. About three minutes on 2 cores, most of it the export and RTL steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tatvpr_hw.cli import main

REPO = Path(__file__).resolve().parents[1]


def _twin_config(tmp: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    cfg["name"] = "tiny_e2e"
    cfg["model"]["teacher_checkpoint"] = str(REPO / cfg["model"]["teacher_checkpoint"])
    cfg["data"]["synthetic"].update(places=16, eval_places=40)
    for stage, steps in (("teacher", 2), ("distill", 4), ("finetune", 2)):
        cfg["train"][stage]["max_steps"] = steps
        cfg["train"][stage]["warmup_steps"] = 1
    cfg["eval"].update(sparsities=[0.0, 0.4], granularities=["token", "bank"], integer_sparsities=[0.4])
    path = tmp / "tiny_e2e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo_e2e")
    run_dir = tmp / "run"
    rc = main(["demo", "--config", str(_twin_config(tmp)), "--out", str(run_dir)])
    assert rc == 0
    return run_dir


def test_every_step_finishes_and_the_report_has_every_section(demo_run):
    from tatvpr_hw.demo import demo_steps

    state = json.loads((demo_run / "steps.json").read_text())
    names = [s.name for s in demo_steps()]
    assert len(names) >= 15
    assert sorted(state["steps"]) == sorted(names)
    html = (demo_run / "index.html").read_text()
    for section in ("ml", "sim", "dse", "paper", "export", "hls", "rtl", "query", "config"):
        assert f'<section id="{section}">' in html, section
    recs = json.loads((demo_run / "metrics.json").read_text())
    models = {r["model"] for r in recs}
    assert {"teacher", "student", "student_integer"} <= models
    query = json.loads((demo_run / "query.json").read_text())
    assert query["bit_exact"] is True
    paper = json.loads((demo_run / "paper.json").read_text())
    assert len(paper["points"]) >= 12 and paper["best_fitting"]["max_util"] <= 0.8


def test_the_demo_report_in_a_real_browser(demo_run, tmp_path, browser):
    pngs = sorted(p.relative_to(demo_run).as_posix() for p in demo_run.rglob("*.png"))
    assert len(pngs) >= 7
    probe, console = browser.load(demo_run / "index.html", tmp_path / "profile")
    assert probe["errors"] == [] and console == [], (probe["errors"], console)
    shown = {i["src"]: i for i in probe["images"]}
    assert set(shown) <= set(pngs) and len(shown) >= 7
    for img in shown.values():
        assert img["complete"] and img["natural_width"] == browser.FIG_WIDTH_PX, img
        assert img["shown_width"] == 1200 - 64, img
    assert probe["height_collapsed"] < probe["height_open"] / 4
