"""The CLI's friction points of issue 14 item 7: one board vocabulary, built-in arch and sweep files
by name from any folder, no report path that was not written, a hint to write the benchmark, no
torch CUDA warning, flags shown as flags in --help, and terminal tables through rich that keep
their content (``--json`` untouched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sim.trace import synthetic_vit_trace, write_trace
from tatvpr_hw.cli import main
from tatvpr_hw.boards import BOARDS, TOOL_NAMES, board_name, tool_board
from tatvpr_hw.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    p = tmp_path_factory.mktemp("trace") / "t.npz"
    write_trace(p, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, sparsity=0.4, seed=0))
    return p


# ----------------------------------------------------------------------------- boards

def test_board_vocabulary_is_the_simulators_and_maps_to_each_tool():
    # the project's names are the board files of the simulator (what best_point.json carries)
    sim_boards = {p.stem for p in (REPO / "sim" / "boards").glob("*.yaml")} - {"resource_model"}
    assert set(BOARDS) == sim_boards
    # the HLS flow's names are the keys of hls/boards.yaml; FINN's are the names FINN knows
    assert set(TOOL_NAMES["hls"].values()) == set(yaml.safe_load((REPO / "hls" / "boards.yaml").read_text()))
    assert TOOL_NAMES["finn"] == {"kv260": "KV260_SOM", "zcu104": "ZCU104", "pynq_z2": "Pynq-Z2"}
    for spelling, board in (("kv260", "kv260"), ("KV260_SOM", "kv260"), ("ZCU104", "zcu104"), ("Pynq-Z2", "pynq_z2"),
                            ("pynq-z2", "pynq_z2"), (" PYNQ_Z2 ", "pynq_z2")):
        assert board_name(spelling) == board
    assert tool_board("pynq_z2", "hls") == "pynq-z2" and tool_board("kv260", "finn") == "KV260_SOM"
    with pytest.raises(UserError, match=r"unknown board 'zedboard' \(--board\); allowed: kv260, zcu104, pynq_z2"):
        board_name("zedboard")


def test_export_bitstream_takes_the_project_board_name(tmp_path, capsys):
    code, out, err = run(capsys, "export", "bitstream", "--board", "pynq_z2", "--out", str(tmp_path / "p"),
                         "--no-run")
    assert code == 0, err
    assert out.startswith("pynq_z2 (xc7z020clg400-1)")          # Pynq-Z2's part, printed under our name
    code, _, err = run(capsys, "export", "bitstream", "--board", "zedboard", "--out", str(tmp_path / "q"), "--no-run")
    assert code == 2 and "allowed: kv260, zcu104, pynq_z2" in err


# ----------------------------------------------------------------------------- built-in files

def test_builtin_arch_and_sweep_by_name_from_any_folder(tmp_path, monkeypatch, trace, capsys):
    from sim import dse
    from sim.arch import load_arch

    monkeypatch.chdir(tmp_path)                                   # not the repository root
    assert load_arch("zcu104").source == str(REPO / "sim" / "arch" / "zcu104.yaml")
    spec = dse.load_sweep("kv260_small")
    assert spec.source == str(REPO / "sim" / "sweeps" / "kv260_small.yaml")
    code, out, err = run(capsys, "sim", "--trace", str(trace), "--arch", "zcu104", "--json")
    assert code == 0, err
    assert json.loads(out)["arch_file"] == str(REPO / "sim" / "arch" / "zcu104.yaml")
    # a path still works: a copy of the built-in sweep under another name, next to us
    shutil.copyfile(REPO / "sim" / "sweeps" / "kv260_small.yaml", tmp_path / "mine.yaml")
    assert dse.load_sweep("mine.yaml").source == "mine.yaml"
    assert dse.load_sweep(tmp_path / "mine.yaml").axes == spec.axes


@pytest.mark.parametrize("argv, folder", [
    (["sim", "--trace", "T", "--arch", "kv2600"], "arch"),
    (["dse", "--space", "kv260_tiny", "--trace", "T", "--out", "O"], "sweeps"),
])
def test_unknown_builtin_name_exits_2_listing_the_names(argv, folder, tmp_path, monkeypatch, trace, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(trace) if a == "T" else str(tmp_path / "o") if a == "O" else a for a in argv]
    code, _, err = run(capsys, *argv)
    names = sorted(n[:-5] for n in os.listdir(REPO / "sim" / folder) if n.endswith(".yaml"))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: unknown ")
    assert f"built-in: {', '.join(names)}" in err


# ----------------------------------------------------------------------------- demo, data

@pytest.mark.parametrize("steps, write_report, expect", [
    (["data"], False, "no report written (the report step has not run)"),
    (["data", "report"], True, "(this invocation); report: "),
    (["data", "report"], False, "index.html is missing"),
])
def test_demo_names_the_report_only_when_written(steps, write_report, expect, tmp_path, monkeypatch, capsys):
    import tatvpr_hw.demo

    out = tmp_path / "run"

    def fake_run_demo(config, run_dir, start=None, stop=None, force=False):
        run_dir.mkdir(parents=True, exist_ok=True)
        if write_report:
            (run_dir / "index.html").write_text("<html></html>")
        return {"steps": {s: {"seconds": 1.5, "result": {}} for s in steps}}

    monkeypatch.setattr(tatvpr_hw.demo, "run_demo", fake_run_demo)
    code, text, _ = run(capsys, "demo", "--to", steps[-1], "--out", str(out))
    assert code == 0 and expect in text
    assert ("; report: " in text) == write_report
    assert all(f"{s}" in text and "1.5" in text for s in steps)     # the step table


def test_data_baseline_without_data_suggests_synth(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: t\ndata: {{source: synthetic, root: {tmp_path / 'bench'}}}\n")
    code, _, err = run(capsys, "data", "baseline", "--config", str(cfg))
    assert code == 2 and err.count("\n") == 1
    assert f"tatvpr data synth --out {tmp_path / 'bench'}" in err
    code, _, err = run(capsys, "data", "baseline", "--root", str(tmp_path / "nope"))
    assert code == 2 and "tatvpr data synth --out DIR" in err and "DIR/eval" in err


# ----------------------------------------------------------------------------- torch, help

def test_no_cuda_runtime_warning(tmp_path):
    """torch warns "No CUDA runtime is found" when CUDA_HOME names a folder and no GPU is visible:
    both forced here, so the warning would appear without the CLI's filter."""
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "tatvpr_hw", "footprint", "--config",
                           str(REPO / "configs" / "tiny.yaml"), "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["backbone"]
    assert "No CUDA runtime" not in proc.stderr, proc.stderr


def test_sim_does_not_import_torch(trace):
    code = ("import sys\nfrom tatvpr_hw.cli import main\n"
            f"rc = main(['sim', '--trace', {str(trace)!r}, '--json'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.stderr.strip().splitlines()[-1] == "NO-TORCH 0", proc.stderr


def test_help_shows_flags_as_flags(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run(capsys, "sim", "--help")
    assert code == 0
    lines = {}
    for ln in out.splitlines():
        opts = [w for w in ln.split() if w.startswith("--")]
        if ln.startswith("│") and opts:
            lines[opts[0]] = ln
    assert "<bool>" not in out
    assert "--json" in lines and "--layers" in lines and "<path>" in lines["--trace"] + lines["--arch"]
    code, out, _ = run(capsys, "demo", "--help")
    assert "--force" in out and "<bool>" not in out


def test_ops_help_says_the_paper_config_takes_minutes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "ops", "--help")
    assert code == 0 and "minutes on the paper config" in " ".join(out.replace("│", " ").split())


# ----------------------------------------------------------------------------- tables

def test_sim_table_carries_the_json_numbers(trace, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")            # narrow: a pipe still gets whole cells
    code, out, _ = run(capsys, "sim", "--trace", str(trace), "--json")
    d = json.loads(out)
    code, text, _ = run(capsys, "sim", "--trace", str(trace))
    rows = {}
    for ln in text.splitlines():
        if ln.split():
            rows.setdefault(ln.split()[0], ln.split()[1:])             # first: "cycles" before "cycles by unit"
    assert rows["cycles"] == [f"{d['cycles']:,}"]
    assert rows["latency_ms"] == [f"{d['latency_ms']:.4f}"]
    for unit, cycles in d["cycles_by_unit"].items():
        assert rows[unit] == [f"{cycles:,}"]
    for k in ("lut", "ff", "dsp", "bram36", "uram"):
        assert rows[k][:2] == [f"{d['resources']['used'][k]:,}", f"{d['resources']['available'][k]:,}"]
    assert "…" not in text


def test_dse_table_lists_the_pareto_points_and_json_is_unchanged(tmp_path, trace, capsys):
    import pandas as pd

    sweep = tmp_path / "s.yaml"
    sweep.write_text("arch: kv260\nboard: kv260\naxes: {pe: [8, 16], simd: [16, 32]}\n")
    code, text, err = run(capsys, "dse", "--space", str(sweep), "--trace", str(trace), "--out", str(tmp_path / "o"),
                          "--workers", "1")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "o" / "results.csv")
    front = table[table["pareto"]].sort_values(["sparsity", "latency_ms"])
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["sparsity", "pe", "simd"])
    body = [ln.split() for ln in lines[head + 2:head + 2 + len(front)]]
    assert [(int(r[1]), int(r[2])) for r in body] == list(zip(front["pe"], front["simd"]))
    assert [float(r[3]) for r in body] == pytest.approx(list(front["latency_ms"]), rel=1e-3)
    code, out, _ = run(capsys, "dse", "--space", str(sweep), "--trace", str(trace), "--out", str(tmp_path / "o"),
                       "--workers", "1", "--json")
    best = json.loads(out)                                        # --json: the best point as before
    assert best == json.loads((tmp_path / "o" / "best_point.json").read_text())


def test_eval_metrics_table_has_every_record():
    from tatvpr_hw.commands.evaluation import metrics_table
    from tatvpr_hw.commands.tables import render_table

    records = [
        {"model": "teacher", "format": "fp32", "sparsity": 0.0, "recall@1": 81.25, "gmacs": 0.3, "memory_mb": 22.1},
        {"model": "student", "format": "ternary2", "granularity": "bank", "sparsity": 0.4, "recall@1": 76.25,
         "gmacs": 0.2, "memory_mb": 1.9, "sim_latency_ms": 0.6125},
    ]
    rows = [ln.split() for ln in render_table(metrics_table(records)).splitlines()]
    assert ["teacher", "fp32", "0.00", "81.25", "0.3000", "22.100"] in rows      # no latency: cell left empty
    assert ["student", "ternary2", "bank", "0.40", "76.25", "0.2000", "1.900", "0.6125"] in rows


def test_footprint_table_carries_the_json_bytes(capsys):
    from brevitas_models.footprint import FORMATS

    cfg = str(REPO / "configs" / "tiny.yaml")
    code, out, _ = run(capsys, "footprint", "--config", cfg, "--json")
    fp = json.loads(out)
    code, text, _ = run(capsys, "footprint", "--config", cfg)
    rows = {" ".join(w for w in ln.split() if not w[0].isdigit()): [w for w in ln.split() if w[0].isdigit()]
            for ln in text.splitlines()}
    for label, key in (("backbone bytes", "backbone_bytes"), ("total bytes", "total_bytes")):
        assert rows[label] == [f"{fp[key][f]:,}" for f in FORMATS]
    assert rows["fp32 backbone / x"] == [f"{fp['ratios']['backbone'][f'fp32_over_{f}']:.2f}x" for f in FORMATS]
    assert "blocks.3" in rows and text.splitlines()[-1].startswith("quantized layers: ")


def test_tables_on_an_ascii_stdout(trace):
    """A pipe whose encoding has no box-drawing characters gets the header rule in "-"."""
    proc = subprocess.run([sys.executable, "-m", "tatvpr_hw", "sim", "--trace", str(trace)], cwd=REPO,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.split() == ["metric", "value"])
    assert set(lines[i + 1]) == {"-"} and lines[i + 2].split()[0] == "cycles"


def test_builtin_config_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from tatvpr_hw.config import load_config

    monkeypatch.chdir(tmp_path)
    assert load_config("tiny") == load_config(REPO / "configs" / "tiny.yaml")
    code, out, err = run(capsys, "footprint", "--json")                 # the default: tiny, from /tmp
    assert code == 0, err
    tiny = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    assert json.loads(out)["backbone"] == tiny["model"]["backbone"]
    code, _, err = run(capsys, "ops", "--config", "tinyy")
    names = sorted(n[:-5] for n in os.listdir(REPO / "configs") if n.endswith(".yaml"))
    assert code == 2 and err.count("\n") == 1 and f"unknown config 'tinyy'; built-in: {', '.join(names)}" in err
    code, _, err = run(capsys, "ops", "--config", "tinyy.yaml")          # a path stays a path
    assert code == 2 and "config file not found: tinyy.yaml" in err


def test_export_bitstream_says_when_the_point_was_simulated_on_another_machine(tmp_path, capsys, caplog):
    # the board's default arch hands off on chip (the simulator's default); the IPs go through DDR
    code, _, err = run(capsys, "export", "bitstream", "--board", "kv260", "--out", str(tmp_path / "p"), "--no-run")
    assert code == 0, err
    note = json.loads((tmp_path / "p" / "project.json").read_text())["simulated_machine_differs"]
    assert "'onchip'" in note and "--set schedule.handoffs=dram" in note
    assert "--set schedule.handoffs=dram" in caplog.text
    # a point simulated with DDR hand-offs is this bitstream's machine: no note
    bp = tmp_path / "bp.json"
    bp.write_text(json.dumps({"pe": 8, "simd": 16, "clock_mhz": 200, "board": "kv260",
                              "overrides": {"schedule.handoffs": "dram"}}))
    code, _, err = run(capsys, "export", "bitstream", "--board", "kv260", "--dse-point", str(bp),
                       "--out", str(tmp_path / "q"), "--no-run")
    assert code == 0, err
    assert "simulated_machine_differs" not in json.loads((tmp_path / "q" / "project.json").read_text())
