"""The three stages chained on a tiny run with different teacher / student resolutions."""

from __future__ import annotations

import csv

import torch

from brevitas_models.checkpoint import load_checkpoint
from tatvpr_hw.training import run_stage, stage_paths


def test_chain_mixed_resolution_and_frozen_parts(tiny_cfg):
    one = {"max_steps": 1, "lr": 1e-3}
    cfg = tiny_cfg(teacher=one, distill=dict(one, distill_layers="all", sparsity_range=(0.2, 0.5)),
                   finetune={"max_steps": 2, "lr": 1e-2, "trainable_blocks": 2,
                             "sparsity_range": (0.1, 0.6)})
    cfg.model.teacher_img_size = 42  # 3x3 patch grid; the student stays at 28 px (2x2)
    final = run_stage(cfg, "all", progress=False)
    assert final == stage_paths(cfg, "finetune")["final"]
    out = cfg.train.out_dir
    init, meta_init = load_checkpoint(out / "init.safetensors")
    distill, meta_d = load_checkpoint(out / "distill.safetensors")
    tuned, meta_f = load_checkpoint(final)
    assert (meta_init["stage"], meta_d["stage"], meta_f["stage"]) == ("init", "distill", "finetune")
    assert meta_d["role"] == meta_f["role"] == "student"
    # stage 1 calibrated the int8 input thresholds away from their initial 1.0
    thr = [v for k, v in init.items() if k.endswith("scaling_impl.value")]
    assert thr and any(abs(float(t) - 1.0) > 1e-3 for t in thr)
    # distillation moved the backbone
    assert not torch.equal(init["backbone.blocks.0.attn.qkv.linear.weight"],
                           distill["backbone.blocks.0.attn.qkv.linear.weight"])
    # fine-tuning: head and the last 2 of 4 blocks trained, the rest frozen exactly
    for k in distill:
        frozen = k.startswith(("backbone.patch_embed", "backbone.pos_embed", "backbone.cls_token",
                               "backbone.blocks.0.", "backbone.blocks.1."))
        if frozen:
            assert torch.equal(distill[k], tuned[k]), k
    assert not torch.equal(distill["backbone.blocks.3.mlp.fc1.linear.weight"],
                           tuned["backbone.blocks.3.mlp.fc1.linear.weight"])
    assert any(not torch.equal(distill[k], tuned[k]) for k in distill if k.startswith("head."))
    # every distillation step drew its sparsity from the configured range
    logs = sorted((stage_paths(cfg, "distill")["dir"] / "logs").glob("version_*/metrics.csv"))
    rows = list(csv.DictReader(logs[-1].open()))
    draws = [float(r["sparsity"]) for r in rows if r.get("sparsity")]
    assert draws and all(0.2 <= s <= 0.5 for s in draws)


def test_teacher_stage_loads_a_real_checkpoint_instead_of_training(tiny_cfg, tmp_path):
    import lightning as L
    from safetensors.torch import save_file

    from brevitas_models.model import build_model

    cfg = tiny_cfg()
    L.seed_everything(123, verbose=False)
    donor = build_model(cfg.model, student=False)
    # a foreign file: timm names, plain safetensors without our JSON
    foreign = tmp_path / "foreign_teacher.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(foreign))
    cfg.model.teacher_checkpoint = foreign
    path = run_stage(cfg, "teacher", progress=False)
    sd, meta = load_checkpoint(path)
    assert meta["step"] == 0 and meta["loaded_from"] == str(foreign)
    assert meta["teacher_checkpoint"] == str(foreign)
    for k, v in donor.state_dict().items():
        assert torch.equal(sd[k], v), k
    assert not stage_paths(cfg, "teacher")["dir"].exists()  # nothing trained
