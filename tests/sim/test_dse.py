"""Design-space sweeps: spec validation, resume after a kill, Pareto, Ray == local, outputs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim import dse
from sim.errors import SimInputError
from sim.trace import synthetic_vit_trace, write_trace

REPO = Path(__file__).resolve().parents[2]

# A stand-in for sim.simulate (same inputs: the real arch with overrides and the real trace),
# importable by spawned / Ray workers through PYTHONPATH. Deterministic.
STANDIN = '''
import math, os, time
from sim.arch import load_arch, with_overrides
_A = {}
def evaluate(arch_path, overrides, trace):
    if os.environ.get("DSE_TEST_SLEEP"):
        time.sleep(float(os.environ["DSE_TEST_SLEEP"]))
    if arch_path not in _A:
        _A[arch_path] = load_arch(arch_path)
    arch = with_overrides(_A[arch_path], overrides)
    c = arch.spec.compute
    cycles = 0
    for op in trace.ternary_ops():
        nnz = op.act_nnz_per_row() if c.skip_mode != "none" else [op.k] * op.m
        cycles += math.ceil(op.n / c.pe) * sum(max(1, math.ceil(int(x) / c.simd)) for x in nnz)
    lat = cycles / (arch.spec.clock_mhz * 1e3)
    energy = 1e-6 * cycles * c.pe * c.simd * 0.01 + 0.5 * lat
    return {"cycles": cycles, "latency_ms": lat, "queries_per_s": 1e3 / lat, "energy_mj": energy,
            "resources": {"used": {"lut": 60 * c.pe * c.simd, "dsp": c.pe},
                          "available": {"lut": 117120, "dsp": 1248}}}
'''
EVAL = "dse_standin:evaluate"


@pytest.fixture()
def standin(tmp_path, monkeypatch):
    mod_dir = tmp_path / "standin"
    mod_dir.mkdir()
    (mod_dir / "dse_standin.py").write_text(STANDIN)
    monkeypatch.syspath_prepend(str(mod_dir))
    pp = os.pathsep.join([str(mod_dir), str(REPO), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", pp)
    return mod_dir


@pytest.fixture()
def traces(tmp_path):
    out = []
    for s in (0.0, 0.5):
        p = tmp_path / f"trace_s{s}.npz"
        write_trace(p, synthetic_vit_trace(depth=1, dim=64, tokens=10, heads=2, sparsity=s, seed=1))
        out.append(p)
    return out


def _sweep(tmp_path, text: str) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(textwrap.dedent(text))
    return p


SMALL = """
arch: kv260
board: kv260
axes:
  pe: [8, 16, 64]
  simd: [16, 32, 128]
  skip_mode: [none, act]
sampling: {mode: grid}
"""


def test_spec_validation_names_the_problem(tmp_path):
    with pytest.raises(SimInputError, match=r"unknown key\(s\) 'axis'"):
        dse.load_sweep(_sweep(tmp_path, "arch: kv260\naxis: {pe: [8]}\n"))
    with pytest.raises(SimInputError, match="unknown axis 'lanes'"):
        dse.load_sweep(_sweep(tmp_path, "arch: kv260\naxes: {lanes: [8]}\n"))
    with pytest.raises(SimInputError, match="sampling.mode = 'sobol'"):
        dse.load_sweep(_sweep(tmp_path, "arch: kv260\nsampling: {mode: sobol}\n"))
    with pytest.raises(SimInputError, match="integer n >= 1"):
        dse.load_sweep(_sweep(tmp_path, "arch: kv260\nsampling: {mode: random}\n"))
    with pytest.raises(SimInputError, match="arch 'nope' not found"):
        dse.load_sweep(_sweep(tmp_path, "arch: nope\n"))
    with pytest.raises(SimInputError, match="axes.pe .* number > 0"):
        dse.load_sweep(_sweep(tmp_path, "arch: kv260\naxes: {pe: [0, 8]}\n"))
    with pytest.raises(SimInputError, match="comes from the traces"):
        dse.load_sweep(_sweep(tmp_path, "arch: kv260\naxes: {sparsity: [0.1]}\n"))


def test_grid_and_random_sampling(tmp_path):
    spec = dse.load_sweep(_sweep(tmp_path, SMALL))
    pts = spec.points()
    assert len(pts) == 18 and pts[0] == {"pe": 8, "simd": 16, "skip_mode": "none"}
    assert pts[1] == {"pe": 8, "simd": 16, "skip_mode": "act"}  # last axis fastest
    assert len({json.dumps(p, sort_keys=True) for p in pts}) == 18
    rnd = dse.load_sweep(_sweep(tmp_path, SMALL.replace("{mode: grid}", "{mode: random, n: 7, seed: 3}")))
    a, b = rnd.points(), rnd.points()
    assert a == b and len(a) == 7 and all(p in pts for p in a)
    rnd.seed = 4
    assert rnd.points() != a


def test_pareto_mask():
    c = np.array([[1, 5, 1], [2, 2, 1], [3, 3, 1], [1, 5, 1], [5, 1, 2]], dtype=float)
    # row 2 is dominated by row 1; the duplicates 0 and 3 both stay
    assert dse.pareto_mask(c).tolist() == [True, True, False, True, True]


def test_sweep_outputs_and_pareto(tmp_path, standin, traces):
    spec = dse.load_sweep(_sweep(tmp_path, SMALL))
    res = dse.run_sweep(spec, traces, tmp_path / "out", workers=1, evaluator=EVAL, progress=False)
    t = res.table
    assert len(t) == 2 * 18 and list(t["index"]) == list(range(36))
    assert sorted(t["sparsity"].unique()) == [0.0, 0.5]
    # pe=64 x simd=128 needs 60*8192 LUTs > 117,120: does not fit, never on the front
    big = (t["pe"] == 64) & (t["simd"] == 128)
    assert not t.loc[big, "fits"].any() and not t.loc[big, "pareto"].any()
    # every fitting point off the front is dominated by a front point of the same trace
    for _, g in t[t["fits"]].groupby("trace"):
        front = g[g["pareto"]][list(dse.PARETO_OBJECTIVES)].to_numpy()
        for _, r in g[~g["pareto"]].iterrows():
            x = r[list(dse.PARETO_OBJECTIVES)].to_numpy(dtype=float)
            assert np.any(np.all(front <= x, axis=1) & np.any(front < x, axis=1))
    # sparsity lowers latency under act skipping (same design point, more zeros)
    act = t[(t["skip_mode"] == "act") & (t["pe"] == 8) & (t["simd"] == 16)].set_index("sparsity")
    assert act.loc[0.5, "latency_ms"] < act.loc[0.0, "latency_ms"]
    pq = pd.read_parquet(tmp_path / "out" / "results.parquet")
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(pq) == len(csv) == 36 and list(pq["key"]) == list(t["key"])
    png = (tmp_path / "out" / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    best = dse.read_best_point(tmp_path / "out" / "best_point.json")
    fit = t[t["fits"]]
    edp = fit["latency_ms"] * fit["energy_mj"]
    assert best["metrics"]["latency_ms"] * best["metrics"]["energy_mj"] == pytest.approx(edp.min())
    assert best["board"] == "kv260" and best["weight_format"] == "ternary2"  # from the base arch
    assert best["clock_mhz"] == 250 and best["pareto"] is True


def _table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv")


def test_killed_sweep_resumes_to_the_same_table(tmp_path, standin, traces):
    sweep = _sweep(tmp_path, SMALL)
    ref = dse.run_sweep(dse.load_sweep(sweep), traces, tmp_path / "ref", workers=1, evaluator=EVAL,
                        progress=False)
    out = tmp_path / "killed"
    code = ("import sys; from sim import dse; "
            f"dse.run_sweep(dse.load_sweep({str(sweep)!r}), {[str(t) for t in traces]!r}, {str(out)!r}, "
            f"workers=1, chunk=1, evaluator={EVAL!r}, progress=False)")
    env = dict(os.environ, DSE_TEST_SLEEP="0.05")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    log = out / "points.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len([l for l in log.read_text().splitlines() if l.strip()])
    assert 5 <= n_done < 36, n_done
    with log.open("a") as fh:  # a torn line, as if killed mid-write
        fh.write('{"key": "abc", "latency')
    res = dse.run_sweep(dse.load_sweep(sweep), traces, out, workers=1, evaluator=EVAL, progress=False)
    assert res.skipped == n_done and res.evaluated == 36 - n_done
    pd.testing.assert_frame_equal(_table(out), _table(tmp_path / "ref"))
    assert ref.best == res.best
    # a third run does nothing new
    again = dse.run_sweep(dse.load_sweep(sweep), traces, out, workers=1, evaluator=EVAL, progress=False)
    assert again.evaluated == 0 and again.skipped == 36


def test_partial_then_parallel_equals_serial(tmp_path, standin, traces):
    spec = dse.load_sweep(_sweep(tmp_path, SMALL))
    serial = dse.run_sweep(spec, traces, tmp_path / "a", workers=1, evaluator=EVAL, progress=False)
    part = dse.run_sweep(spec, traces, tmp_path / "b", workers=1, evaluator=EVAL, progress=False, limit=10)
    assert part.evaluated == 10 and not (tmp_path / "b" / "best_point.json").exists()
    par = dse.run_sweep(spec, traces, tmp_path / "b", workers=2, chunk=3, evaluator=EVAL, progress=False)
    assert par.evaluated == 26
    pd.testing.assert_frame_equal(_table(tmp_path / "a"), _table(tmp_path / "b"))


def test_ray_backend_equals_local(tmp_path, standin, traces):
    import ray  # the dse extra that make test installs: never skipped
    spec = dse.load_sweep(_sweep(tmp_path, SMALL))
    dse.run_sweep(spec, traces, tmp_path / "local", workers=1, evaluator=EVAL, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    try:
        dse.run_sweep(spec, traces, tmp_path / "ray", backend="ray", workers=2, evaluator=EVAL,
                      progress=False)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(_table(tmp_path / "ray"), _table(tmp_path / "local"))
    assert json.loads((tmp_path / "ray" / "best_point.json").read_text()) == \
        json.loads((tmp_path / "local" / "best_point.json").read_text())


def test_cli_bad_sweep_is_a_user_error(tmp_path, traces, capsys):
    from tatvpr_hw.cli import main
    bad = _sweep(tmp_path, "arch: kv260\naxes: {pe: [8]}\nsampling: {mode: grid, n: 3}\n")
    rc = main(["dse", "--space", str(bad), "--trace", str(traces[0]), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "sampling.n is only used with mode: random" in capsys.readouterr().err


def test_default_evaluator_is_sim_simulate(tmp_path, traces):
    """With B1's engine: each row equals sim.simulate(with_overrides(arch, point), trace)."""
    from sim.arch import load_arch, with_overrides
    from sim.simulator import simulate
    from sim.trace import read_trace

    sweep = _sweep(tmp_path, """
        arch: kv260
        axes: {pe: [8, 16], skip_mode: [none, act]}
        """)
    res = dse.run_sweep(dse.load_sweep(sweep), traces[:1], tmp_path / "o", workers=1, progress=False)
    base = load_arch("kv260")
    tr = read_trace(traces[0])
    for _, row in res.table.iterrows():
        want = simulate(with_overrides(base, {"compute.pe": int(row["pe"]),
                                              "compute.skip_mode": row["skip_mode"]}), tr).to_dict()
        assert row["cycles"] == want["cycles"] and row["energy_mj"] == pytest.approx(want["energy_mj"])
        assert bool(row["fits"]) == bool(want["fits"])
        util = want["resources"]["utilisation"]
        assert row["resource_frac"] == pytest.approx(max(util.values()))
        assert row["resource_mean"] == pytest.approx(sum(util.values()) / len(util))
    none, act = (res.table[res.table["pe"] == 8].set_index("skip_mode").loc[k, "cycles"] for k in ("none", "act"))
    # s = 0: act skips nothing but pays its bank scheduler's cycle in each of 4 layers, and its top-k on the
    # vector unit (schedule.topk fabric, the default; `none` gets the same passes without the emit) emits the
    # act stream: ceil(SIMD 32 / 16 lanes) = 2 cycles a chunk; a token's chunks = its fullest bank (32 banks
    # of one lane), counted from the masks
    chunks = 0
    for op in tr.ternary_ops():
        per_bank = np.asarray(op.act_mask, bool).reshape(op.m, -1, 32).sum(axis=1)
        chunks += int(np.maximum(per_bank.max(axis=1), 1).sum())
    assert chunks == 10 * (2 + 2 + 2 + 8)  # 10 tokens, K = 64, 64, 64, 256, every channel kept at s = 0
    assert act == none + 4 + 2 * chunks


def test_cli_dse_end_to_end(tmp_path, traces, capsys):
    from tatvpr_hw.cli import main

    sweep = _sweep(tmp_path, """
        arch: kv260
        board: kv260
        axes: {pe: [8, 16], simd: [16, 32]}
        sampling: {mode: random, n: 3, seed: 1}
        """)
    args = ["dse", "--space", str(sweep), "--trace", str(traces[0]), "--trace", str(traces[1]),
            "--out", str(tmp_path / "o"), "--workers", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 points (6 run now, 0 resumed)" in out
    best = dse.read_best_point(tmp_path / "o" / "best_point.json")
    from sim.arch import load_arch
    base = load_arch("kv260").spec
    assert best["pe"] in (8, 16) and best["simd"] in (16, 32)
    assert best["skip_mode"] == base.compute.skip_mode and best["clock_mhz"] == base.clock_mhz
    assert main(args) == 0
    assert "6 points (0 run now, 6 resumed)" in capsys.readouterr().out


def test_bad_axis_value_fails_before_the_sweep_and_bad_combinations_are_rows(tmp_path, traces, standin):
    bad = _sweep(tmp_path, "arch: kv260\naxes: {skip_mode: [act, rows]}\n")
    with pytest.raises(SimInputError, match="axes.skip_mode value 'rows'"):
        dse.run_sweep(dse.load_sweep(bad), traces[:1], tmp_path / "o", workers=1, progress=False)
    assert not (tmp_path / "o" / "points.jsonl").exists() or not (tmp_path / "o" / "points.jsonl").read_text()
    # a value the arch rejects, slipped past the check (a custom evaluator skips it): an invalid row, not
    # evaluated, its reason without the file and overrides
    spec = dse.load_sweep(_sweep(tmp_path, "arch: kv260\naxes: {pe: [8, 16]}\n"))
    spec.axes["pe"] = [8, -1]
    res = dse.run_sweep(spec, traces[:1], tmp_path / "p", workers=1, evaluator=EVAL, progress=False)
    t = res.table.set_index("pe")
    assert t.loc[8, "error"] == "" and t.loc[8, "invalid"] == "" and t.loc[-1, "error"] == ""
    assert t.loc[-1, "invalid"].startswith("compute.pe = -1: ") and not t.loc[-1, "fits"]
    assert math.isnan(t.loc[-1, "latency_ms"]) and res.best["pe"] == 8


def test_misfit_row_names_class_and_buffer(tmp_path, traces):
    """Real simulator: PE 32 x SIMD 64 in `weight` mode does not fit the KV260 (by hand: 64
    weight-stream memories of 64 x (2 + 12) = 896 bits x 48 words (yosys' rule: 128 RAM64M8 of 7 bits, 8 LUTs) = 65,536
    LUTRAM LUTs + 4,096 token-copy memories of 8 bits x 48 (2 RAM64M8) = 65,536 LUTs: 131,072 LUTs, over the
    board's 117,120 before any datapath, whose LUTs are the resource model's, sim/boards/resource_model.yaml);
    `none` (no token copies, no bank scheduler) fits. The row says which class and which buffers."""
    sweep = _sweep(tmp_path, """
        arch: kv260
        board: kv260
        axes: {pe: [32], simd: [64], skip_mode: [none, weight]}
        """)
    res = dse.run_sweep(dse.load_sweep(sweep), traces[:1], tmp_path / "o", workers=1, progress=False)
    t = res.table.set_index("skip_mode")
    assert bool(t.loc["none", "fits"]) and t.loc["none", "misfit"] == ""
    assert not bool(t.loc["weight", "fits"]) and not bool(t.loc["weight", "pareto"])
    why = t.loc["weight", "misfit"]
    used = int(why.split(" of ")[0].removeprefix("lut: ").replace(",", ""))
    datapath = int(why.rsplit("datapath ", 1)[1].replace(",", ""))
    assert why.startswith("lut: ") and " of 117,120; largest: weights 65,536 (65,536 lutram), act_gather 65,536 " \
        "(65,536 lutram), datapath " in why, why
    assert used >= 65_536 + 65_536 + datapath > 131_072 > 117_120
    assert res.best["skip_mode"] == "none"
    saved = pd.read_csv(tmp_path / "o" / "results.csv").set_index("skip_mode")
    assert saved.loc["weight", "misfit"] == why


def test_gather_axes_sweep_dotted_keys(tmp_path, traces):
    """compute.gather.banks / ports are dotted axes; ports 2 alone is invalid on the base arch
    (banks = simd = 32: 32 x 2 does not divide 32) but valid with banks 16, so the sweep runs."""
    spec = dse.load_sweep(REPO / "sim" / "sweeps" / "kv260_gather.yaml")
    assert spec.paths["compute.gather.banks"] == "compute.gather.banks"
    dse.check_axes(spec)
    bad = dse.load_sweep(_sweep(tmp_path, """
        arch: kv260
        axes: {simd: [32], compute.gather.banks: [32], compute.gather.ports: [1, 2]}
        """))
    with pytest.raises(SimInputError, match="axes.compute.gather.ports value 2"):
        dse.check_axes(bad)
    small = dse.load_sweep(_sweep(tmp_path, """
        arch: kv260
        axes: {simd: [32], compute.gather.banks: [8, 16], compute.gather.ports: [1, 2]}
        """))
    res = dse.run_sweep(small, traces[:1], tmp_path / "g", workers=1, progress=False)
    t = res.table
    assert len(t) == 4 and (t["error"] == "").all()
    # banks 8, ports 1: R = 4 replicas of the weight banks; banks 16 ports 2: R = 1
    assert t["compute.gather.banks"].tolist() == [8, 8, 16, 16]


def test_demo_sweep_best_point_fits_under_80_percent(tmp_path):
    """The demo's sweep (sim/sweeps/kv260_small.yaml) on a tiny-student-shaped trace: its best
    point fits the KV260 at <= 80 % of every class under the buffer model."""
    from sim.arch import load_arch, with_overrides
    from sim.resources import estimate_resources

    p = tmp_path / "trace_s0.4.npz"
    write_trace(p, synthetic_vit_trace(depth=1, dim=192, tokens=50, heads=3, sparsity=0.4, seed=0))
    spec = dse.load_sweep(REPO / "sim" / "sweeps" / "kv260_small.yaml")
    res = dse.run_sweep(spec, [p], tmp_path / "o", workers=1, progress=False)
    best = res.best
    arch = with_overrides(load_arch("kv260"), best["overrides"])
    r = estimate_resources(arch)
    assert r["fits"] and all(u <= 0.8 for u in r["utilisation"].values()), r["utilisation"]
    t = res.table
    # every rejected point says why (a class over 80 %) or was refused by the simulator
    rejected = t[~t["fits"].astype(bool)]
    assert ((rejected["misfit"] != "") | (rejected["error"] != "") | (rejected["invalid"] != "")).all()


def test_rows_say_what_bound_each_point(tmp_path, traces):
    """The schedule columns: critical resource, busy cycles per unit and DRAM port, cycles saved."""
    from sim.arch import load_arch, with_overrides
    from sim.simulator import simulate
    from sim.trace import read_trace

    sweep = _sweep(tmp_path, """
        arch: kv260
        axes: {overlap: [none, pipelined], tile_tokens: [4]}
        """)
    res = dse.run_sweep(dse.load_sweep(sweep), traces[:1], tmp_path / "o", workers=1, progress=False)
    tr = read_trace(traces[0])
    t = res.table.set_index("overlap")
    for mode in ("none", "pipelined"):
        want = simulate(with_overrides(load_arch("kv260"), {"schedule.overlap": mode, "schedule.tile_tokens": 4}),
                        tr).to_dict()
        row = t.loc[mode]
        for unit, c in want["cycles_by_unit"].items():
            assert row[f"busy_{unit}"] == c
        assert row["critical"] == want["schedule"]["critical"]
        assert row["busy_dram_port"] == want["schedule"]["dram_cycles"] > 0
    assert t.loc["none", "saved_cycles"] == 0
    assert t.loc["pipelined", "saved_cycles"] == t.loc["pipelined", "busy_ternary_array"] + \
        t.loc["pipelined", "busy_int8_unit"] + t.loc["pipelined", "busy_vector_unit"] - t.loc["pipelined", "cycles"] > 0
    best = json.loads((tmp_path / "o" / "best_point.json").read_text())
    assert {"critical", "saved_cycles", "busy_ternary_array", "busy_dram_port"} <= set(best["metrics"])


def test_dram_mb_column_counts_the_handoffs():
    # the table's dram_mb is the result's dram_bytes, hand-offs through DRAM included (the same number
    # `tatvpr sim --json` and the report print); a result without dram_bytes has none
    from sim.arch import load_arch, with_overrides
    from sim.simulator import simulate

    tr = synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, sparsity=0.4, seed=0)
    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined", "schedule.handoffs": "dram"})
    r = simulate(arch, tr).to_dict()
    row = dse.point_metrics(r)
    assert r["dram_handoff_bytes"] > 0
    assert row["dram_mb"] == pytest.approx((r["dram_weight_bytes"] + r["dram_act_bytes"] + r["dram_int8_weight_bytes"]
                                            + r["dram_spill_bytes"] + r["dram_handoff_bytes"]) / 1e6, rel=1e-12)
    assert "busy_host" in row and row["busy_host"] > 0
    assert "dram_mb" not in dse.point_metrics({"cycles": 1, "latency_ms": 1.0, "queries_per_s": 1.0, "energy_mj": 1.0})


TOPK_RULE = ("schedule: schedule.topk = 'host' needs schedule.handoffs = 'dram' (the host, the ARM, only sees "
             "activations handed off through DRAM; with handoffs 'onchip' the top-k is on the fabric); allowed: "
             "schedule.topk: fabric, or schedule.handoffs: dram")


def test_invalid_combinations_are_counted_apart_from_failures(tmp_path, traces, caplog):
    """The real simulator on 2 x 2 x 2 = 8 points: topk host x handoffs onchip is a combination the arch
    rejects (2 rows, k_max either): invalid, not simulated, one reason; k_max 32 under the trace's K = 64
    layers is a valid arch the simulator refuses (the 3 other (handoffs, topk) pairs): failed; 3 run."""
    import logging

    sweep = _sweep(tmp_path, """
        arch: kv260
        axes: {schedule.handoffs: [onchip, dram], schedule.topk: [host, fabric], buffers.k_max: [32, 768]}
        """)
    with caplog.at_level(logging.INFO, logger="sim.dse"):
        res = dse.run_sweep(dse.load_sweep(sweep), traces[:1], tmp_path / "o", workers=1, progress=False)
    t = res.table
    assert len(t) == 8
    inv = t[t["invalid"] != ""]
    assert inv[["schedule.handoffs", "schedule.topk"]].drop_duplicates().values.tolist() == [["onchip", "host"]]
    assert len(inv) == 2 and (inv["invalid"] == TOPK_RULE).all() and (inv["error"] == "").all()
    assert inv["latency_ms"].isna().all() and not inv["fits"].astype(bool).any() and not inv["pareto"].any()
    failed = t[t["error"] != ""]
    assert len(failed) == 3 and (failed["buffers.k_max"] == 32).all() and (failed["invalid"] == "").all()
    assert failed["error"].str.contains("has K = 64").all()
    ok = t[(t["error"] == "") & (t["invalid"] == "")]
    assert len(ok) == 3 and ok["latency_ms"].notna().all() and (ok["buffers.k_max"] == 768).all()
    # the reason once in the log (info, not a warning), the failures as a warning
    notes = [r for r in caplog.records if "are invalid" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO and "2 of 8 points" in notes[0].getMessage()
    assert TOPK_RULE in notes[0].getMessage()
    assert any(r.levelno == logging.WARNING and "3 of 8 points failed" in r.getMessage() for r in caplog.records)
    saved = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert (saved["invalid"], saved["invalid_reasons"]) == (2, {TOPK_RULE: 2})
    summary = dse.dse_summary(tmp_path / "o")
    assert (summary["points"], summary["failed"], summary["invalid"]) == (8, 3, 2)
    assert summary["invalid_reasons"] == {TOPK_RULE: 2}
    # the saved table keeps the column (a resumed sweep reads it back)
    assert (pd.read_csv(tmp_path / "o" / "results.csv")["invalid"].fillna("") != "").sum() == 2


def test_a_sweep_of_only_invalid_combinations_is_a_user_error(tmp_path, traces, capsys, standin):
    """topk host on the on-chip base arch with nothing to make it valid: refused before the sweep (exit 2,
    one message naming both keys), no folder left behind."""
    from tatvpr_hw.cli import main

    bad = _sweep(tmp_path, "arch: kv260\naxes: {schedule.topk: [host], pe: [8, 16]}\n")
    rc = main(["dse", "--space", str(bad), "--trace", str(traces[0]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "axes.schedule.topk value 'host'" in err and "needs schedule.handoffs = 'dram'" in err
    assert not (tmp_path / "o").exists()
    # with a custom evaluator (no pre-check) every point is invalid: refused after the sweep, named
    spec = dse.load_sweep(bad)
    with pytest.raises(SimInputError, match=r"every design point failed or is invalid; the first: invalid: schedule: "
                                            r"schedule.topk = 'host' needs"):
        dse.run_sweep(spec, traces[:1], tmp_path / "p", workers=1, evaluator=EVAL, progress=False)
