"""The demo's HLS step: hls.json, the KV260 project and the report section, from a student
checkpoint (the path the demo takes after training) and a workload trace."""

from __future__ import annotations

import json

from tatvpr_hw.lower.hls.demo import hls_demo


def test_hls_demo_from_checkpoint_and_trace(tiny_student, tmp_path):
    from brevitas_models.checkpoint import save_checkpoint
    from sim.trace import synthetic_vit_trace, write_trace
    from tatvpr_hw.config import config_to_dict, parse_config
    from tatvpr_hw.report import render_report

    model, images = tiny_student
    cfg = parse_config({"model": {"backbone": "vit_tiny_patch14_dinov2", "teacher_img_size": 98,
                                  "student_img_size": 98}})
    ckpt = save_checkpoint(tmp_path / "ckpt" / "finetune", model,
                           {"config": config_to_dict(cfg), "role": "student", "stage": "finetune", "step": 3,
                            "seed": 0, "rng": None, "teacher_checkpoint": None})
    trace = write_trace(tmp_path / "trace.npz", synthetic_vit_trace(depth=1, dim=48, tokens=10, heads=2,
                                                                     sparsity=0.4, seed=1))
    run = tmp_path / "run"
    # a DSE winner of another skip mode is not this IP: the demo says so and uses the board's arch
    point = tmp_path / "best_point.json"
    point.write_text(json.dumps({"pe": 16, "simd": 16, "clock_mhz": 200, "skip_mode": "both", "board": "kv260"}))
    summary = hls_demo(run, ckpt, images=images, trace_path=trace, sparsities=(0.0, 0.5), dse_point=point)
    assert "skip_mode 'both' is not one the IP builds ('act', 'none')" in summary["design_point_note"]
    assert (summary["pe"], summary["simd"]) == (32, 32)
    data = json.loads((run / "hls.json").read_text())
    assert data == json.loads(json.dumps(summary))
    assert data["bit_exact"] is True and data["cycles_match"] is True
    assert "finetune" in data["source"]
    assert [(r["sparsity"], r["granularity"], r["fmt"]) for r in data["layers"]] == [
        (0.0, "token", "ternary2"), (0.0, "token", "ternary1.6"), (0.5, "token", "ternary2"),
        (0.5, "token", "ternary1.6"), (0.5, "bank", "ternary2")]
    dense, sparse = data["layers"][0], data["layers"][2]
    assert sparse["chunk_cycles_total"] < dense["chunk_cycles_total"]
    # KV260's default arch: B = SIMD = 32 banks, one lane each; at s = 0.5 an unstructured top-k
    # mask puts several kept channels into one bank: cycles lost to conflicts (vs one bank of
    # SIMD ports), counted by the simulator and run by the C-sim (cycles_match above)
    assert (data["banks"], data["ports"]) == (32, 1)
    assert sparse["conflict_cycles_total"] > 0 and dense["conflict_cycles_total"] >= 0
    # the same layer with bank-granularity top-k (groups = the IP's 32 banks): balanced banks
    bank = data["layers"][4]
    assert bank["conflict_cycles_total"] < sparse["conflict_cycles_total"]
    assert bank["chunk_cycles_total"] < sparse["chunk_cycles_total"]
    assert len(data["trace_layers"]) == 4 and all(r["bit_exact"] for r in data["trace_layers"])
    bp = data["board_project"]
    assert bp["board"] == "kv260" and bp["sample_bit_exact"] is True
    assert "xck26-sfvc784-2LV-c" in (run / bp["dir"] / "vivado.tcl").read_text()

    html = render_report(run).read_text()
    assert "HLS IP: packed-ternary sparse GEMM" in html and "backbone.blocks.0.mlp.fc1" in html
    assert "could not be rendered" not in html


def test_hls_demo_on_a_skip_mode_none_point(tiny_student, tmp_path):
    """Issue 15: a DSE winner of skip mode none is built as the IP's none variant: the demo's
    layers run on it bit-exactly with the simulator's none-mode cycles (ceil(K / SIMD) a token)."""
    model, images = tiny_student
    point = tmp_path / "best_point.json"
    point.write_text(json.dumps({"pe": 16, "simd": 16, "clock_mhz": 200, "skip_mode": "none", "board": "kv260"}))
    summary = hls_demo(tmp_path / "run", None, model=model, images=images, sparsities=(0.0, 0.5), dse_point=point)
    assert summary["design_point_note"] is None and (summary["pe"], summary["simd"]) == (16, 16)
    assert summary["bit_exact"] is True and summary["cycles_match"] is True
    dense, sparse = summary["layers"][0], summary["layers"][2]
    # fc1 of the tiny student: K = 192 at SIMD 16 = 12 cycles a token, 50 tokens, whatever the sparsity
    assert dense["chunk_cycles_per_fold"] == sparse["chunk_cycles_per_fold"] == 50 * 12
    assert sparse["conflict_cycles_total"] == 0
    assert summary["board_project"]["sample_bit_exact"] is True
