"""`tatvpr eval` end to end with the real tiny models, checkpoints, op counter and footprint."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from tatvpr_hw.cli import main
from tatvpr_hw.config import config_to_dict, parse_config

CFG = {
    "name": "evaltest", "seed": 0,
    "model": {"backbone": "vit_tiny_patch14_dinov2", "teacher_img_size": 28, "student_img_size": 28,
              "head": {"name": "cls", "preset": "tiny"}},
    "data": {"synthetic": {"places": 2, "train_images_per_place": 2, "eval_places": 8, "image_px": 32,
                           "difficulty": 0.3}},
    "eval": {"sparsities": [0.0, 0.5], "batch_size": 8},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from brevitas_models.checkpoint import init_student_from_teacher, save_checkpoint
    from brevitas_models.model import build_model
    from tatvpr_hw.data.synthetic import ensure_benchmark

    tmp = tmp_path_factory.mktemp("evalreal")
    raw = json.loads(json.dumps(CFG))
    raw["data"]["root"] = str(tmp / "syn")
    raw["train"] = {"out_dir": str(tmp / "runs")}
    cfg = parse_config(raw)
    ensure_benchmark(cfg)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, student=False)
    student = build_model(cfg.model, student=True)
    init_student_from_teacher(student, teacher)
    meta = {"config": config_to_dict(cfg), "role": "teacher", "stage": "teacher", "step": 0, "seed": 0,
            "rng": {}, "teacher_checkpoint": None}
    ck = tmp / "ck"
    save_checkpoint(ck / "teacher", teacher, meta)
    # teacher_checkpoint null: eval finds teacher.safetensors beside the student
    save_checkpoint(ck / "distill", student, meta | {"role": "student", "stage": "distill"})
    cfg_path = tmp / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return {"tmp": tmp, "cfg": cfg_path, "student": ck / "distill", "teacher": ck / "teacher",
            "teacher_sd": {k: v.clone() for k, v in teacher.state_dict().items()}}


@pytest.fixture(scope="module")
def evaluated(checkpoints):
    """`tatvpr eval` once for the module: (run folder, printed text)."""
    import contextlib
    import io

    out = checkpoints["tmp"] / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["eval", "--config", str(checkpoints["cfg"]), "--checkpoint", str(checkpoints["student"]),
                   "--out", str(out), "--sparsity", "0,0.5"])
    assert rc == 0
    return out, buf.getvalue()


def _student_records(out):
    return {(r["granularity"], r["sparsity"]): r
            for r in json.loads((out / "metrics.json").read_text()) if r["model"] == "student"}


def test_eval_command(evaluated):
    out, printed = evaluated
    recs = json.loads((out / "metrics.json").read_text())
    assert [(r["model"], r["granularity"], r["sparsity"]) for r in recs] == [
        ("teacher", None, 0.0), ("teacher_fp16", None, 0.0), ("teacher_int8", None, 0.0),
        *[("student", g, s) for g in ("token", "bank", "tensor") for s in (0.0, 0.5)]]
    by = {(r["model"], r["sparsity"]): r for r in recs if r["granularity"] in (None, "token")}
    # memory: fp32 > fp16 > int8 > ternary; operations fall with sparsity
    mem = [by[k]["memory_mb"] for k in (("teacher", 0.0), ("teacher_fp16", 0.0), ("teacher_int8", 0.0),
                                        ("student", 0.0))]
    assert mem == sorted(mem, reverse=True) and len(set(mem)) == 4
    assert by[("student", 0.5)]["gmacs"] < by[("student", 0.0)]["gmacs"] <= by[("teacher", 0.0)]["gmacs"]
    assert by[("teacher_fp16", 0.0)]["gmacs"] == by[("teacher", 0.0)]["gmacs"]
    html = (out / "index.html").read_text()
    assert "fig2a_recall_vs_gops.png" in html and "teacher_int8" in html
    assert "fig_recall_vs_sim_latency.png" in html and (out / "fig_recall_vs_sim_latency.png").is_file()
    assert "R@1" in printed
    lines = printed.splitlines()
    assert "latency (ms, SIMULATED)" in lines[0]  # a simulated figure is labelled so
    bank = [ln.split() for ln in lines if " bank " in ln]
    assert len(bank) == 2 and all(float(row[-1]) > 0 for row in bank)  # a latency on every student row
    # every student record is simulated: finite, positive; s = 0 is one model for all granularities
    st = {(r["granularity"], r["sparsity"]): r for r in recs if r["model"] == "student"}
    for r in st.values():
        for k in ("sim_latency_ms", "sim_energy_mj", "sim_cycles", "sim_ternary_cycles", "sim_compute_cycles"):
            assert math.isfinite(r[k]) and r[k] > 0, (r["granularity"], r["sparsity"], k)
        assert r["sim_compute_cycles"] <= r["sim_ternary_cycles"] <= r["sim_cycles"]
    assert len({st[(g, 0.0)]["sim_cycles"] for g in ("token", "bank", "tensor")}) == 1
    # skipping zeros saves array cycles at s = 0.5 in every granularity
    for g in ("token", "bank", "tensor"):
        assert st[(g, 0.5)]["sim_compute_cycles"] < st[(g, 0.0)]["sim_compute_cycles"]


@pytest.mark.parametrize("granularity", ["token", "bank"])
def test_eval_sim_equals_an_independent_trace_and_simulation(checkpoints, evaluated, granularity, tmp_path):
    """The record's simulation = `tatvpr trace` (the model built with that granularity from the
    config) on the first query, then sim.simulate on the default arch."""
    from sim.arch import load_arch
    from sim.simulator import simulate
    from sim.trace import read_trace
    from tatvpr_hw.config import load_config
    from tatvpr_hw.tracing import trace_model

    raw = config_to_dict(load_config(checkpoints["cfg"]))
    raw["model"]["sparsity"]["granularity"] = granularity
    cfg = parse_config(raw)
    [path] = trace_model(cfg, checkpoint=checkpoints["student"], sparsity=0.5, out=tmp_path / "t.npz")
    trace = read_trace(path)
    # the trace's masks follow the granularity: at most kept_count per bank group (bank) / token
    from brevitas_models.sparsity import bank_group_sizes, kept_count
    from sim.trace import TernaryLinearOp

    banks = cfg.model.sparsity.banks
    for op in (o for o in trace.ops if isinstance(o, TernaryLinearOp)):
        mask = op.act_mask.astype(bool)
        if granularity == "bank":
            for b, size in enumerate(bank_group_sizes(op.k, banks)):
                assert mask[:, b::banks].sum(1).max() <= kept_count(size, 0.5), (op.name, b)
        else:
            assert mask.sum(1).max() <= kept_count(op.k, 0.5), op.name
    res = simulate(load_arch(), trace)
    rec = _student_records(evaluated[0])[(granularity, 0.5)]
    assert rec["sim_cycles"] == res.summary["cycles"]
    assert rec["sim_latency_ms"] == pytest.approx(res.summary["latency_ms"], rel=1e-5)
    assert rec["sim_energy_mj"] == pytest.approx(res.summary["energy_mj"], rel=1e-5)


def test_load_models_finds_teacher_and_loads_weights(checkpoints):
    from tatvpr_hw.config import load_config
    from tatvpr_hw.evaluation import load_models

    teacher, student = load_models(load_config(checkpoints["cfg"]), checkpoints["student"])
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, checkpoints["teacher_sd"][k]), k
    assert not teacher.training and not student.training


def test_eval_teacher_only(checkpoints):
    out = checkpoints["tmp"] / "teacher_only"
    assert main(["eval", "--config", str(checkpoints["cfg"]), "--checkpoint", str(checkpoints["teacher"]),
                 "--out", str(out)]) == 0
    recs = json.loads((out / "metrics.json").read_text())
    assert [r["model"] for r in recs] == ["teacher", "teacher_fp16", "teacher_int8"]
    assert (out / "index.html").is_file()


def test_eval_missing_checkpoint(checkpoints, capsys):
    assert main(["eval", "--config", str(checkpoints["cfg"]), "--checkpoint", str(checkpoints["tmp"] / "nope"),
                 "--out", str(checkpoints["tmp"] / "bad")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_flow_steps(checkpoints):
    from tatvpr_hw.config import load_config
    from tatvpr_hw.evaluation import flow_step_data, flow_step_eval, flow_step_report
    from tatvpr_hw.flow import FlowContext, NamedStep, run_flow

    cfg = load_config(checkpoints["cfg"])
    cfg.eval.sparsities = [0.0, 0.4]
    ctx = FlowContext(cfg=cfg, run_dir=checkpoints["tmp"] / "flow",
                      results={"finetune": {"checkpoint": str(checkpoints["student"])}})
    data = flow_step_data(ctx)
    assert data["query_images"] == 8 and data["chance_recall@1"] == 12.5
    ev = flow_step_eval(ctx)
    assert ev["checkpoint"] == str(checkpoints["student"])
    assert set(ev["student_recall@1"]) == {"token", "bank", "tensor"}
    assert all(set(v) == {"0.0", "0.4"} for v in ev["student_recall@1"].values())
    assert ev["trained_granularity"] == "token"
    assert ev["target"] is not None and isinstance(ev["target"]["met"], bool)
    assert flow_step_report(ctx)["index"].endswith("index.html")
    # the steps fit the lead's runner
    res = run_flow([NamedStep("report", flow_step_report, "report")], ctx)
    assert res is not None
