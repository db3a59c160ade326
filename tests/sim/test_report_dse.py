"""The report's DSE section: run_dir/dse.json from a finished sweep, and render_report shows it."""

from __future__ import annotations

import json
import shutil
import textwrap

import pandas as pd
import pytest

from sim import dse
from sim.errors import SimInputError
from sim.trace import synthetic_vit_trace, write_trace


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny real sweep (2 traces x 4 design points, sim.simulate) inside a run folder."""
    root = tmp_path_factory.mktemp("dse_run")
    traces = []
    for s in (0.0, 0.5):
        p = root / "traces" / f"trace_s{s}.npz"
        p.parent.mkdir(exist_ok=True)
        write_trace(p, synthetic_vit_trace(depth=1, dim=64, tokens=10, heads=2, sparsity=s, seed=1))
        traces.append(p)
    sweep = root / "sweep.yaml"
    sweep.write_text(textwrap.dedent("""
        arch: kv260
        board: kv260
        axes: {pe: [8, 256], skip_mode: [none, act]}
        """))
    run_dir = root / "run"
    res = dse.run_sweep(dse.load_sweep(sweep), traces, run_dir / "dse", workers=1, progress=False)
    path = dse.write_dse_summary(run_dir / "dse", run_dir)
    return run_dir, res, path


def test_summary_json(swept):
    run_dir, res, path = swept
    assert path == run_dir / "dse.json"
    d = json.loads(path.read_text())
    table = pd.read_csv(run_dir / "dse" / "results.csv")
    assert d["simulated"] is True and d["format"] == "tatvpr-dse-summary"
    assert d["points"] == len(table) == 8
    assert d["fit"] == int(table["fits"].sum())
    assert 0 < d["fit"] < d["points"]  # pe 256 (8,192 lanes) overflows the KV260
    assert [t["points"] for t in d["per_trace"]] == [4, 4]
    assert sum(t["pareto"] for t in d["per_trace"]) == len(d["pareto"]) == int(table["pareto"].sum())
    front = table[table["pareto"]]
    assert sorted(r["latency_ms"] for r in d["pareto"]) == pytest.approx(sorted(front["latency_ms"]))
    assert all(r["pe"] == 8 for r in d["pareto"])  # only fitting points are on a front
    assert [r["sparsity"] for r in d["pareto"]] == sorted(r["sparsity"] for r in d["pareto"])
    assert d["pareto_columns"][:2] == ["pe", "skip_mode"] and "energy_mj" in d["pareto_columns"]
    best = json.loads((run_dir / "dse" / "best_point.json").read_text())
    assert (d["best"]["pe"], d["best"]["skip_mode"], d["best"]["sparsity"]) == \
        (best["pe"], best["skip_mode"], best["sparsity"])
    assert d["plot"] == "dse/pareto.png" and (run_dir / d["plot"]).is_file()
    assert d["table"] == "dse/results.csv" and d["best_point"] == "dse/best_point.json"
    assert d["arch"] == "sim/arch/kv260.yaml" and d["sweep"].endswith("sweep.yaml")
    assert d["axes"] == {"pe": [8, 256], "skip_mode": ["none", "act"]}


def test_report_renders_dse_section(swept, tmp_path):
    from tatvpr_hw.report import render_report

    run_dir, _, path = swept
    only = tmp_path / "run"
    (only / "dse").mkdir(parents=True)
    shutil.copy(path, only / "dse.json")
    shutil.copy(run_dir / "dse" / "pareto.png", only / "dse" / "pareto.png")
    html = render_report(only).read_text()
    d = json.loads(path.read_text())
    assert "Design-space sweep &mdash; SIMULATED" in html or "Design-space sweep — SIMULATED" in html
    assert 'src="dse/pareto.png"' in html
    assert "sim/arch/kv260.yaml" in html and "sweep.yaml" in html
    assert f"{d['best']['pe']} PE x {d['best']['simd']} SIMD" in html
    assert "Pareto points" in html and "error" not in html.split('id="dse"')[1].split("</section>")[0].lower()


def test_summary_of_a_folder_without_results_is_named(tmp_path):
    with pytest.raises(SimInputError, match="results.csv"):
        dse.dse_summary(tmp_path)


def test_report_names_invalid_combinations(swept, tmp_path):
    """Rows whose axis combination the arch rejects are reported as such, with their rule, not hidden."""
    from tatvpr_hw.report import render_report

    run_dir, _, path = swept
    only = tmp_path / "run"
    (only / "dse").mkdir(parents=True)
    d = json.loads(path.read_text())
    d["invalid"], d["invalid_reasons"] = 3, {"schedule.topk = 'host' needs schedule.handoffs = 'dram'": 3}
    (only / "dse.json").write_text(json.dumps(d))
    shutil.copy(run_dir / "dse" / "pareto.png", only / "dse" / "pareto.png")
    section = render_report(only).read_text().split('id="dse"')[1].split("</section>")[0]
    assert "3 invalid combinations of the axes" in section
    assert "needs schedule.handoffs" in section
