"""Checkpoints: our safetensors + JSON format, foreign DINOv2 / timm / BoQ state dicts, stage 1."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from brevitas_models.checkpoint import (
    adapt_foreign_state_dict, checkpoint_paths, dinov2_to_timm, init_student_from_teacher,
    load_checkpoint, load_foreign, load_into, load_teacher, read_checkpoint_meta, read_state_dict,
    restore_rng_state, rng_state, save_checkpoint,
)
from brevitas_models.model import build_model
from brevitas_models.vit import create_backbone
from tatvpr_hw.config import ModelConfig, load_config
from brevitas_models.errors import ModelInputError

CFG = load_config("configs/tiny.yaml")


def _meta(**kw):
    meta = {"config": CFG, "role": "teacher", "stage": "teacher", "step": 12, "seed": 0,
            "rng": rng_state(), "teacher_checkpoint": None}
    meta.update(kw)
    return meta


def _model_cfg(**kw) -> ModelConfig:
    data = CFG.model.model_dump()
    data.update(kw)
    return ModelConfig.model_validate(data)


def _dinov2_hub_sd(dim: int, depth: int, grid: int = 37, reg: int = 0, seed: int = 0) -> dict:
    """A state dict with the official DINOv2 hub names and shapes (random values)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim), "mask_token": r(1, dim),
          "patch_embed.proj.weight": r(dim, 3, 14, 14), "patch_embed.proj.bias": r(dim)}
    if reg:
        sd["register_tokens"] = r(1, reg, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": r(dim), b + "norm1.bias": r(dim),
                   b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
                   b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
                   b + "ls1.gamma": r(dim), b + "norm2.weight": r(dim), b + "norm2.bias": r(dim),
                   b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
                   b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim),
                   b + "ls2.gamma": r(dim)})
    sd.update({"norm.weight": r(dim), "norm.bias": r(dim)})
    return sd


# ----------------------------------------------------------------------------- our format


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = build_model(CFG.model, student=False).eval()
    st = save_checkpoint(tmp_path / "run" / "teacher", model, _meta())
    assert st == tmp_path / "run" / "teacher.safetensors"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["teacher.json", "teacher.safetensors"]
    sd, meta = load_checkpoint(tmp_path / "run" / "teacher.json")  # any of the three spellings
    assert meta["stage"] == "teacher" and meta["step"] == 12
    assert meta["config"]["model"]["head"]["name"] == "boq"  # pydantic config stored as JSON
    assert set(sd) == set(model.state_dict())
    torch.manual_seed(1)
    fresh = build_model(CFG.model, student=False).eval()
    x = torch.randn(2, 3, 98, 98)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), model(x))
        report = load_into(fresh, sd)
        assert torch.equal(fresh(x), model(x))
    assert report.left_at_init == [] and len(report.loaded) == len(sd)
    assert read_checkpoint_meta(st)["seed"] == 0


def test_student_roundtrip_keeps_quantizer_state(tmp_path):
    torch.manual_seed(0)
    student = build_model(CFG.model, student=True).eval()
    for name, p in student.named_parameters():
        if "scaling_impl" in name:
            p.data.fill_(3.25)
    save_checkpoint(tmp_path / "s", student, _meta(role="student", stage="distill",
                                                   teacher_checkpoint=str(tmp_path / "t.safetensors")))
    sd, meta = load_checkpoint(tmp_path / "s")
    assert meta["teacher_checkpoint"].endswith("t.safetensors")
    torch.manual_seed(5)
    other = build_model(CFG.model, student=True).eval()
    load_into(other, sd)
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        assert torch.equal(other(x), student(x))
    scales = [v for k, v in other.state_dict().items() if "scaling_impl" in k]
    assert scales and all(float(v) == 3.25 for v in scales)


@pytest.fixture()
def saved(tmp_path):
    sd = {"a": torch.arange(10.0), "b": torch.ones(3, 4)}
    save_checkpoint(tmp_path / "ck", sd, _meta())
    return checkpoint_paths(tmp_path / "ck")


def test_missing_files_named(saved, tmp_path):
    st, js = saved
    with pytest.raises(ModelInputError, match=r"checkpoint not found: .*nope\.safetensors"):
        load_checkpoint(tmp_path / "nope")
    js.unlink()
    with pytest.raises(ModelInputError, match=r"metadata missing: .*ck\.json"):
        load_checkpoint(st)


def test_corrupt_json(saved):
    st, js = saved
    js.write_text("{not json")
    with pytest.raises(ModelInputError, match="not valid JSON"):
        load_checkpoint(st)
    js.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelInputError, match="not a tatvpr-checkpoint metadata file"):
        load_checkpoint(st)


def test_truncated_and_corrupt_safetensors(saved):
    st, js = saved
    data = st.read_bytes()
    st.write_bytes(data[:-7])
    with pytest.raises(ModelInputError, match="truncated"):
        load_checkpoint(st)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    st.write_bytes(bytes(flipped))
    with pytest.raises(ModelInputError, match="SHA-256 differs"):
        load_checkpoint(st)


def test_garbage_safetensors_with_matching_metadata(saved):
    """A file that is not safetensors at all, even with a consistent JSON, is named as such."""
    import hashlib
    st, js = saved
    st.write_bytes(b"\xff" * 64)
    doc = json.loads(js.read_text())
    doc["safetensors"].update(bytes=64, sha256=hashlib.sha256(b"\xff" * 64).hexdigest())
    js.write_text(json.dumps(doc))
    with pytest.raises(ModelInputError, match="not a readable safetensors file"):
        load_checkpoint(st)


def test_pair_mismatch_detected(tmp_path):
    save_checkpoint(tmp_path / "x", {"a": torch.zeros(4)}, _meta())
    save_checkpoint(tmp_path / "y", {"a": torch.ones(4)}, _meta())
    (tmp_path / "x.json").write_text((tmp_path / "y.json").read_text())
    with pytest.raises(ModelInputError, match="do not belong together"):
        load_checkpoint(tmp_path / "x")


def test_bad_meta_rejected(tmp_path):
    with pytest.raises(ModelInputError, match="lacks .*rng"):
        save_checkpoint(tmp_path / "m", {"a": torch.zeros(1)}, {k: v for k, v in _meta().items() if k != "rng"})
    with pytest.raises(ModelInputError, match="role 'pupil'"):
        save_checkpoint(tmp_path / "m", {"a": torch.zeros(1)}, _meta(role="pupil"))
    with pytest.raises(ModelInputError, match="stage 'warmup'.*distill"):
        save_checkpoint(tmp_path / "m", {"a": torch.zeros(1)}, _meta(stage="warmup"))
    with pytest.raises(ModelInputError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "m", {"a": torch.zeros(1)}, _meta(extra=object()))
    assert not list(tmp_path.iterdir())


def test_rng_state_roundtrip_through_json():
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    state = json.loads(json.dumps(rng_state()))
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    with pytest.raises(ModelInputError, match="RNG state is malformed"):
        restore_rng_state({"python": 3})


# ----------------------------------------------------------------------------- foreign


def test_dinov2_hub_names_load_into_timm_backbone(tmp_path):
    sd = _dinov2_hub_sd(384, 12)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(sd, path)
    torch.manual_seed(0)
    model = build_model(_model_cfg(backbone="vit_small_patch14_dinov2", teacher_img_size=224,
                                   head={"name": "cls", "preset": "paper"}), student=False)
    report = load_foreign(model, path)
    bb = model.backbone
    assert torch.equal(bb.pos_embed, sd["pos_embed"])            # [1, 1370, 384], no resampling
    assert torch.equal(bb.cls_token, sd["cls_token"])
    assert torch.equal(bb.patch_embed.proj.weight, sd["patch_embed.proj.weight"])
    assert torch.equal(bb.blocks[3].ls1.gamma, sd["blocks.3.ls1.gamma"])
    assert torch.equal(bb.blocks[11].attn.qkv.weight, sd["blocks.11.attn.qkv.weight"])
    assert torch.equal(bb.blocks[7].mlp.fc2.bias, sd["blocks.7.mlp.fc2.bias"])
    assert torch.equal(bb.norm.weight, sd["norm.weight"])
    assert report.resampled == [] and "mask_token" not in str(report.loaded)
    with torch.no_grad():
        y = model(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 384) and torch.isfinite(y).all()


def test_dinov2_register_variant_conversion():
    sd = _dinov2_hub_sd(8, 1, grid=3, reg=4)
    out = dinov2_to_timm(sd)
    assert "mask_token" not in out and "register_tokens" not in out
    assert torch.equal(out["reg_token"], sd["register_tokens"])
    # timm's register layout has no class position: it is folded into the class token
    assert torch.equal(out["cls_token"], sd["cls_token"] + sd["pos_embed"][:, :1])
    assert torch.equal(out["pos_embed"], sd["pos_embed"][:, 1:]) and out["pos_embed"].shape == (1, 9, 8)
    # block-chunked and SwiGLU names of the larger official models
    chunked = dinov2_to_timm({"mask_token": torch.zeros(1), "blocks.1.5.mlp.w12.weight": torch.ones(2),
                              "blocks.1.5.mlp.w3.bias": torch.ones(1)})
    assert set(chunked) == {"blocks.5.mlp.fc1.weight", "blocks.5.mlp.fc2.bias"}


def test_dinov2_reg4_loads_into_reg4_backbone_with_official_token_layout():
    """After conversion the timm layout gives DINOv2's tokens: [cls + pos_cls, registers, patches + pos]."""
    import torch.nn.functional as F
    bb = create_backbone("vit_small_patch14_reg4_dinov2", 224)
    hub = _dinov2_hub_sd(384, 12, reg=4)
    sd = adapt_foreign_state_dict(hub)
    load_into(bb, {k[len("backbone."):]: v for k, v in sd.items()})
    assert bb.reg_token.shape == (1, 4, 384) and bb.pos_embed.shape == (1, 1369, 384)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        patches = bb.patch_embed(x)                                  # [1, 16, 16, 384]
        tokens = bb._pos_embed(patches)
        # the hub builds the *_reg models with interpolate_offset=0.0, interpolate_antialias=True
        grid = F.interpolate(hub["pos_embed"][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2), size=(16, 16),
                             mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 256, 384)
        pos = torch.cat([hub["pos_embed"][:, :1], grid], dim=1)
        official = torch.cat([hub["cls_token"] + pos[:, :1], hub["register_tokens"],
                              patches.reshape(1, 256, 384) + pos[:, 1:]], dim=1)
    assert tokens.shape == (1, 261, 384)
    assert torch.allclose(tokens, official, atol=1e-5)


def test_timm_names_load_unchanged_from_plain_safetensors(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(3)
    src = create_backbone("vit_tiny_patch14_dinov2", 98)
    sd = dict(src.state_dict())
    sd["head.weight"] = torch.zeros(10, 192)  # a timm classifier, dropped by the adapter
    save_file(sd, str(tmp_path / "timm_vit.safetensors"))
    torch.manual_seed(4)
    model = build_model(CFG.model, student=False)
    head_before = model.head.fc.weight.clone()
    report = load_foreign(model, tmp_path / "timm_vit.safetensors")
    for k, v in src.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert torch.equal(model.head.fc.weight, head_before)           # head left at init
    assert any(k.startswith("head.") for k in report.left_at_init)


def test_boq_release_loads_into_dinov2_boq_teacher(tmp_path):
    """A state dict named like the BoQ release (dinov2_12288.pth) loads into build_model."""
    g = torch.Generator().manual_seed(1)
    sd = {f"backbone.dino.{k}": v for k, v in _dinov2_hub_sd(768, 12, seed=2).items()}
    proj, q, dim = 384, 64, 768
    sd.update({"aggregator.proj_c.weight": torch.randn(proj, dim, 3, 3, generator=g),
               "aggregator.proj_c.bias": torch.randn(proj, generator=g),
               "aggregator.norm_input.weight": torch.randn(proj, generator=g),
               "aggregator.norm_input.bias": torch.randn(proj, generator=g),
               "aggregator.fc.weight": torch.randn(32, 2 * q, generator=g),
               "aggregator.fc.bias": torch.randn(32, generator=g)})
    for i in range(2):
        b = f"aggregator.boqs.{i}."
        sd[b + "queries"] = torch.randn(1, q, proj, generator=g)
        for attn in ("encoder.self_attn.", "self_attn.", "cross_attn."):
            sd[b + attn + "in_proj_weight"] = torch.randn(3 * proj, proj, generator=g) * 0.05
            sd[b + attn + "in_proj_bias"] = torch.randn(3 * proj, generator=g)
            sd[b + attn + "out_proj.weight"] = torch.randn(proj, proj, generator=g) * 0.05
            sd[b + attn + "out_proj.bias"] = torch.randn(proj, generator=g)
        sd.update({b + "encoder.linear1.weight": torch.randn(4 * proj, proj, generator=g) * 0.05,
                   b + "encoder.linear1.bias": torch.randn(4 * proj, generator=g),
                   b + "encoder.linear2.weight": torch.randn(proj, 4 * proj, generator=g) * 0.05,
                   b + "encoder.linear2.bias": torch.randn(proj, generator=g)})
        for norm in ("encoder.norm1.", "encoder.norm2.", "norm_q.", "norm_out."):
            sd[b + norm + "weight"] = torch.randn(proj, generator=g)
            sd[b + norm + "bias"] = torch.randn(proj, generator=g)
    path = tmp_path / "dinov2_12288.pth"
    torch.save(sd, path)
    cfg = _model_cfg(backbone="vit_base_patch14_dinov2", teacher_img_size=224,
                     head={"name": "boq", "preset": "dinov2_boq"}, teacher_checkpoint=str(path))
    model = load_teacher(cfg).eval()
    assert model.descriptor_dim == 12288
    assert torch.equal(model.head.boqs[1].queries, sd["aggregator.boqs.1.queries"])
    assert torch.equal(model.head.boqs[0].encoder.self_attn.in_proj_weight,
                       sd["aggregator.boqs.0.encoder.self_attn.in_proj_weight"])
    assert torch.equal(model.head.fc.weight, sd["aggregator.fc.weight"])
    assert torch.equal(model.backbone.blocks[11].ls2.gamma, sd["backbone.dino.blocks.11.ls2.gamma"])
    assert torch.equal(model.backbone.pos_embed, sd["backbone.dino.pos_embed"])
    with torch.no_grad():
        y = model(torch.randn(1, 3, 224, 224) * 0.1)
    assert y.shape == (1, 12288) and torch.allclose(y.norm(), torch.tensor(1.0), atol=1e-4)


def test_mismatches_reported_by_name_in_one_error():
    bb = create_backbone("vit_tiny_patch14_dinov2", 98)
    sd = dict(bb.state_dict())
    sd.pop("norm.weight")
    sd["blocks.0.attn.foo"] = torch.zeros(1)
    sd["blocks.1.attn.qkv.weight"] = torch.zeros(5, 192)
    with pytest.raises(ModelInputError) as err:
        load_into(bb, sd, source="ck.pth")
    msg = str(err.value)
    assert "ck.pth does not fit" in msg
    assert "1 missing: norm.weight" in msg
    assert "1 unexpected: blocks.0.attn.foo" in msg
    assert "blocks.1.attn.qkv.weight: checkpoint [5, 192] vs model [576, 192]" in msg


def test_pos_embed_for_another_grid_is_resampled_the_dinov2_way():
    from brevitas_models.vit import interpolate_pos_encoding_dinov2
    bb = create_backbone("vit_tiny_patch14_dinov2", 98)            # 7x7 grid + class token
    sd = dict(bb.state_dict())
    sd["pos_embed"] = torch.randn(1, 1 + 10 * 10, 192)
    report = load_into(bb, sd)
    assert report.resampled == ["pos_embed"]
    assert torch.equal(bb.pos_embed, interpolate_pos_encoding_dinov2(sd["pos_embed"], (7, 7), 1))


def test_foreign_files_unsafe_truncated_unknown(tmp_path):
    import argparse
    odd = tmp_path / "odd.pth"  # old training scripts pickle their argparse namespace
    torch.save({"cls_token": torch.zeros(1), "args": argparse.Namespace(lr=1.0)}, odd)
    with pytest.raises(ModelInputError, match="refusing to unpickle"):
        read_state_dict(odd)
    good = tmp_path / "good.pth"
    torch.save(_dinov2_hub_sd(8, 1, grid=2), good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ModelInputError, match="not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "cut.pth")
    with pytest.raises(ModelInputError, match="file not found"):
        read_state_dict(tmp_path / "absent.pth")
    with pytest.raises(ModelInputError, match="unrecognised checkpoint layout"):
        adapt_foreign_state_dict({"conv1.weight": torch.zeros(1)})
    wrapped = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"module.cls_token": torch.ones(1, 1, 8)}, "epoch": 3}, wrapped)
    assert set(adapt_foreign_state_dict(read_state_dict(wrapped))) == {"backbone.cls_token"}


# ----------------------------------------------------------------------------- stage 1


def test_init_student_from_teacher_copies_every_float_weight():
    torch.manual_seed(0)
    teacher = build_model(CFG.model, student=False).eval()
    student = build_model(CFG.model, student=True).eval()
    report = init_student_from_teacher(student, teacher)
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["backbone.blocks.2.attn.qkv.linear.weight"], t["backbone.blocks.2.attn.qkv.weight"])
    assert torch.equal(s["backbone.blocks.3.mlp.fc2.linear.bias"], t["backbone.blocks.3.mlp.fc2.bias"])
    assert torch.equal(s["head.fc.weight"], t["head.fc.weight"])
    assert len(report.loaded) == len(t)
    assert report.left_at_init and all("_quant." in k for k in report.left_at_init)
    # stage-1 bound on the tiny model at s = 0: the ternary student's descriptors point the
    # same way as the teacher's (cosine > 0.95; a random student gives ~0)
    x = torch.randn(4, 3, 98, 98, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cos = (teacher(x) * student(x)).sum(dim=1)
    assert cos.min() > 0.95, cos


def test_init_student_reports_teacher_weights_without_a_place():
    torch.manual_seed(0)
    teacher = build_model(CFG.model, student=False)
    student = build_model(_model_cfg(head={"name": "boq", "preset": "tiny", "overrides": {"num_layers": 1}}),
                          student=True)
    with pytest.raises(ModelInputError, match=r"no place in the student: head\.boqs\.1\."):
        init_student_from_teacher(student, teacher)


def test_load_model_rebuilds_from_stored_config(tmp_path):
    from brevitas_models.checkpoint import load_model
    torch.manual_seed(0)
    cfg = _model_cfg(head={"name": "cls", "preset": "tiny"})
    student = build_model(cfg, student=True).eval()
    run_cfg = CFG.model_copy(update={"model": cfg})
    save_checkpoint(tmp_path / "finetune", student, _meta(config=run_cfg, role="student", stage="finetune"))
    model, meta = load_model(tmp_path / "finetune.safetensors")
    assert meta["stage"] == "finetune" and model.descriptor_dim == 192
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), student(x))
    with pytest.raises(ModelInputError, match="needs the model config"):
        torch.save(_dinov2_hub_sd(192, 4, grid=7), tmp_path / "hub.pth")
        load_model(tmp_path / "hub.pth")
    teacher, meta = load_model(tmp_path / "hub.pth", cfg)
    assert meta["stage"] == "foreign" and teacher.backbone.pos_embed.shape == (1, 50, 192)
    with pytest.raises(ModelInputError, match="checkpoint not found"):
        load_model(tmp_path / "distill")


@pytest.mark.parametrize("reg", [0, 4])
def test_dinov2_conversion_agrees_with_timms_own_filter(reg):
    """timm ships its own DINOv2 converter (checkpoint_filter_fn): ours must give the same tensors."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
    model = VisionTransformer(img_size=518, patch_size=14, embed_dim=8, depth=2, num_heads=2, num_classes=0,
                              init_values=1e-5, reg_tokens=reg, no_embed_class=bool(reg))
    hub = _dinov2_hub_sd(8, 2, reg=reg)
    theirs = checkpoint_filter_fn(dict(hub), model)
    ours = {k[len("backbone."):]: v for k, v in adapt_foreign_state_dict(hub).items()}
    assert set(ours) == set(theirs) == set(model.state_dict())
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
