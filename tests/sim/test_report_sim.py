"""sim_demo writes sim.json + figures, and the report renders its section."""

import json

import pytest

from sim.report import sim_demo
from sim.trace import synthetic_vit_trace, write_trace


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    traces = {}
    for s in (0.0, 0.5):
        p = d / f"trace_s{s}.npz"
        write_trace(p, synthetic_vit_trace(depth=2, dim=48, tokens=10, heads=3, sparsity=s, seed=0))
        traces[s] = p
    return d, sim_demo(traces, d / "run")


def test_sim_json_and_figures(demo):
    d, data = demo
    run = d / "run"
    saved = json.loads((run / "sim.json").read_text())
    assert saved["label"] == "SIMULATED" and saved["arch_file"].endswith("kv260.yaml")
    assert len(saved["rows"]) == 2 * 4
    for f in saved["figures"].values():
        assert (run / f).stat().st_size > 1000
    by = {(r["sparsity"], r["skip_mode"]): r for r in saved["rows"]}
    # skipping at s = 0.5 beats dense; dense mode does not care about activation sparsity much
    assert by[(0.5, "act")]["latency_ms"] < by[(0.0, "act")]["latency_ms"]
    assert by[(0.5, "act")]["energy_mj"] < by[(0.5, "none")]["energy_mj"]
    assert [b["arch"] for b in saved["boards"]] == ["kv260", "zcu104", "pynq_z2"]
    assert all("fits" in b or "error" in b for b in saved["boards"])
    assert saved["headline"]["speedup"] > 1


def test_report_renders_sim_section(demo):
    d, _ = demo
    try:
        from tatvpr_hw.report import render_report
    except ImportError:  # pragma: no cover - the report package is another area's
        pytest.fail("tatvpr_hw.report.render_report missing")
    html = render_report(d / "run").read_text()
    assert 'id="sim"' in html and "SIMULATED" in html and "kv260.yaml" in html
    assert "sim_energy_vs_sparsity.png" in html and "Board fit" in html
