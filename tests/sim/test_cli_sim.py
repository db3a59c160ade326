"""`tatvpr sim` / `tatvpr sim-synth` through the real CLI entry point (exit codes, JSON, errors)."""

import json

import numpy as np
import pytest

from sim.trace import synthetic_vit_trace, write_trace
from tatvpr_hw.cli import main


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("tr") / "t.npz"
    write_trace(p, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, sparsity=0.4, seed=0))
    return p


def test_sim_json(trace_path, capsys):
    assert main(["sim", "--trace", str(trace_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("cycles", "latency_ms", "queries_per_s", "energy_mj", "energy_by_component_mj",
                "energy_by_layer_mj", "cycles_by_unit", "resources", "effective_gops", "gops_per_w"):
        assert key in d
    assert d["simulated"] is True and d["arch_file"].endswith("kv260.yaml")
    assert d["energy_mj"] == pytest.approx(sum(d["energy_by_component_mj"].values()))
    assert "layers" not in d


def test_sim_table_and_set(trace_path, capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["sim", "--trace", str(trace_path), "--arch", "zcu104", "--set", "compute.skip_mode=none",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SIMULATED" in text and "zcu104.yaml" in text and "skip=none" in text and "energy_mj" in text
    saved = json.loads(out.read_text())
    assert saved["arch"]["compute"]["skip_mode"] == "none" and len(saved["layers"]) > 0


def test_sim_skip_reduces_cycles_via_cli(trace_path, capsys):
    res = {}
    for mode in ("none", "act"):
        main(["sim", "--trace", str(trace_path), "--json", "--set", f"compute.skip_mode={mode}"])
        res[mode] = json.loads(capsys.readouterr().out)["cycles_by_unit"]["ternary_array"]
    assert res["act"] < res["none"]


@pytest.mark.parametrize("bad", ["trace", "arch", "set", "missing"])
def test_sim_errors_exit_2(trace_path, tmp_path, capsys, bad):
    args = ["sim", "--trace", str(trace_path)]
    if bad == "trace":
        p = tmp_path / "bad.npz"
        np.savez(p, x=np.zeros(3))
        args = ["sim", "--trace", str(p)]
        needle = "__header__"
    elif bad == "arch":
        p = tmp_path / "a.yaml"
        p.write_text("name: x\ncompute: {pe: 0}\n")
        args += ["--arch", str(p)]
        needle = "compute.pe"
    elif bad == "set":
        args += ["--set", "compute.skip_mode=sideways"]
        needle = "skip_mode"
    else:
        args = ["sim", "--trace", str(tmp_path / "nope.npz")]
        needle = "not found"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_sim_synth(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sim-synth", "--out", str(out), "--depth", "1", "--dim", "16", "--tokens", "4", "--heads", "2",
                 "--sparsity", "0.5"]) == 0
    assert out.is_file() and "4 ternary linears" in capsys.readouterr().out
    assert main(["sim-synth", "--out", str(out), "--sparsity", "1.5", "--depth", "1", "--dim", "16",
                 "--tokens", "4", "--heads", "2"]) == 2
    assert "sparsity" in capsys.readouterr().err


def test_sim_report(trace_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sim-report", "--trace", f"0.4={trace_path}", "--out", str(out)]) == 0
    assert (out / "sim.json").is_file() and "SIMULATED" in capsys.readouterr().out
    assert main(["sim-report", "--trace", f"{trace_path}", "--out", str(out)]) == 2
    assert "S=PATH" in capsys.readouterr().err
