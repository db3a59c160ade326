"""Export the ternary student's trunk to the bit-exact integer model (``tatvpr_pynq.integer``).

One step: the float student (PyTorch) + a few calibration images -> a :class:`TrunkQ` whose
integer multipliers and shifts come from the student's own scales (ternary gamma, int8 input
steps of every ternary linear) and from absmax statistics of the calibration run (the
residual stream, each linear's output, the image). The integer model then runs with numpy
alone; the head (BoQ, SALAD, MixVPR, CLS) runs in float on the dequantised trunk output
(``integer_descriptors``) until the int8 unit's head lands (issue 15).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls.paths import driver_package


def _iq():
    driver_package()
    from tatvpr_pynq import integer
    return integer


def _mult_shift(real: float) -> tuple[int, int]:
    from tatvpr_pynq.formats import quantize_multiplier
    return quantize_multiplier(real)


def _signed_mult_shift(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multipliers of any sign (a zero gives mult 0)."""
    mults, shifts = [], []
    for r in np.asarray(reals, np.float64):
        if r == 0.0:
            mults.append(0)
            shifts.append(1)
            continue
        m, s = _mult_shift(abs(float(r)))
        mults.append(m if r > 0 else -m)
        shifts.append(s)
    return np.array(mults, np.int64), np.array(shifts, np.int64)


def export_trunk(model, images, *, sparsity: float = 0.0, res_headroom: float = 1.25) -> Any:
    """Float student ``model`` (a ``VPRModel`` with ternary blocks) + calibration ``images``
    ``[B, 3, H, W]`` -> ``tatvpr_pynq.integer.TrunkQ`` at the images' size.

    Output scales are the calibration absmax / 127 (int8) or / 32767 x ``res_headroom`` (the
    int16 residual stream, one scale for the whole trunk).
    """
    import torch

    iq = _iq()
    bb = model.backbone
    blocks = list(bb.blocks)
    for i, b in enumerate(blocks):
        for name, mod in (("attn.qkv", b.attn.qkv), ("attn.proj", b.attn.proj), ("mlp.fc1", b.mlp.fc1),
                          ("mlp.fc2", b.mlp.fc2)):
            if not hasattr(mod, "ternary_weight"):
                raise UserError(f"blocks.{i}.{name} is not ternary: the integer model needs the ternary student")
    if getattr(bb, "patch_embed", None) is None or not isinstance(bb.patch_embed.proj, torch.nn.Conv2d):
        raise UserError("the backbone has no convolutional patch embedding (timm ViT expected)")

    stats: dict[str, float] = {}

    def amax(key, t):
        stats[key] = max(stats.get(key, 0.0), float(t.detach().abs().max()))

    hooks = []
    for i, b in enumerate(blocks):
        hooks += [
            b.norm1.register_forward_pre_hook(lambda m, a, i=i: amax("res", a[0])),
            b.norm2.register_forward_pre_hook(lambda m, a, i=i: amax("res", a[0])),
            b.register_forward_hook(lambda m, a, o, i=i: amax("res", o)),
        ]
        for name, mod in (("qkv", b.attn.qkv), ("proj", b.attn.proj), ("fc1", b.mlp.fc1), ("fc2", b.mlp.fc2)):
            hooks.append(mod.register_forward_hook(lambda m, a, o, k=f"{i}.{name}": amax(k, o)))
    hooks.append(bb.norm.register_forward_hook(lambda m, a, o: amax("norm", o)))
    from brevitas_models.sparsity import sparsity_context

    images = images.float()
    try:
        model.eval()
        with torch.no_grad(), sparsity_context(model, sparsity):
            bb.forward_features(images)  # runs every block and the final norm
    finally:
        for h in hooks:
            h.remove()
    amax("img", images)

    s_res = max(stats["res"], 1e-6) * res_headroom / 32767.0
    s_img = max(stats["img"], 1e-6) / 127.0

    def f64(t):
        return t.detach().double().cpu().numpy()

    # patch embedding on the int8 unit: per-tensor int8 weights
    conv = bb.patch_embed.proj
    w = f64(conv.weight).reshape(conv.weight.shape[0], -1)
    s_w = max(np.abs(w).max(), 1e-12) / 127.0
    embed_w = np.clip(np.rint(w / s_w), -127, 127).astype(np.int8)
    acc_unit = s_img * s_w
    embed_bias = (np.zeros(w.shape[0], np.int64) if conv.bias is None
                  else np.rint(f64(conv.bias) / acc_unit).astype(np.int64))
    em, es = _mult_shift(acc_unit / s_res)
    with torch.no_grad():
        grid = model.grid_hw((int(images.shape[-2]), int(images.shape[-1])))
        n_patches = grid[0] * grid[1]
        zero = torch.zeros(1, grid[0], grid[1], bb.embed_dim)  # dynamic-size layout [B, h, w, D]
        pos_all = f64(bb._pos_embed(zero))[0]
    n_prefix = pos_all.shape[0] - n_patches
    q16 = lambda v: np.clip(np.rint(v / s_res), -32768, 32767).astype(np.int16)  # noqa: E731

    def lin(mod, s_out):
        codes, gamma = mod.ternary_weight()
        if gamma.numel() != 1:
            raise UserError("per-output-channel weight scales are not supported (model.ternary.per_channel: false)")
        au = float(mod.input_scale()) * float(gamma)
        bias = None if mod.bias is None else np.rint(f64(mod.bias) / au).astype(np.int64)
        m, s = _mult_shift(au / s_out)
        return iq.LinearQ(codes.numpy().astype(np.int8), bias, m, s)

    def ls(layer_scale, d):
        g = getattr(layer_scale, "gamma", None)
        return np.ones(d) if g is None else f64(g)

    qblocks = []
    for i, b in enumerate(blocks):
        a = b.attn
        d = bb.embed_dim
        s_qkv = max(stats[f"{i}.qkv"], 1e-12) / 127.0
        s_proj = max(stats[f"{i}.proj"], 1e-12) / 127.0
        s_fc1 = max(stats[f"{i}.fc1"], 1e-12) / 127.0
        s_fc2 = max(stats[f"{i}.fc2"], 1e-12) / 127.0
        s_proj_in = float(a.proj.input_scale())
        s_fc2_in = float(b.mlp.fc2.input_scale())
        scale = float(getattr(a, "scale", 1.0 / math.sqrt(d // a.num_heads)))
        sm, ss = _mult_shift(s_qkv * s_qkv * scale * math.log2(math.e) * 2 ** iq.SOFTMAX_U_BITS)
        am, ash = _mult_shift(s_qkv / 255.0 / s_proj_in)
        r1m, r1s = _signed_mult_shift(ls(b.ls1, d) * s_proj / s_res)
        r2m, r2s = _signed_mult_shift(ls(b.ls2, d) * s_fc2 / s_res)
        qblocks.append(iq.BlockQ(
            num_heads=a.num_heads,
            ln1=iq.layernorm_params(f64(b.norm1.weight), f64(b.norm1.bias), b.norm1.eps, s_res,
                                    float(a.qkv.input_scale())),
            qkv=lin(a.qkv, s_qkv), softmax_mult=sm, softmax_shift=ss, av_mult=am, av_shift=ash,
            proj=lin(a.proj, s_proj), res1_mult=r1m, res1_shift=r1s,
            ln2=iq.layernorm_params(f64(b.norm2.weight), f64(b.norm2.bias), b.norm2.eps, s_res,
                                    float(b.mlp.fc1.input_scale())),
            fc1=lin(b.mlp.fc1, s_fc1), gelu=iq.gelu_table(s_fc1, s_fc2_in), fc2=lin(b.mlp.fc2, s_fc2),
            res2_mult=r2m, res2_shift=r2s))
    norm, norm_scale = None, 1.0
    if model.final_norm:
        norm_scale = max(stats["norm"], 1e-12) / 127.0
        norm = iq.layernorm_params(f64(bb.norm.weight), f64(bb.norm.bias), bb.norm.eps, s_res, norm_scale)
    p = bb.patch_embed.patch_size
    return iq.TrunkQ(patch=int(p[0] if isinstance(p, (tuple, list)) else p), img_scale=s_img, embed_w=embed_w,
                     embed_bias=embed_bias, embed_mult=em, embed_shift=es, prefix=q16(pos_all[:n_prefix]),
                     pos=q16(pos_all[n_prefix:]), blocks=qblocks, res_scale=s_res, norm=norm,
                     norm_scale=norm_scale, meta={"sparsity": sparsity, "calibration_images": int(images.shape[0])})


def integer_descriptors(model, trunk, images, sparsity: float) -> np.ndarray:
    """L2-normalised descriptors [B, D]: the integer trunk, then the model's float head."""
    import torch

    feats = np.stack([trunk.features(img, sparsity) for img in images.double().cpu().numpy()])
    grid = model.grid_hw((int(images.shape[-2]), int(images.shape[-1])))
    with torch.no_grad():
        d = model.forward_head(torch.from_numpy(feats).float(), grid)
    return torch.nn.functional.normalize(d.float(), dim=-1).numpy()


def integer_eval_descriptors(model, dataset, sparsities, calibration, *, desc: str = "integer") -> dict:
    """{s: L2-normalised descriptors [N, D]} of every image of ``dataset`` through the integer trunk
    exported at each sparsity (calibrated on ``calibration`` images) and the float head."""
    from tqdm import tqdm

    out = {}
    for s in sparsities:
        trunk = export_trunk(model, calibration, sparsity=float(s))
        rows = []
        for i in tqdm(range(len(dataset)), desc=f"{desc} s={s:g}", unit="img", leave=False):
            img = dataset[i][0]
            rows.append(integer_descriptors(model, trunk, img[None], float(s)))
        out[float(s)] = np.concatenate(rows, axis=0) if rows else np.zeros((0, model.descriptor_dim), np.float32)
    return out
