"""The Sparse-TeTRA reference recipe's training switches (configs/sparse_tetra_reference*.yaml,
docs/recipe.md) and its tiny twin through `tatvpr train` / `tatvpr eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from brevitas_models.model import build_model
from brevitas_models.quant import ternary_layers
from tatvpr_hw.config import parse_config
from tatvpr_hw.training.modules import DistillStage, MetricStage, step_sparsity, trainable_names

ROOT = Path(__file__).resolve().parents[2]


def _twin(bench_root, out: Path, steps: int = 2) -> dict:
    c = yaml.safe_load((ROOT / "configs/sparse_tetra_reference_tiny.yaml").read_text())
    c["model"]["teacher_checkpoint"] = str(ROOT / "checkpoints/tiny_teacher.safetensors")
    c["data"].update({"root": str(bench_root), "places_per_batch": 2, "images_per_place": 2,
                      "synthetic": {"places": 8, "train_images_per_place": 2, "eval_places": 2,
                                    "image_px": 32, "seed": 3}})
    c["train"].update({"out_dir": str(out), "accelerator": "cpu", "devices": 1})
    c["train"]["distill"]["max_steps"] = steps
    c["train"]["finetune"]["max_steps"] = steps
    c["train"]["finetune"]["places_per_batch"] = 4   # its own batch, larger than distillation's (8 places here)
    c["eval"]["sparsities"] = [0.0, 0.4]
    return c


def test_curriculum_upper_end_grows_with_the_epoch():
    # U(0.1, 0.1 + 0.5 * epoch / 8): epoch 0 draws exactly 0.1; epoch 4 stays within [0.1, 0.35]
    assert {step_sparsity(0, g, (0.1, 0.6), curriculum=(0, 8)) for g in range(20)} == {0.1}
    e4 = [step_sparsity(0, g, (0.1, 0.6), curriculum=(4, 8)) for g in range(300)]
    assert min(e4) >= 0.1 and max(e4) <= 0.35 and max(e4) > 0.34
    uni = [step_sparsity(0, g, (0.1, 0.6)) for g in range(300)]
    assert max(uni) > 0.59


def _module(cfg_dict, **kw):
    cfg = parse_config(cfg_dict, "<test>")
    model = build_model(cfg.model, student=True)
    names = trainable_names(model, "finetune", trainable_blocks=2)
    return model, MetricStage(model, names, dataset=None, places_per_batch=2, lr=2e-4, weight_decay=1e-4,
                              warmup_steps=2, seed=0, **kw)


def test_constant_lr_and_weight_decay_on_every_tensor(bench_root, tmp_path):
    c = _twin(bench_root, tmp_path)
    model, ref = _module(c, lr_schedule="constant", weight_decay_on="all")
    ref.total_steps = 10
    conf = ref.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-4
    assert any(p.ndim == 1 for p in opt.param_groups[0]["params"])     # norms / biases decayed too
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [2e-4] * 5
    _, own = _module(c)  # the project's: warm-up 1/2, 2/2, then cosine; 1-D tensors not decayed
    own.total_steps = 10
    conf = own.configure_optimizers()
    opt = conf["optimizer"]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_finetune_trains_last_two_blocks_final_norm_and_head(bench_root, tmp_path):
    cfg = parse_config(_twin(bench_root, tmp_path), "<test>")
    s = build_model(cfg.model, student=True)
    names = trainable_names(s, "finetune", trainable_blocks=2)
    blocks = {int(n.split(".")[2]) for n in names if n.startswith("backbone.blocks.")}
    assert blocks == {2, 3}
    assert {"backbone.norm.weight", "backbone.norm.bias"} <= set(names)     # final norm feeds the head
    assert any(n.startswith("head.") for n in names)
    assert not any(n.startswith(("backbone.patch_embed", "backbone.pos_embed", "backbone.cls_token")) for n in names)


def test_final_patch_loss_by_hand(bench_root, tmp_path):
    torch.manual_seed(0)
    cfg = parse_config(_twin(bench_root, tmp_path), "<test>")
    s, t = build_model(cfg.model, student=True), build_model(cfg.model, student=False)
    for m in (s, t):
        m.eval()
    mod = DistillStage(s, t, [0], target="final_patch", dataset=None, places_per_batch=2, lr=1e-3,
                       weight_decay=0.0, warmup_steps=0, seed=0)
    assert mod.layers == [3]
    x = torch.randn(2, 3, 56, 56)
    # teacher: last block's tokens WITHOUT the final norm, class token dropped (98 px: 7 x 7)
    tb = t.backbone
    tt = F.interpolate(x, size=(98, 98), mode="bilinear", align_corners=False, antialias=True)
    h = tb._pos_embed(tb.patch_embed(tt))
    for blk in tb.blocks:
        h = blk(h)
    t_patch = h[:, 1:]
    # student: after its final norm, class token dropped (112 px, patch 16: 7 x 7)
    sb = s.backbone
    ss = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    g = sb._pos_embed(sb.patch_embed(ss))
    for blk in sb.blocks:
        g = blk(g)
    s_patch = sb.norm(g)[:, 1:]
    got_s, got_t = mod.final_patch_tokens(x)
    assert got_s.shape == got_t.shape == (2, 49, 192)
    assert torch.allclose(got_t, t_patch, atol=1e-5) and torch.allclose(got_s, s_patch, atol=1e-5)
    assert float(F.mse_loss(got_s, got_t).detach()) == pytest.approx(float(((s_patch - t_patch) ** 2).mean().detach()), rel=1e-5)
    # the final norm is trained by this loss; the head is not
    assert "backbone.norm.weight" in mod.trainable and not any(n.startswith("head.") for n in mod.trainable)


def test_reference_twin_trains_and_evaluates_through_the_cli(bench_root, tmp_path):
    from brevitas_models.checkpoint import load_checkpoint
    from tatvpr_hw.cli import main

    out = tmp_path / "run"
    p = tmp_path / "ref.yaml"
    p.write_text(yaml.safe_dump(_twin(bench_root, out)))
    assert main(["train", "--config", str(p), "--stage", "all"]) == 0
    # random init: the stage-1 student is not the teacher (different structure and weights)
    init, _ = load_checkpoint(out / "init.safetensors")
    teacher, _ = load_checkpoint(out / "teacher.safetensors")
    assert "backbone.patch_embed.pre_norm.weight" in init and "backbone.patch_embed.pre_norm.weight" not in teacher
    meta = json.loads((out / "distill.json").read_text())["meta"]
    assert meta["distill_target"] == "final_patch" and meta["student_init"] == "random"
    # the reference's random init: position embedding and class token N(0, 1) (50 x 192 draws),
    # not timm's std 0.02 / 1e-6; linear biases U(+-1/sqrt(192)), not timm's zeros
    assert meta["random_init"] == "sparse_tetra"
    assert abs(float(init["backbone.pos_embed"].std()) - 1.0) < 0.036
    assert 0.7 < float(init["backbone.cls_token"].std()) < 1.3
    assert 0.036 < float(init["backbone.blocks.0.mlp.fc1.linear.bias"].abs().max()) <= 192 ** -0.5
    cfg = parse_config(yaml.safe_load(p.read_text()), "<test>")
    from tatvpr_hw.training import load_stage_model

    s = load_stage_model(cfg, "finetune")
    assert len(ternary_layers(s)) == 14 and type(s.backbone.blocks[3].mlp.fc1) is torch.nn.Linear
    assert main(["eval", "--config", str(p), "--checkpoint", str(out / "finetune.safetensors"),
                 "--out", str(tmp_path / "rep")]) == 0
    rows = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    st = {(r["granularity"], r["sparsity"]) for r in rows if r["model"] == "student"}
    assert st == {("batch", 0.0), ("batch", 0.4), ("token", 0.0), ("token", 0.4)}


def test_reference_presets_set_the_init_and_finetune_batch_switches():
    from tatvpr_hw.config import load_config
    from tatvpr_hw.training.stages import stage_places_per_batch

    full = load_config(ROOT / "configs/sparse_tetra_reference.yaml")
    assert full.train.distill.random_init == "sparse_tetra" and full.train.distill.student_init == "random"
    # their batches: distillation 32 single images (8 x 4 here), fine-tune 128 places x 4 images
    assert stage_places_per_batch(full, full.train.distill) * full.data.images_per_place == 32
    assert (stage_places_per_batch(full, full.train.finetune), full.data.images_per_place) == (128, 4)
    tiny = load_config(ROOT / "configs/sparse_tetra_reference_tiny.yaml")
    assert tiny.train.distill.random_init == "sparse_tetra"
    assert (stage_places_per_batch(tiny, tiny.train.distill), stage_places_per_batch(tiny, tiny.train.finetune)) == (8, 32)
    # the project's own recipe: timm's init, one batch size for all stages
    own = load_config(ROOT / "configs/tiny.yaml")
    assert own.train.distill.random_init == "timm" and own.train.finetune.places_per_batch is None
    assert stage_places_per_batch(own, own.train.finetune) == own.data.places_per_batch == 16


def test_random_init_needs_a_random_student():
    from tatvpr_hw.errors import UserError

    with pytest.raises(UserError, match=r"x.yaml: train.distill.*random_init = 'sparse_tetra' only applies to a "
                                        r"randomly initialised student; set student_init: random"):
        parse_config({"train": {"distill": {"random_init": "sparse_tetra"}}}, "x.yaml")
    with pytest.raises(UserError, match=r"train.finetune.places_per_batch = 1: Input should be greater than or equal to 2"):
        parse_config({"train": {"finetune": {"places_per_batch": 1}}}, "x.yaml")


def test_finetune_batches_have_their_own_size(bench_root, tmp_path):
    from tatvpr_hw.training.data import make_step_loader
    from tatvpr_hw.training.stages import _common_kwargs, _train_dataset

    cfg = parse_config(_twin(bench_root, tmp_path), "<test>")       # data P 2, finetune P 4, K 2
    ds = _train_dataset(cfg, 112)
    sizes = {}
    for stage in ("distill", "finetune"):
        kw = _common_kwargs(cfg, getattr(cfg.train, stage), ds)       # what the stage module gets
        images, labels = next(iter(make_step_loader(ds, kw["places_per_batch"], 0)))  # its loader
        sizes[stage] = (images.shape[0], len(set(labels.tolist())))
    assert sizes == {"distill": (2 * 2, 2), "finetune": (4 * 2, 4)}
