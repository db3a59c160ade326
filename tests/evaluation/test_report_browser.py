"""The HTML report in a real browser (headless Chromium, the Debian package): every figure loads and
is shown at the content width, no console error, sections collapse, long tables are cut to their
top rows with the rest behind ``<details>``.

The run folder is built here from a small real run: the evaluation figures of hand-written
records, ``sim.report.sim_demo`` on two synthetic traces and a real DSE sweep, so every plotting
route of the flow (evaluation, simulator, DSE) is rendered. Chromium must be installed: the test
fails (not skips) without it; ``make test`` installs it when run as root.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

import tatvpr_hw.report as report
from tatvpr_hw.evaluation import FIG_2A, FIG_2B, FIG_LATENCY, plot_figures

RECORDS = [
    {"model": "teacher", "format": "fp32", "sparsity": 0.0, "recall@1": 81.25, "recall@5": 93.0, "gmacs": 0.3,
     "memory_mb": 22.1},
    {"model": "teacher_fp16", "format": "fp16", "sparsity": 0.0, "recall@1": 81.0, "recall@5": 93.0, "gmacs": 0.3,
     "memory_mb": 11.05},
    {"model": "teacher_int8", "format": "int8", "sparsity": 0.0, "recall@1": 80.0, "recall@5": 92.0, "gmacs": 0.3,
     "memory_mb": 5.6},
] + [
    {"model": "student", "format": "ternary2", "granularity": g, "sparsity": s, "recall@1": r1, "recall@5": 90.0,
     "gmacs": gm, "memory_mb": 1.9, "sim_latency_ms": lat, "sim_energy_mj": 2 * lat}
    for g, s, r1, gm, lat in (("token", 0.0, 78.5, 0.3, 0.9), ("token", 0.4, 77.75, 0.18, 0.7),
                              ("bank", 0.0, 78.5, 0.3, 0.9), ("bank", 0.4, 76.25, 0.2, 0.6125))]

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder from a small real run: evaluation figures, simulator section, DSE sweep."""
    from sim import dse
    from sim.report import sim_demo
    from sim.trace import synthetic_vit_trace, write_trace

    root = tmp_path_factory.mktemp("browser_run")
    run_dir = root / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(RECORDS))
    (run_dir / "config.json").write_text(json.dumps({"name": "tiny", "seed": 0, "model": {"backbone": "vit_tiny"}}))
    plot_figures(RECORDS, run_dir, "kv260")
    traces = {}
    for s in (0.0, 0.5):
        p = root / f"trace_s{s}.npz"
        write_trace(p, synthetic_vit_trace(depth=1, dim=64, tokens=10, heads=2, sparsity=s, seed=1))
        traces[s] = p
    sim_demo(traces, run_dir, "kv260")
    sweep = root / "sweep.yaml"
    sweep.write_text(textwrap.dedent("""
        arch: kv260
        board: kv260
        axes: {pe: [4, 8, 16, 32], simd: [8, 16, 32, 64], skip_mode: [none, act, both],
               weight_format: [ternary2, ternary1.6]}
        """))
    dse.run_sweep(dse.load_sweep(sweep), list(traces.values()), run_dir / "dse", workers=1, progress=False)
    dse.write_dse_summary(run_dir / "dse", run_dir)
    index = report.render_report(run_dir)
    return run_dir, index


def test_every_figure_loads_full_width_without_console_errors(run, tmp_path, browser):
    run_dir, index = run
    pngs = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.png"))
    # the figures this run wrote: three evaluation figures, three simulator figures, the Pareto plot
    assert {FIG_2A, FIG_2B, FIG_LATENCY, "dse/pareto.png"} <= set(pngs)
    assert len([p for p in pngs if p.startswith("sim_")]) == 3
    assert {browser.png_width(run_dir / p) for p in pngs} == {browser.FIG_WIDTH_PX}    # one size for every figure

    probe, console = browser.load(index, tmp_path / "profile")
    assert probe["errors"] == [] and console == [], (probe["errors"], console)
    shown = {i["src"]: i for i in probe["images"]}
    assert sorted(shown) == pngs                                         # every figure is on the page
    for src, img in shown.items():
        assert img["complete"] and img["natural_width"] == browser.FIG_WIDTH_PX, img
    # at the content width (main is 1200 px minus 2 x 32 px padding in a 1400 px window), not ~300 px
    assert probe["main_width"] == 1200
    for src, img in shown.items():
        assert img["shown_width"] == 1200 - 64, img
    assert probe["height_collapsed"] < probe["height_open"] / 4         # "collapse all" folds every section


def test_the_probe_sees_a_missing_figure(run, tmp_path, browser):
    """The harness can fail: a figure deleted from a copy of the run is reported, with its error."""
    run_dir, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "dse" / "pareto.png").unlink()
    probe, _ = browser.load(copy / "index.html", tmp_path / "profile")
    broken = [i for i in probe["images"] if i["natural_width"] == 0]
    assert [i["src"] for i in broken] == ["dse/pareto.png"]
    assert any("dse/pareto.png" in e for e in probe["errors"]), probe["errors"]


def test_sections_collapse_and_long_tables_show_their_top_rows(run):
    run_dir, index = run
    html = index.read_text()
    for name in ("ml", "sim", "dse", "config"):
        sec = re.search(rf'<section id="{name}">\s*<details class="section"( open)?>\s*<summary><h2>(.*?)</h2>',
                        html, re.S)
        assert sec, name
        assert bool(sec.group(1)) == (name != "config")                   # the configuration starts folded
    pareto = json.loads((run_dir / "dse.json").read_text())["pareto"]
    assert len(pareto) > report.LONG_TABLE_ROWS                           # this sweep's front is long
    dse_html = html[html.index('<section id="dse">'):html.index('<section id="config">')]
    tables = re.findall(r"<table>(.*?)</table>", dse_html, re.S)
    rows = [re.findall(r"<tr>(.*?)</tr>", t, re.S) for t in tables]
    # the Pareto table: header + the top rows, then the same header + the rest inside <details>
    top, rest = rows[-2], rows[-1]
    assert top[0] == rest[0] and "<th>" in top[0]
    assert len(top) - 1 == report.TOP_ROWS and len(rest) - 1 == len(pareto) - report.TOP_ROWS
    assert f"show the other {len(pareto) - report.TOP_ROWS} of {len(pareto)} rows" in dse_html
    assert dse_html.index("<details class=\"more-rows\">") < dse_html.rindex("<table>")


def test_collapse_long_tables_keeps_every_row_once():
    head = "<tr><th>k</th><th>v</th></tr>"
    body = [f"<tr><td>r{i}</td><td>{i * i}</td></tr>" for i in range(40)]
    out = report.collapse_long_tables("<p>x</p><table>" + head + "\n".join(body) + "</table><p>y</p>", top=10,
                                      limit=15)
    assert out.count(head) == 2 and out.count("<table>") == 2
    for i, r in enumerate(body):
        assert out.count(r) == 1
        assert (out.index(r) < out.index("<details")) == (i < 10)
    assert "show the other 30 of 40 rows" in out and out.startswith("<p>x</p>") and out.endswith("<p>y</p>")
    short = "<table>" + head + "".join(body[:15]) + "</table>"
    assert report.collapse_long_tables(short, top=10, limit=15) == short    # at the limit: unchanged
    odd = "<table><caption>c</caption>" + head + "".join(body) + "</table>"
    assert report.collapse_long_tables(odd) == odd                       # not a plain table: left whole
