"""The HTML report: ML results, pluggable sections (present, absent, generic, broken), config."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import tatvpr_hw.report as report
from tatvpr_hw.cli import main
from tatvpr_hw.errors import UserError
from tatvpr_hw.evaluation import FIG_2A, FIG_2B, plot_figures

RECORDS = [
    {"model": "teacher", "format": "fp32", "sparsity": 0.0, "recall@1": 81.25, "recall@5": 93.0,
     "recall@10": 97.0, "gmacs": 0.3, "memory_mb": 22.1},
    {"model": "teacher_fp16", "format": "fp16", "sparsity": 0.0, "recall@1": 81.0, "recall@5": 93.0,
     "recall@10": 97.0, "gmacs": 0.3, "memory_mb": 11.05},
    {"model": "teacher_int8", "format": "int8", "sparsity": 0.0, "recall@1": 80.0, "recall@5": 92.0,
     "recall@10": 96.0, "gmacs": 0.3, "memory_mb": 5.6},
    {"model": "student", "format": "ternary2", "sparsity": 0.0, "recall@1": 78.5, "recall@5": 90.0,
     "recall@10": 95.0, "gmacs": 0.3, "memory_mb": 1.9},
    {"model": "student", "format": "ternary2", "sparsity": 0.4, "recall@1": 77.75, "recall@5": 90.0,
     "recall@10": 95.0, "gmacs": 0.18, "memory_mb": 1.9},
]


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(RECORDS))
    (d / "config.json").write_text(json.dumps({"name": "tiny", "seed": 0, "model": {"backbone": "vit_tiny"}}))
    plot_figures(RECORDS, d)
    return d


@pytest.fixture
def templates(tmp_path, monkeypatch):
    """A private copy of the templates with one section template of our own."""
    t = tmp_path / "templates"
    shutil.copytree(report.TEMPLATES, t)
    for p in t.glob("section_*.html.j2"):
        if p.name not in ("section_ml.html.j2", "section_generic.html.j2"):
            p.unlink()
    (t / "section_sim.html.j2").write_text(
        "<h2>Simulator</h2><p id='cyc'>cycles={{ data.cycles }}</p>"
        "{% for f in figures %}<img src='{{ f }}'>{% endfor %}")
    (t / "section_hls.html.j2").write_text("<h2>HLS</h2>{{ 1 // data.zero }}")
    monkeypatch.setattr(report, "TEMPLATES", t)
    return t


def _img_srcs(html):
    return re.findall(r"<img src=['\"]([^'\"]+)['\"]", html)


def test_ml_only(run_dir, templates):
    html = report.render_report(run_dir).read_text()
    assert "81.25" in html and "77.75" in html
    assert "40.0 %" in html                                  # MACs saved at s = 0.4 vs s = 0
    assert "-0.75" in html                                   # R@1 delta at s = 0.4
    assert _img_srcs(html) == [FIG_2A, FIG_2B]               # relative paths, inside the run folder
    assert "backbone: vit_tiny" in html                      # config as YAML
    for name in ("sim", "export", "hls", "rtl"):
        assert f'<section id="{name}">' not in html


def test_optional_sections(run_dir, templates):
    (run_dir / "sim.json").write_text(json.dumps({"cycles": 123456}))
    (run_dir / "sim_latency.png").write_bytes((run_dir / FIG_2A).read_bytes())
    (run_dir / "sim").mkdir()
    (run_dir / "sim" / "breakdown.png").write_bytes((run_dir / FIG_2A).read_bytes())
    (run_dir / "rtl.json").write_text(json.dumps([{"test": "tile_4x4", "cycles": 17, "match": True}]))
    (run_dir / "export.json").write_text("{not json")
    (run_dir / "hls.json").write_text(json.dumps({"zero": 0}))
    html = report.render_report(run_dir).read_text()
    assert "cycles=123456" in html
    assert "sim_latency.png" in _img_srcs(html) and "sim/breakdown.png" in _img_srcs(html)
    assert "tile_4x4" in html and "no dedicated template" in html            # rtl: generic table
    assert re.search(r"could not be rendered from <code>export.json</code>", html)
    assert re.search(r"could not be rendered from <code>hls.json</code>: ZeroDivisionError", html)
    assert "81.25" in html                                                    # the rest still renders
    order = [html.index(f'<section id="{n}">') for n in ("ml", "sim", "export", "hls", "rtl")]
    assert order == sorted(order)


def test_empty_run_folder(tmp_path, templates):
    d = tmp_path / "empty"
    d.mkdir()
    html = report.render_report(d).read_text()
    assert "No <code>metrics.json</code>" in html


def test_missing_run_folder(tmp_path):
    with pytest.raises(UserError, match="run folder not found"):
        report.render_report(tmp_path / "absent")


def test_html_escapes_data(run_dir, templates):
    (run_dir / "rtl.json").write_text(json.dumps({"note": "<script>alert(1)</script>"}))
    html = report.render_report(run_dir).read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_cli_report(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "index.html").is_file()
    assert main(["report", str(run_dir / "nope")]) == 2
    assert "error: run folder not found" in capsys.readouterr().err


def test_cli_eval_bad_input(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\n")
    assert main(["eval", "--config", str(cfg), "--checkpoint", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                 "--sparsity", "0,1.5"]) == 2
    assert "--sparsity must be a comma-separated list" in capsys.readouterr().err


GRAN_RECORDS = RECORDS[:3] + [
    {"model": "student", "format": "ternary2", "granularity": g, "sparsity": s, "recall@1": r1, "recall@5": 90.0,
     "recall@10": 95.0, "gmacs": gm, "memory_mb": 1.9, "sim_latency_ms": lat, "sim_energy_mj": 2 * lat}
    for g, s, r1, gm, lat in (("token", 0.0, 78.5, 0.3, 0.9), ("token", 0.4, 77.75, 0.18, 0.7),
                              ("bank", 0.0, 78.5, 0.3, 0.9), ("bank", 0.4, 76.25, 0.2, 0.6125),
                              ("tensor", 0.0, 78.5, 0.3, 0.9), ("tensor", 0.4, 75.0, 0.18, 0.8))]


def test_granularity_rows_and_latency_figure(tmp_path, templates):
    from tatvpr_hw.evaluation import FIG_LATENCY

    d = tmp_path / "gran"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(GRAN_RECORDS))
    (d / "eval.json").write_text(json.dumps({
        "query_images": 40, "database_images": 40, "eval_root": "e", "positive_radius_m": 25.0,
        "chance_recall@1": 2.5, "pixel_baseline": {"recall@1": 70.0}, "teacher_img_size": 98,
        "student_img_size": 98, "sim": {"arch_name": "kv260-test-arch", "pe": 32, "simd": 32,
                                                     "banks": 32, "skip_mode": "act", "clock_mhz": 250,
                                                     "trained_granularity": "token"}}))
    paths = plot_figures(GRAN_RECORDS, d, "kv260-test-arch")
    assert d / FIG_LATENCY in paths and (d / FIG_LATENCY).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = report.render_report(d).read_text()
    assert _img_srcs(html) == [FIG_2A, FIG_2B, FIG_LATENCY]
    assert "R@1 vs simulated latency per query (KV260 default arch, SIMULATED)" in html
    assert "<th class=\"l\">granularity</th>" in html and "latency (ms, SIMULATED)" in html
    assert "kv260-test-arch" in html and "<strong>SIMULATED</strong>" in html
    assert html.count('<td class="l">bank</td>') == 2
    assert "0.6125" in html and "1.2250" in html                 # bank s = 0.4's latency and energy
    assert "33.3 %" in html                                      # bank s = 0.4: 1 - 0.2 / 0.3 vs its own s = 0
    assert "-2.25" in html                                       # bank R@1 change 76.25 - 78.5


def test_no_latency_figure_without_simulated_records(tmp_path):
    from tatvpr_hw.evaluation import FIG_LATENCY

    paths = plot_figures(RECORDS, tmp_path)
    assert tmp_path / FIG_LATENCY not in paths and not (tmp_path / FIG_LATENCY).exists()
