"""Bad input across every command: exit status 2, exactly one ``error:`` line, nothing left behind.

Each row of :data:`CASES` builds one bad input in ``tmp_path`` (a config, trace, arch, energy
table, board, sweep, checkpoint, data set, design point, steps.json, metrics.json, a CLI
argument or an output path), runs it through ``tatvpr_hw.cli.main`` and asserts:

- the exit status is 2 (README: bad input or usage),
- stderr holds exactly one line starting with ``error:``, it names the problem (``needle``)
  and there is no traceback,
- no file or folder appeared or changed in ``tmp_path`` (nothing half-written; output paths
  given to the command all lie in ``tmp_path``).

The subprocess tests at the end check the processes: a DSE driver killed with SIGKILL leaves
no worker process behind, and SIGINT to a running sweep exits 130 with one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from tatvpr_hw.cli import main

REPO = Path(__file__).resolve().parents[1]
ARCH = REPO / "sim" / "arch" / "kv260.yaml"
ENERGY = REPO / "sim" / "energy" / "ultrascale_plus.yaml"
BOARD = REPO / "sim" / "boards" / "kv260.yaml"


# ------------------------------------------------------------------------------ input builders

def good_trace(path: Path, sparsity: float = 0.4) -> Path:
    from sim.trace import synthetic_vit_trace, write_trace

    return write_trace(path, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, sparsity=sparsity, seed=1))


def raw_trace(path: Path, ops: list | None = None, meta=None, *, header: dict | None = None,
              header_text: str | None = None) -> Path:
    """A trace file written without the simulator's writer (so it can hold anything)."""
    if header_text is None:
        header = header if header is not None else {
            "format": "tatvpr-trace", "version": 1, "meta": {} if meta is None else meta,
            "ops": ops if ops is not None else [{"type": "dense", "name": "d", "m": 2, "k": 2, "n": 2}]}
        header_text = json.dumps(header)
    with open(path, "wb") as fh:
        np.savez(fh, __header__=np.frombuffer(header_text.encode(), dtype=np.uint8))
    return path


def dense(**kw) -> list:
    return [{"type": "dense", "name": "d", "m": 2, "k": 2, "n": 2, **kw}]


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def arch_with(tmp: Path, **changes) -> Path:
    data = yaml.safe_load(ARCH.read_text())
    for key, value in changes.items():
        node = data
        parts = key.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return write_yaml(tmp / "arch.yaml", data)


def energy_with(tmp: Path, key: str, value) -> Path:
    data = yaml.safe_load(ENERGY.read_text())
    data[key]["value"] = value
    write_yaml(tmp / "energy.yaml", data)
    return arch_with(tmp, energy_table="energy.yaml")


def board_with(tmp: Path, key: str, value) -> Path:
    data = yaml.safe_load(BOARD.read_text())
    node = data
    parts = key.split("__")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    write_yaml(tmp / "board.yaml", data)
    return arch_with(tmp, board="board.yaml")


def sweep(tmp: Path, out: bool = True, trace_sparsity: float = 0.4, **data) -> list[str]:
    """`tatvpr dse` arguments for a sweep file of ``data`` (default: pe 8/16 on kv260)."""
    spec = {"arch": str(ARCH), "axes": {"pe": [8, 16]}, **data}
    space = write_yaml(tmp / "space.yaml", spec)
    trace = good_trace(tmp / "t.npz", trace_sparsity)
    return ["dse", "--space", str(space), "--trace", str(trace), "--out", str(tmp / "sweep"), "--workers", "1"]


def many_axes(count: int, values: int) -> dict:
    return {f"x.a{i}": list(range(values)) for i in range(count)}


def sim_args(tmp: Path, *extra: str, trace: Path | None = None) -> list[str]:
    t = trace if trace is not None else good_trace(tmp / "t.npz")
    return ["sim", "--trace", str(t), *extra]


def config(tmp: Path, text: str) -> Path:
    p = tmp / "c.yaml"
    p.write_text(text)
    return p


def binary(path: Path) -> Path:
    path.write_bytes(bytes(range(128, 256)) * 4)
    return path


def a_file(path: Path) -> Path:
    path.write_text("x\n")
    return path


def best_point(tmp: Path, obj) -> Path:
    p = tmp / "best_point.json"
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


def run_folder(tmp: Path, metrics=None, steps=None) -> Path:
    run = tmp / "run"
    run.mkdir()
    if metrics is not None:
        (run / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    if steps is not None:
        (run / "steps.json").write_text(steps if isinstance(steps, str) else json.dumps(steps))
    return run


CFG = str(REPO / "configs" / "tiny.yaml")
TINY = Path(CFG).read_text()


@dataclass
class Case:
    id: str
    build: Callable[[Path], list[str]]
    needle: str  # a part of the error line (what names the problem)


CASES = [
    # ---- CLI arguments
    Case("usage-missing-option", lambda t: ["sim"], "Missing option '--trace'"),
    Case("usage-not-an-int", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--depth", "abc"], "--depth"),
    Case("dse-workers-0", lambda t: sweep(t)[:-2] + ["--workers", "0"], "--workers = 0"),
    Case("dse-workers-huge", lambda t: sweep(t)[:-2] + ["--workers", "1000000"], "--workers = 1000000"),
    Case("dse-backend", lambda t: sweep(t) + ["--backend", "mpi"], "--backend 'mpi'"),
    Case("dse-seed-negative", lambda t: sweep(t) + ["--seed", "-1"], "--seed = -1"),
    Case("synth-mlp-nan", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--mlp-ratio", "nan"], "--mlp-ratio = nan"),
    Case("synth-mlp-inf", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--mlp-ratio", "inf"], "--mlp-ratio = inf"),
    Case("synth-sparsity-nan", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--sparsity", "nan"], "--sparsity = nan"),
    Case("synth-sparsity-1", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--sparsity", "1"], "--sparsity = 1"),
    Case("synth-zero-frac", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--weight-zero-frac", "-0.1"],
         "--weight-zero-frac = -0.1"),
    Case("synth-depth-0", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--depth", "0"], "--depth = 0"),
    Case("synth-dim-huge", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--dim", "1000000"], "--dim = 1000000"),
    Case("synth-heads-not-divisor", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--dim", "32", "--heads", "5",
                                               "--depth", "1", "--tokens", "5"], "multiple of heads"),
    Case("synth-too-big", lambda t: ["sim-synth", "--out", str(t / "o.npz"), "--dim", "8192", "--tokens", "65536",
                                     "--depth", "100"], "GiB"),
    Case("ice40-pe-0", lambda t: ["rtl", "ice40", "--out", str(t / "ice"), "--pe", "0"], "--pe = 0"),
    Case("ice40-k-0", lambda t: ["rtl", "ice40", "--out", str(t / "ice"), "--k", "0"], "--k = 0"),
    Case("ice40-simd-huge", lambda t: ["rtl", "ice40", "--out", str(t / "ice"), "--simd", "100000"], "--simd = 100000"),
    Case("ice40-ports-3", lambda t: ["rtl", "ice40", "--out", str(t / "ice"), "--ports", "3"], "--ports = 3"),
    Case("ice40-banks-not-divisor", lambda t: ["rtl", "ice40", "--out", str(t / "ice"), "--banks", "3"],
         "does not divide simd"),
    Case("rtl-sim-pe-0", lambda t: ["rtl", "sim", "--build-dir", str(t / "b"), "--pe", "0"], "--pe = 0"),
    Case("rtl-sim-layers-0", lambda t: ["rtl", "sim", "--build-dir", str(t / "b"), "--layers", "0"], "--layers = 0"),
    Case("rtl-sim-sparsity-nan", lambda t: ["rtl", "sim", "--build-dir", str(t / "b"), "--sparsity", "nan"],
         "--sparsity"),
    Case("rtl-synth-grid-0", lambda t: ["rtl", "synth", "--grid", "0x4"], "--pe = 0"),
    Case("rtl-synth-grid-text", lambda t: ["rtl", "synth", "--grid", "abc"], "not PExSIMD"),
    Case("sim-report-no-s", lambda t: ["sim-report", "--trace", "x.npz", "--out", str(t / "r")], "expected S=PATH"),
    Case("sim-report-nan", lambda t: ["sim-report", "--trace", "nan=x.npz", "--out", str(t / "r")], "expected S=PATH"),
    Case("sim-set-no-eq", lambda t: sim_args(t, "--set", "compute.pe"), "expected KEY=VALUE"),
    Case("sim-set-pe-0", lambda t: sim_args(t, "--set", "compute.pe=0"), "compute.pe"),
    Case("sim-set-clock-inf", lambda t: sim_args(t, "--set", "clock_mhz=.inf"), "clock_mhz"),
    # ---- traces
    Case("trace-not-npz", lambda t: sim_args(t, trace=a_file(t / "x.npz")), "not a trace file"),
    Case("trace-no-header", lambda t: sim_args(t, trace=_npz(t / "x.npz", {"a": np.zeros(2)})), "__header__"),
    Case("trace-header-not-json", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", header_text="{oops")),
         "not valid JSON"),
    Case("trace-format", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", header={"format": "x", "version": 1})),
         "format"),
    Case("trace-version", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", header={
        "format": "tatvpr-trace", "version": 2, "meta": {}, "ops": dense()})), "version 2"),
    Case("trace-m-2^62", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", dense(m=2**62))), "'m' = 4611686018427387904"),
    Case("trace-elements-1e30", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", [
        {"type": "vector", "name": "v", "kind": "add", "elements": 10**30}])), "'elements'"),
    Case("trace-elements-float", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", [
        {"type": "vector", "name": "v", "kind": "add", "elements": 1e30}])), "'elements'"),
    Case("trace-dense-work", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", dense(m=2**17, k=2**17, n=2**17))),
         "batch * m * k * n"),
    Case("trace-meta-sparsity-lots", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", meta={"sparsity": "lots"})),
         "meta.sparsity = 'lots'"),
    Case("trace-meta-sparsity-7.5", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", meta={"sparsity": 7.5})),
         "meta.sparsity = 7.5"),
    Case("trace-meta-nan", lambda t: sim_args(t, trace=raw_trace(
        t / "x.npz", header_text='{"format": "tatvpr-trace", "version": 1, "meta": {"sparsity": NaN}, '
                                 '"ops": [{"type": "dense", "name": "d", "m": 2, "k": 2, "n": 2}]}')), "NaN"),
    Case("trace-meta-list", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", meta=[1, 2])), "'meta' must be"),
    Case("trace-meta-tokens-0", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", meta={"tokens": 0})), "'tokens'"),
    Case("trace-op-type", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", [{"type": "conv", "name": "c"}])),
         "'type' = 'conv'"),
    Case("trace-no-ops", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", [])), "no operations"),
    Case("trace-batch-0", lambda t: sim_args(t, trace=raw_trace(t / "x.npz", dense(batch=0))), "'batch' = 0"),
    # ---- arch, energy table, board
    Case("arch-clock-inf", lambda t: sim_args(t, "--arch", str(arch_with(t, clock_mhz=float("inf")))), "clock_mhz"),
    Case("arch-clock-nan", lambda t: sim_args(t, "--arch", str(arch_with(t, clock_mhz=float("nan")))), "clock_mhz"),
    Case("arch-unknown-key", lambda t: sim_args(t, "--arch", str(arch_with(t, bogus=1))), "unknown key 'bogus'"),
    Case("arch-binary", lambda t: sim_args(t, "--arch", str(binary(t / "a.yaml"))), "UTF-8"),
    Case("arch-list", lambda t: sim_args(t, "--arch", str(config(t, "- 1\n- 2\n"))), "must be a mapping"),
    Case("arch-pe-0", lambda t: sim_args(t, "--arch", str(arch_with(t, compute__pe=0))), "compute.pe"),
    Case("energy-inf", lambda t: sim_args(t, "--arch", str(energy_with(t, "add8_pj", float("inf")))),
         "add8_pj.value = inf"),
    Case("energy-nan", lambda t: sim_args(t, "--arch", str(energy_with(t, "mult8_pj", float("nan")))),
         "mult8_pj.value = nan"),
    Case("energy-negative", lambda t: sim_args(t, "--arch", str(energy_with(t, "add32_pj", -1.0))), "add32_pj"),
    Case("board-fmax-inf", lambda t: sim_args(t, "--arch", str(board_with(t, "fabric_fmax_mhz__value", float("inf")))),
         "fabric_fmax_mhz"),
    # ---- sweeps
    Case("sweep-grid-1e22", lambda t: sweep(t, axes=many_axes(22, 10)), "1e+22 design points"),
    Case("sweep-grid-2^64-random", lambda t: sweep(t, axes=many_axes(64, 2), sampling={"mode": "random", "n": 5}),
         "at most 2^62"),
    Case("sweep-grid-2^64", lambda t: sweep(t, axes=many_axes(64, 2)), "1.84e+19 design points"),
    Case("sweep-grid-1e7", lambda t: sweep(t, axes=many_axes(7, 10)), "at most 1,000,000"),
    Case("sweep-random-n-huge", lambda t: sweep(t, sampling={"mode": "random", "n": 10**7}), "sampling.n = 10000000"),
    Case("sweep-select-sparsity-no-trace", lambda t: sweep(t, select={"metric": "edp", "sparsity": 0.5}),
         "select.sparsity = 0.5 matches no trace"),
    Case("sweep-select-sparsity-nan", lambda t: sweep(t, select={"sparsity": float("nan")}), "select.sparsity"),
    Case("sweep-seed-negative", lambda t: sweep(t, sampling={"mode": "random", "n": 2, "seed": -1}), "sampling.seed"),
    Case("sweep-pe-0", lambda t: sweep(t, axes={"pe": [0, 8]}), "axes.pe"),
    Case("sweep-pe-1e30", lambda t: sweep(t, axes={"pe": [1e30]}), "axes.pe value 1e+30"),
    Case("sweep-banks-0", lambda t: sweep(t, axes={"compute.gather.banks": [0]}), "compute.gather.banks"),
    Case("sweep-pe-inf", lambda t: sweep(t, axes={"pe": [float("inf")]}), "axes.pe"),
    Case("sweep-unknown-key", lambda t: sweep(t, bogus=1), "unknown key"),
    Case("sweep-binary", lambda t: sweep(t)[:2] + [str(binary(t / "s.yaml"))] + sweep(t)[3:], "UTF-8"),
    Case("sweep-trace-meta-lots", lambda t: sweep(t)[:4] + [str(raw_trace(t / "x.npz", meta={"sparsity": "lots"}))]
         + sweep(t)[5:], "meta.sparsity = 'lots'"),
    Case("sweep-same-trace-twice", lambda t: sweep(t) + ["--trace", str(t / "t.npz")], "same file"),
    Case("sweep-out-is-file", lambda t: sweep(t)[:6] + [str(a_file(t / "f"))] + sweep(t)[7:], "is a file"),
    Case("sweep-out-under-file", lambda t: sweep(t)[:6] + [str(a_file(t / "f") / "s")] + sweep(t)[7:],
         "is a file, not a folder"),
    # ---- output paths
    Case("trace-out-folder", lambda t: ["trace", "--config", CFG, "--sparsity", "0.4", "--out", str(t)], "existing folder"),
    Case("trace-out-under-file", lambda t: ["trace", "--config", CFG, "--sparsity", "0.4",
                                            "--out", str(a_file(t / "f") / "t.npz")], "not a folder"),
    Case("sim-out-folder", lambda t: sim_args(t, "--out", str(t)), "existing folder"),
    Case("sim-out-under-file", lambda t: sim_args(t, "--out", str(a_file(t / "f") / "r.json")), "not a folder"),
    Case("synth-out-folder", lambda t: ["sim-synth", "--out", str(t), "--depth", "1", "--dim", "32", "--tokens", "5",
                                        "--heads", "2"], "existing folder"),
    Case("synth-out-under-file", lambda t: ["sim-synth", "--out", str(a_file(t / "f") / "o.npz"), "--depth", "1",
                                            "--dim", "32", "--tokens", "5", "--heads", "2"], "not a folder"),
    Case("sim-report-out-file", lambda t: ["sim-report", "--trace", f"0.4={good_trace(t / 't.npz')}",
                                           "--out", str(a_file(t / "f"))], "is a file"),
    Case("ice40-out-file", lambda t: ["rtl", "ice40", "--out", str(a_file(t / "f"))], "is a file"),
    Case("rtl-sim-build-dir-file", lambda t: ["rtl", "sim", "--build-dir", str(a_file(t / "f"))], "is a file"),
    # ---- config, checkpoint, data set
    Case("config-unknown-key", lambda t: ["footprint", "--config", str(config(t, TINY + "\nbogus: 1\n"))], "bogus"),
    Case("config-list", lambda t: ["footprint", "--config", str(config(t, "- 1\n"))], "c.yaml"),
    Case("config-binary", lambda t: ["footprint", "--config", str(binary(t / "c.yaml"))], "UTF-8"),
    Case("config-empty", lambda t: ["footprint", "--config", str(config(t, ""))], "empty"),
    Case("checkpoint-missing", lambda t: ["footprint", "--config", CFG, "--checkpoint", str(t / "nope.safetensors")], "nope"),
    Case("checkpoint-garbage", lambda t: ["footprint", "--config", CFG, "--checkpoint", str(_garbage_checkpoint(t))], "ck"),
    Case("data-root-missing", lambda t: ["data", "baseline", "--config", CFG, "--root", str(t / "no_such_set")], "no_such_set"),
    Case("data-gsv-csv-binary", lambda t: ["data", "info", "--config", str(_local_data_config(t, csv=b"\xff\xfe\x80" * 40))],
         "UTF-8"),
    Case("data-gsv-csv-columns", lambda t: ["data", "info", "--config", str(_local_data_config(t, csv=b"a,b\n1,2\n"))],
         "City.csv"),
    Case("data-synth-out-file", lambda t: ["data", "synth", "--config", CFG, "--out", str(a_file(t / "f"))], "f"),
    # ---- design point (export bitstream --dse-point)
    Case("dse-point-list", lambda t: ["export", "bitstream", "--dse-point", str(best_point(t, [1, 2])),
                                      "--out", str(t / "proj"), "--no-run"], "must be a JSON object"),
    Case("dse-point-not-json", lambda t: ["export", "bitstream", "--dse-point", str(best_point(t, "{oops")),
                                          "--out", str(t / "proj"), "--no-run"], "not JSON"),
    Case("dse-point-binary", lambda t: ["export", "bitstream", "--dse-point", str(binary(t / "bp.json")),
                                        "--out", str(t / "proj"), "--no-run"], "UTF-8"),
    Case("dse-point-missing-fields", lambda t: ["export", "bitstream", "--dse-point", str(best_point(
        t, {"format": "tatvpr-dse-point"})), "--out", str(t / "proj"), "--no-run"], "missing key"),
    Case("bitstream-out-file", lambda t: ["export", "bitstream", "--out", str(a_file(t / "f")), "--no-run"], "f"),
    Case("bitstream-seed-negative", lambda t: ["export", "bitstream", "--out", str(t / "bs"), "--no-run", "--seed", "-5"],
         "--seed"),
    Case("data-synth-seed-negative", lambda t: ["data", "synth", "--config", CFG, "--out", str(t / "ds"), "--seed", "-1"],
         "--seed"),
    Case("rtl-sim-seed-negative", lambda t: ["rtl", "sim", "--build-dir", str(t / "b"), "--seed", "-1"], "--seed"),
    Case("finn-clock-nan", lambda t: ["export", "finn", "--config", CFG, "--checkpoint", str(t / "x.safetensors"),
                                      "--out", str(t / "f"), "--board", "zcu104", "--clock-mhz", "nan"],
         "--clock-mhz = nan"),
    Case("hls4ml-sparsity-nan", lambda t: ["export", "hls4ml", "--config", CFG, "--checkpoint", str(t / "x.safetensors"),
                                           "--out", str(t / "h"), "--block", "mlp", "--sparsity", "nan"],
         "--sparsity = nan"),
    Case("hls4ml-layer-negative", lambda t: ["export", "hls4ml", "--config", CFG, "--checkpoint", str(t / "x.safetensors"),
                                             "--out", str(t / "h"), "--block", "mlp", "--layer", "-1"], "--layer"),
    # ---- run folders: report's metrics.json, demo's steps.json
    Case("report-metrics-numbers", lambda t: ["report", str(run_folder(t, metrics=[1, 2]))], "record 0 is a int"),
    Case("report-metrics-dict", lambda t: ["report", str(run_folder(t, metrics={"a": 1}))], "a list of records"),
    Case("report-metrics-recall-text", lambda t: ["report", str(run_folder(t, metrics=[
        {"model": "student", "sparsity": 0, "recall@1": "high"}]))], "recall@1 = 'high'"),
    Case("report-metrics-not-json", lambda t: ["report", str(run_folder(t, metrics="[1,"))], "not readable JSON"),
    Case("report-eval-list", lambda t: ["report", str(_with_eval(run_folder(t, metrics=[
        {"model": "student", "sparsity": 0, "recall@1": 50.0, "gmacs": 0.1}]), [1]))], "eval.json"),
    Case("report-no-folder", lambda t: ["report", str(t / "none")], "run folder not found"),
    Case("steps-json-corrupt", lambda t: ["demo", "--config", CFG, "--out", str(run_folder(t, steps="{oops"))], "corrupt"),
    Case("steps-json-list", lambda t: ["demo", "--config", CFG, "--out", str(run_folder(t, steps=[1]))], "not a flow state"),
    Case("steps-json-binary", lambda t: ["demo", "--config", CFG, "--out", str(_binary_steps(t))], "UTF-8"),
    Case("steps-json-bad-record", lambda t: ["demo", "--config", CFG, "--out", str(run_folder(t, steps={"steps": {"data": 5}}))],
         "steps.json"),
]


def _npz(path: Path, arrays: dict) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _garbage_checkpoint(tmp: Path) -> Path:
    (tmp / "ck.safetensors").write_bytes(b"not a safetensors file")
    (tmp / "ck.json").write_text("{}")
    return tmp / "ck.safetensors"


def _local_data_config(tmp: Path, csv: bytes) -> Path:
    """A config on local data sets whose GSV-Cities dataframe is ``csv``."""
    (tmp / "gsv" / "Dataframes").mkdir(parents=True)
    (tmp / "gsv" / "Dataframes" / "City.csv").write_bytes(csv)
    (tmp / "gsv" / "Images" / "City").mkdir(parents=True)
    (tmp / "eval").mkdir()
    data = yaml.safe_load(TINY)
    data.setdefault("data", {}).update(source="local", gsv_root=str(tmp / "gsv"), eval_root=str(tmp / "eval"))
    return write_yaml(tmp / "c.yaml", data)


def _with_eval(run: Path, obj) -> Path:
    (run / "eval.json").write_text(json.dumps(obj))
    return run


def _binary_steps(tmp: Path) -> Path:
    run = run_folder(tmp)
    binary(run / "steps.json")
    return run


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
            for p in root.rglob("*")}


def test_at_least_60_cases_with_unique_ids():
    ids = [c.id for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command's default output folder would land here too
    argv = case.build(tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    assert len(errors) == 1, err
    assert case.needle in errors[0], errors[0]
    assert _snapshot(tmp_path) == before, "the command left output behind"


# ------------------------------------------------------------------------------ processes

DRIVER = """
import sys, time
import sim.dse as d
real = d._eval_chunk
def slow(*a, **k):
    time.sleep(0.5)
    return real(*a, **k)
d._eval_chunk = slow
from tatvpr_hw.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_sweep(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    args = sweep(tmp_path, axes={"pe": [4, 8, 16, 32], "simd": [8, 16, 32, 64]})
    args[args.index("--workers") + 1] = "2"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    jsonl = tmp_path / "sweep" / "points.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_children(proc.pid)) < 2:
        time.sleep(0.1)
    return proc, jsonl


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_sigkill_of_the_dse_driver_leaves_no_worker(tmp_path):
    proc, _ = _start_sweep(tmp_path)
    workers = _children(proc.pid)
    try:
        assert len(workers) >= 2, "the pool did not start its workers"
        _kill_and_wait(proc, workers, 10)
        assert not [w for w in workers if _alive(w)], "workers outlived their driver"
    finally:
        _reap(proc, workers)


def _kill_and_wait(proc: subprocess.Popen, pids: list[int], seconds: float) -> None:
    """SIGKILL the driver, then give its children ``seconds`` to go."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)


def _reap(proc: subprocess.Popen, workers: list[int]) -> None:
    """Kill what this test started (orphaned workers hold the pipes open) and close the pipes."""
    for w in workers:
        if _alive(w):
            os.kill(w, signal.SIGKILL)
    proc.kill()
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pass


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the workers")
def test_sigint_of_a_running_sweep_exits_130_and_stops_its_workers(tmp_path):
    proc, _ = _start_sweep(tmp_path)
    workers = _children(proc.pid)
    try:
        assert len(workers) >= 2
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        _reap(proc, workers)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("INFO", "WARNING", "dse:"))
             and "\r" not in ln]
    assert lines == ["interrupted"], err
    assert not [w for w in workers if _alive(w)]


def test_ray_trace_cache_is_verified_by_content_hash(tmp_path, monkeypatch):
    """A cache file of the right name but other bytes is never read: the worker rewrites it."""
    import hashlib

    import sim.dse as sdse

    good = good_trace(tmp_path / "good.npz", 0.4).read_bytes()
    other = good_trace(tmp_path / "other.npz", 0.2).read_bytes()
    sha = hashlib.sha256(good).hexdigest()
    cache = sdse.trace_cache_path(sha, tmp_path / "cache")
    cache.parent.mkdir()
    cache.write_bytes(other)  # a stale or foreign file under the expected name
    monkeypatch.setattr(sdse, "_WORKER", {})
    old = os.umask(0o022)
    try:
        tr = sdse._materialise_trace(sha, good, "good.npz", str(tmp_path / "cache"))
    finally:
        os.umask(old)
    assert tr.meta["sparsity"] == 0.4  # the shipped trace, not the planted one (0.2)
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == sha
    assert cache.stat().st_mode & 0o777 == 0o644
    monkeypatch.setattr(sdse, "_WORKER", {})
    with pytest.raises(sdse.SimInputError, match="SHA-256"):
        sdse._materialise_trace(sha, other, "good.npz", str(tmp_path / "cache"))


def test_sim_outputs_get_the_umask_mode(tmp_path):
    from sim.dse import _write_json
    from sim.report import write_json

    old = os.umask(0o027)
    try:
        paths = [good_trace(tmp_path / "t.npz"), _write_json(tmp_path / "a.json", {}),
                 write_json(tmp_path / "b.json", {})]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [0o640] * 3  # 0o666 & ~0o027; mkstemp gives 0o600


REAPED_DRIVER = """
import subprocess, sys, time
import sim.dse as d
d._start_reaper()
# like Ray's agents: a grandchild whose parent (the raylet) does not outlive the driver
mid = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
                        "print(p.pid, flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
print(mid.pid, mid.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_reaper_kills_what_a_killed_ray_driver_leaves(tmp_path):
    """What `--backend ray` starts (a local Ray: raylet, agents) ends with a driver killed by kill -9."""
    proc = subprocess.Popen([sys.executable, "-c", REAPED_DRIVER], cwd=REPO, stdout=subprocess.PIPE, text=True)
    left: list[int] = []
    try:
        left = [int(x) for x in proc.stdout.readline().split()]
        assert len(left) == 2 and all(_alive(p) for p in left)
        time.sleep(1.5)  # the reaper notes the descendants every 0.5 s
        _kill_and_wait(proc, left, 15)
        assert not [p for p in left if _alive(p)], "the driver's descendants outlived it"
    finally:
        _reap(proc, left)
