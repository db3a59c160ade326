"""Foreign checkpoints against the official modules (issue 13 item 4).

Each state dict here has the names and shapes of the official module's ``state_dict()`` (read
from the official source; cited per builder), and where the official computation is short it
is written out below with ``torch.nn.functional`` only, independent of the code under test:

- DINOv2 with registers (facebookresearch/dinov2 ``dinov2/hub/backbones.py``: the ``*_reg``
  models are built with ``interpolate_antialias=True, interpolate_offset=0.0``;
  ``dinov2/models/vision_transformer.py``: ``interpolate_pos_encoding`` and ``prepare_tokens_with_masks``);
- MixVPR (amaralibey/MixVPR ``models/aggregators/mixvpr.py``: ``MixVPR`` with a biased
  ``row_proj = nn.Linear(hw, out_rows)``);
- ``torch.compile``'s ``_orig_mod.`` prefix (the names come from a real ``torch.compile`` wrapper).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from brevitas_models.checkpoint import (
    adapt_foreign_state_dict, init_student_from_teacher, load_checkpoint, load_foreign, load_into,
    save_checkpoint, strip_compile_prefix,
)
from brevitas_models.config import ModelConfig
from brevitas_models.errors import ModelInputError
from brevitas_models.model import build_model
from brevitas_models.vit import create_backbone

PATCH = 14


def _gen(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda *shape, scale=1.0, base=0.0: base + scale * torch.randn(*shape, generator=g)


def official_dinov2_sd(dim: int, depth: int, reg: int, grid: int = 37, seed: int = 0) -> dict:
    """``DinoVisionTransformer.state_dict()`` names and shapes (MLP FFN, no chunking): cls_token
    [1, 1, D], pos_embed [1, 1 + 37*37, D], register_tokens [1, R, D], mask_token [1, D],
    patch_embed.proj [D, 3, 14, 14], blocks.N.{norm1, attn.qkv [3D, D], attn.proj, ls1.gamma,
    norm2, mlp.fc1 [4D, D], mlp.fc2 [D, 4D], ls2.gamma}, norm."""
    r = _gen(seed)
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim), "mask_token": r(1, dim),
          "patch_embed.proj.weight": r(dim, 3, PATCH, PATCH, scale=0.02), "patch_embed.proj.bias": r(dim, scale=0.02)}
    if reg:
        sd["register_tokens"] = r(1, reg, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": r(dim, scale=0.1, base=1.0), b + "norm1.bias": r(dim, scale=0.1),
                   b + "attn.qkv.weight": r(3 * dim, dim, scale=0.05), b + "attn.qkv.bias": r(3 * dim, scale=0.02),
                   b + "attn.proj.weight": r(dim, dim, scale=0.05), b + "attn.proj.bias": r(dim, scale=0.02),
                   b + "ls1.gamma": r(dim, scale=0.1),
                   b + "norm2.weight": r(dim, scale=0.1, base=1.0), b + "norm2.bias": r(dim, scale=0.1),
                   b + "mlp.fc1.weight": r(4 * dim, dim, scale=0.05), b + "mlp.fc1.bias": r(4 * dim, scale=0.02),
                   b + "mlp.fc2.weight": r(dim, 4 * dim, scale=0.05), b + "mlp.fc2.bias": r(dim, scale=0.02),
                   b + "ls2.gamma": r(dim, scale=0.1)})
    sd.update({"norm.weight": r(dim, scale=0.1, base=1.0), "norm.bias": r(dim, scale=0.1)})
    return sd


def official_interpolate_pos_encoding(pos_embed, img_h, img_w, *, offset, antialias):
    """DinoVisionTransformer.interpolate_pos_encoding(x, w=img_h, h=img_w), written out."""
    n = pos_embed.shape[1] - 1
    w0, h0 = img_h // PATCH, img_w // PATCH
    if n == w0 * h0 and img_h == img_w:
        return pos_embed
    m, dim = int(math.sqrt(n)), pos_embed.shape[-1]
    kwargs = {"scale_factor": ((w0 + offset) / m, (h0 + offset) / m)} if offset else {"size": (w0, h0)}
    grid = F.interpolate(pos_embed[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2),
                         mode="bicubic", antialias=antialias, **kwargs)
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def official_dinov2_tokens(sd, x, *, heads, offset, antialias):
    """forward_features(x)["x_norm"] concatenated back: [cls, registers, patches], final norm."""
    b, _, h, w = x.shape
    dim = sd["cls_token"].shape[-1]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t.flatten(2).transpose(1, 2)], dim=1)
    t = t + official_interpolate_pos_encoding(sd["pos_embed"], h, w, offset=offset, antialias=antialias)
    if "register_tokens" in sd:
        t = torch.cat([t[:, :1], sd["register_tokens"].expand(b, -1, -1), t[:, 1:]], dim=1)
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = f"blocks.{i}."
        y = F.layer_norm(t, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        a = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        y = F.linear(a.transpose(1, 2).reshape(b, -1, dim), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        t = t + sd[p + "ls1.gamma"] * y
        y = F.layer_norm(t, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        t = t + sd[p + "ls2.gamma"] * y
        i += 1
    return F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)


# ----------------------------------------------------------------------------- (a) registers


@pytest.fixture(scope="module")
def reg4_vits14():
    """dinov2_vits14_reg: ViT-S/14 (384-d, 12 blocks, 6 heads), 4 registers, 37x37 grid."""
    hub = official_dinov2_sd(384, 12, reg=4)
    bb = create_backbone("vit_small_patch14_reg4_dinov2", 224).eval()
    load_into(bb, {k[len("backbone."):]: v for k, v in adapt_foreign_state_dict(hub).items()})
    return hub, bb


@pytest.mark.parametrize("px", [224, 322])
def test_dinov2_reg4_matches_the_official_forward(reg4_vits14, px):
    hub, bb = reg4_vits14
    x = torch.randn(1, 3, px, px, generator=torch.Generator().manual_seed(px))
    with torch.no_grad():
        ours = bb.forward_features(x)
        official = official_dinov2_tokens(hub, x, heads=6, offset=0.0, antialias=True)
        old_way = official_dinov2_tokens(hub, x, heads=6, offset=0.1, antialias=False)
    g = px // PATCH
    assert ours.shape == official.shape == (1, 1 + 4 + g * g, 384)
    err = float((ours - official).abs().max())
    assert err < 1e-4, err
    # the test can tell: the plain models' settings (offset 0.1, no antialias) are far off
    assert float((old_way - official).abs().max()) > 1e-2


def test_plain_dinov2_keeps_offset_and_no_antialias():
    hub = official_dinov2_sd(16, 1, reg=0)
    bb = create_backbone("vit_small_patch14_dinov2", 224)
    assert (bb.interpolate_offset, bb.interpolate_antialias) == (0.1, False)
    pos = official_interpolate_pos_encoding(hub["pos_embed"], 322, 322, offset=0.1, antialias=False)
    from brevitas_models.vit import interpolate_pos_encoding_dinov2
    assert torch.allclose(interpolate_pos_encoding_dinov2(hub["pos_embed"], (23, 23), 1), pos, atol=1e-6)
    for name in ("vit_small_patch14_reg4_dinov2", "vit_base_patch14_reg4_dinov2", "vit_large_patch14_reg4_dinov2"):
        reg = create_backbone(name, 224, device="meta")
        assert (reg.interpolate_offset, reg.interpolate_antialias) == (0.0, True), name


def test_foreign_pos_embed_for_another_grid_is_resampled_with_the_register_settings():
    """A stored table for another grid (e.g. a 224-px fine-tune, 16x16) resampled onto the reg4
    backbone's 37x37 grid the way the backbone itself resamples: size-based, antialiased."""
    bb = create_backbone("vit_small_patch14_reg4_dinov2", 224)
    sd = dict(bb.state_dict())
    small = torch.randn(1, 16 * 16, 384, generator=torch.Generator().manual_seed(3))  # timm reg layout: no class entry
    sd["pos_embed"] = small
    report = load_into(bb, sd)
    assert report.resampled == ["pos_embed"]
    expect = F.interpolate(small.reshape(1, 16, 16, 384).permute(0, 3, 1, 2), size=(37, 37), mode="bicubic",
                           antialias=True).permute(0, 2, 3, 1).reshape(1, 37 * 37, 384)
    assert torch.allclose(bb.pos_embed, expect, atol=1e-5)


# ----------------------------------------------------------------------------- (b) MixVPR


def official_mixvpr_sd(in_channels, in_h, in_w, out_channels, mix_depth, mlp_ratio, out_rows, seed=0):
    """``MixVPR(in_channels, in_h, in_w, out_channels, mix_depth, mlp_ratio, out_rows).state_dict()``:
    mix.N.mix.0 (LayerNorm(hw)), mix.N.mix.1 (Linear(hw, hw*r)), mix.N.mix.3 (Linear(hw*r, hw)),
    channel_proj (Linear(C, out_c)), row_proj (Linear(hw, out_rows), with bias)."""
    r = _gen(seed)
    hw, hid = in_h * in_w, int(in_h * in_w * mlp_ratio)
    sd = {}
    for i in range(mix_depth):
        p = f"mix.{i}.mix."
        sd.update({p + "0.weight": r(hw, scale=0.1, base=1.0), p + "0.bias": r(hw, scale=0.1),
                   p + "1.weight": r(hid, hw, scale=0.05), p + "1.bias": r(hid, scale=0.05),
                   p + "3.weight": r(hw, hid, scale=0.05), p + "3.bias": r(hw, scale=0.05)})
    sd.update({"channel_proj.weight": r(out_channels, in_channels, scale=0.05),
               "channel_proj.bias": r(out_channels, scale=0.05),
               "row_proj.weight": r(out_rows, hw, scale=0.05), "row_proj.bias": r(out_rows, scale=0.5)})
    return sd


def official_mixvpr(sd, x):
    """MixVPR.forward on a feature map x [B, C, h, w], written out."""
    x = x.flatten(2)
    i = 0
    while f"mix.{i}.mix.0.weight" in sd:
        p = f"mix.{i}.mix."
        y = F.layer_norm(x, (x.shape[-1],), sd[p + "0.weight"], sd[p + "0.bias"])
        y = F.linear(F.relu(F.linear(y, sd[p + "1.weight"], sd[p + "1.bias"])), sd[p + "3.weight"], sd[p + "3.bias"])
        x = x + y
        i += 1
    x = F.linear(x.permute(0, 2, 1), sd["channel_proj.weight"], sd["channel_proj.bias"])
    x = F.linear(x.permute(0, 2, 1), sd["row_proj.weight"], sd["row_proj.bias"])
    return F.normalize(x.flatten(1), p=2, dim=-1)


def _mixvpr_cfg(teacher_px=98, student_px=98, **head) -> ModelConfig:
    return ModelConfig(backbone="vit_tiny_patch14_dinov2", teacher_img_size=teacher_px, student_img_size=student_px,
                       head={"name": "mixvpr", "preset": "tiny", **head})


def test_official_mixvpr_weights_load_and_match(tmp_path):
    """A DINOv2 + MixVPR checkpoint in the GSV-Cities trainer layout (backbone.model.* with DINOv2
    hub names + aggregator.* = the official MixVPR module) loads, and the head computes MixVPR."""
    cfg = _mixvpr_cfg()
    torch.manual_seed(0)
    model = build_model(cfg, student=False).eval()
    assert model.head.grid_hw == (7, 7)
    agg = official_mixvpr_sd(192, 7, 7, out_channels=64, mix_depth=2, mlp_ratio=1.0, out_rows=4)
    bb = official_dinov2_sd(192, 4, reg=0, grid=7, seed=1)
    ck = {**{f"backbone.model.{k}": v for k, v in bb.items()}, **{f"aggregator.{k}": v for k, v in agg.items()}}
    path = tmp_path / "dinov2_mixvpr.ckpt"
    torch.save({"state_dict": ck, "epoch": 3}, path)
    report = load_foreign(model, path)
    assert not report.left_at_init and not report.resampled
    x = torch.randn(2, 3, 98, 98, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = official_dinov2_tokens(bb, x, heads=3, offset=0.1, antialias=False)
        fmap = tokens[:, 1:].transpose(1, 2).reshape(2, 192, 7, 7)
        expect = official_mixvpr(agg, fmap)
        got = model(x)
    assert got.shape == (2, 256)
    assert torch.allclose(got, expect, atol=1e-5), float((got - expect).abs().max())


def test_mixvpr_head_is_built_for_each_roles_grid():
    cfg = _mixvpr_cfg(teacher_px=322, student_px=224)
    teacher = build_model(cfg, student=False)
    student = build_model(cfg, student=True)
    assert teacher.head.grid_hw == (23, 23) and teacher.head.row_proj.weight.shape == (4, 23 * 23)
    assert student.head.grid_hw == (16, 16) and student.head.row_proj.weight.shape == (4, 16 * 16)


def test_init_student_from_teacher_across_grids_copies_channel_proj_and_reinitialises_grid_tensors():
    """Teacher at 322 px (23x23), student at 224 px (16x16): the backbone (pos_embed resampled)
    and MixVPR's channel_proj are copied; mix.* and row_proj.* keep the student's init."""
    cfg = _mixvpr_cfg(teacher_px=322, student_px=224)
    torch.manual_seed(0)
    teacher = build_model(cfg, student=False).eval()
    torch.manual_seed(1)
    student = build_model(cfg, student=True).eval()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    report = init_student_from_teacher(student, teacher)
    t, s = teacher.state_dict(), student.state_dict()
    grid_sized = sorted(k for k in s if k.startswith(("head.mix.", "head.row_proj.")))
    assert len(grid_sized) == 2 * 6 + 2  # 2 mixer layers x (norm, fc1, fc2) x (weight, bias) + row_proj
    assert sorted(report.reinitialised) == grid_sized
    for k in grid_sized:
        assert torch.equal(s[k], before[k]), k
    assert torch.equal(s["head.channel_proj.weight"], t["head.channel_proj.weight"])
    assert torch.equal(s["head.channel_proj.bias"], t["head.channel_proj.bias"])
    assert torch.equal(s["backbone.blocks.3.attn.qkv.linear.weight"], t["backbone.blocks.3.attn.qkv.weight"])
    assert report.resampled == ["backbone.pos_embed"]  # the tiny backbone stores its run grid
    with torch.no_grad():
        y = student(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 256) and torch.isfinite(y).all()


def test_init_student_same_grid_copies_the_whole_mixvpr_head():
    cfg = _mixvpr_cfg()
    torch.manual_seed(0)
    teacher = build_model(cfg, student=False)
    student = build_model(cfg, student=True)
    report = init_student_from_teacher(student, teacher)
    assert report.reinitialised == []
    assert torch.equal(student.state_dict()["head.mix.1.mix.3.weight"], teacher.state_dict()["head.mix.1.mix.3.weight"])
    assert torch.equal(student.state_dict()["head.row_proj.bias"], teacher.state_dict()["head.row_proj.bias"])


# ----------------------------------------------------------------------------- (c) torch.compile


def _tiny_cfg() -> ModelConfig:
    return ModelConfig(backbone="vit_tiny_patch14_dinov2", teacher_img_size=98, student_img_size=98,
                       head={"name": "boq", "preset": "tiny"})


def test_compiled_model_state_dict_loads(tmp_path):
    """``torch.compile(model).state_dict()`` names every key ``_orig_mod.<name>``."""
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(), student=False).eval()
    sd = torch.compile(model).state_dict()
    assert all(k.startswith("_orig_mod.") for k in sd)
    torch.save(sd, tmp_path / "compiled.pth")
    torch.manual_seed(1)
    fresh = build_model(_tiny_cfg(), student=False).eval()
    load_foreign(fresh, tmp_path / "compiled.pth")
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_compiled_submodule_and_ddp_prefixes_load():
    """A compiled submodule gives ``backbone._orig_mod.*``; DDP around it adds ``module.``."""
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(), student=False).eval()
    model.backbone = torch.compile(model.backbone)
    sd = model.state_dict()
    assert any(k.startswith("backbone._orig_mod.blocks.0.") for k in sd)
    ddp = {f"module.{k}": v for k, v in sd.items()}
    torch.manual_seed(1)
    a = build_model(_tiny_cfg(), student=False).eval()
    b = build_model(_tiny_cfg(), student=False).eval()
    load_into(a, sd)
    load_into(b, adapt_foreign_state_dict(ddp))
    x = torch.randn(1, 3, 98, 98)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(a(x), ref) and torch.equal(b(x), ref)


def test_our_checkpoint_of_a_compiled_model_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(), student=False).eval()
    meta = {"config": {"model": _tiny_cfg().model_dump(mode="json")}, "role": "teacher", "stage": "teacher",
            "step": 0, "seed": 0, "rng": None, "teacher_checkpoint": None}
    save_checkpoint(tmp_path / "t", torch.compile(model), meta)
    sd, _ = load_checkpoint(tmp_path / "t")
    fresh = build_model(_tiny_cfg(), student=False).eval()
    load_into(fresh, sd)
    with torch.no_grad():
        x = torch.randn(1, 3, 98, 98)
        assert torch.equal(fresh(x), model(x))


def test_strip_compile_prefix_names_and_collisions():
    t = torch.zeros(1)
    assert list(strip_compile_prefix({"_orig_mod.a.b": t, "x._orig_mod.y": t, "my_orig_mod.z": t})) == \
        ["a.b", "x.y", "my_orig_mod.z"]
    with pytest.raises(ModelInputError, match="both '_orig_mod.a'"):
        strip_compile_prefix({"a": t, "_orig_mod.a": t})
