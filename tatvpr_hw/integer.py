"""Export the ternary student's trunk to the bit-exact integer model (``tatvpr_pynq.integer``).

One step: the float student (PyTorch) + a few calibration images -> a :class:`TrunkQ` whose
integer multipliers and shifts come from the student's own scales (ternary gamma, int8 input
steps of every ternary linear) and from absmax statistics of the calibration run (the
residual stream, each linear's output, the image). The integer model then runs with numpy
alone. ``export_head_q`` does the same for the aggregation head (BoQ, MixVPR, CLS: every op in
integers on the int8 and vector units, the descriptor L2-normalised in Q15); SALAD's head runs
in float on the dequantised trunk output (``integer_descriptors``): its log-space Sinkhorn has
no fixed-point version.
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


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The one float L2 normalisation (``F.normalize``): the board package's
    ``tatvpr_pynq.heads.l2_normalize``, float64."""
    driver_package()
    from tatvpr_pynq.heads import l2_normalize as norm
    return norm(x, axis)


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


# ---- the vector unit's operand widths (hls/include/tatvpr_vector.h TATVPR_VW_*, rtl/vector_lane.v): the
# checkpoint-dependent operands must fit them, or the HLS / RTL lane would wrap them (docs/hls.md
# "Operand widths of the vector unit")
LN_GAIN_BITS = 24          # TATVPR_VW_GAIN, signed
LN_BIAS_BITS = 48          # TATVPR_VW_BIAS, signed
LN_MAX_DIM = 65535         # LayerNorm rows: |n| < 2**32 (TATVPR_VW_N = 34 bits signed)
LN_EPS_MAX = 2 ** 46 - 2 ** 30 - 1  # var = ssd // d + eps_q < 2**46 (int16 variance <= 2**30): the Q8 root's radicand < 2**62
VEC_MULT_BITS = 31         # TATVPR_VW_MULT: softmax and requant multipliers, unsigned
VEC_SHIFT_RANGE = (1, 62)  # TATVPR_VW_SHIFT = 6 bits
ADD_MULT_BITS = 32         # the residual add's per-channel multiplier: the int32 of its array, signed


def _signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _check_range(layer: str, what: str, values, lo: int, hi: int, width: str) -> None:
    v = np.asarray(values, dtype=object).reshape(-1)  # Python ints: no wrap in the comparison
    for i, x in enumerate(v):
        if not (lo <= int(x) <= hi):
            at = f"[{i}]" if v.size > 1 else ""
            raise UserError(f"{layer}: {what}{at} = {int(x)} is outside the vector unit's {width} range "
                            f"[{lo}, {hi}] (hls/include/tatvpr_vector.h; docs/hls.md \"Operand widths of the vector "
                            f"unit\"): this checkpoint cannot run on the fabric vector unit as built")


def _check_layernorm(layer: str, ln) -> None:
    gain, bias = np.asarray(ln.gain), np.asarray(ln.bias)
    if gain.size > LN_MAX_DIM:
        raise UserError(f"{layer}: LayerNorm over {gain.size} channels; the vector unit's lane holds rows of at "
                        f"most {LN_MAX_DIM}")
    _check_range(layer, "LayerNorm gain", gain, *_signed_range(LN_GAIN_BITS), f"{LN_GAIN_BITS}-bit signed gain")
    _check_range(layer, "LayerNorm bias", bias, *_signed_range(LN_BIAS_BITS), f"{LN_BIAS_BITS}-bit signed bias")
    _check_range(layer, "LayerNorm eps_q", [ln.eps_q], 0, LN_EPS_MAX, "square-root radicand")


def _check_mult_shift(layer: str, mult, shift, signed: bool = False) -> None:
    if signed:
        _check_range(layer, "multiplier", mult, *_signed_range(ADD_MULT_BITS), f"{ADD_MULT_BITS}-bit signed multiplier")
    else:
        _check_range(layer, "multiplier", mult, 0, (1 << VEC_MULT_BITS) - 1, f"{VEC_MULT_BITS}-bit unsigned multiplier")
    _check_range(layer, "shift", shift, *VEC_SHIFT_RANGE, "6-bit shift")


def check_vector_operands(trunk=None, head=None) -> None:
    """Every checkpoint-derived operand of a vector-unit op (LayerNorm gain / bias / eps, the softmax and
    requant multipliers, the residual adds' per-channel multipliers and shifts) within the lane's widths;
    else one :class:`UserError` naming the layer, the value and the allowed range."""
    if trunk is not None:
        for i, b in enumerate(trunk.blocks):
            _check_layernorm(f"blocks.{i}.norm1", b.ln1)
            _check_mult_shift(f"blocks.{i}.attn.softmax", b.softmax_mult, b.softmax_shift)
            _check_mult_shift(f"blocks.{i}.residual_add1", b.res1_mult, b.res1_shift, signed=True)
            _check_layernorm(f"blocks.{i}.norm2", b.ln2)
            _check_mult_shift(f"blocks.{i}.residual_add2", b.res2_mult, b.res2_shift, signed=True)
        if trunk.norm is not None:
            _check_layernorm("norm", trunk.norm)
    if head is not None:
        p = head.p
        for key in sorted(p):
            if key.endswith(".gain"):
                name = key[:-len(".gain")]
                _check_layernorm(name, _iq().LayerNormQ(p[name + ".gain"], p[name + ".bias"], int(p[name + ".eps"])))
            elif key.endswith("softmax.ms") or key in ("head.input.ms", "head.mix_out.ms"):
                m, s = (int(v) for v in np.asarray(p[key]).reshape(-1)[:2])
                _check_mult_shift(key[:-len(".ms")], m, s)
            elif key.endswith(".mult") and key[:-len(".mult")] + ".shift" in p:
                name = key[:-len(".mult")]
                _check_mult_shift(name, p[key], p[name + ".shift"], signed=True)


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
    trunk = iq.TrunkQ(patch=int(p[0] if isinstance(p, (tuple, list)) else p), img_scale=s_img, embed_w=embed_w,
                     embed_bias=embed_bias, embed_mult=em, embed_shift=es, prefix=q16(pos_all[:n_prefix]),
                     pos=q16(pos_all[n_prefix:]), blocks=qblocks, res_scale=s_res, norm=norm,
                     norm_scale=norm_scale, meta={"sparsity": sparsity, "calibration_images": int(images.shape[0])})
    check_vector_operands(trunk=trunk)
    return trunk


def integer_descriptors(model, trunk, images, sparsity: float) -> np.ndarray:
    """L2-normalised descriptors [B, D]: the integer trunk, then the model's float head."""
    import torch

    feats = np.stack([trunk.features(img, sparsity) for img in images.double().cpu().numpy()])
    grid = model.grid_hw((int(images.shape[-2]), int(images.shape[-1])))
    with torch.no_grad():
        d = model.forward_head(torch.from_numpy(feats).float(), grid)
    return l2_normalize(d.double().numpy()).astype(np.float32)


def head_is_integer(model) -> bool:
    """True when ``export_head_q`` exports ``model``'s head (BoQ, MixVPR, CLS, SALAD: every head the
    project builds; SALAD's Sinkhorn part runs in float on the host)."""
    from brevitas_models.heads.boq import BoQHead
    from brevitas_models.heads.cls import CLSHead
    from brevitas_models.heads.mixvpr import MixVPRHead
    from brevitas_models.heads.salad import SALADHead

    return isinstance(model.head, (BoQHead, CLSHead, MixVPRHead, SALADHead))


def integer_eval_descriptors(model, dataset, sparsities, calibration, *, desc: str = "integer") -> dict:
    """{s: L2-normalised descriptors [N, D]} of every image of ``dataset`` through the integer model
    exported at each sparsity (calibrated on ``calibration`` images): the whole query in integers
    (trunk, head, Q15 descriptor) for BoQ, MixVPR and CLS; the integer trunk and the float head for
    SALAD (:func:`head_is_integer`)."""
    from tqdm import tqdm

    out = {}
    for s in sparsities:
        trunk = export_trunk(model, calibration, sparsity=float(s))
        head = export_head_q(model, trunk, calibration, sparsity=float(s)) if head_is_integer(model) else None
        rows = []
        for i in tqdm(range(len(dataset)), desc=f"{desc} s={s:g}", unit="img", leave=False):
            img = dataset[i][0]
            rows.append(integer_descriptors(model, trunk, img[None], float(s)) if head is None
                        else integer_query_descriptors(trunk, head, img[None], float(s)))
        out[float(s)] = np.concatenate(rows, axis=0) if rows else np.zeros((0, model.descriptor_dim), np.float32)
    return out


# ------------------------------------------------------------------------------ the head
INT16_HEADROOM = 8.0  # int16 tensors of the head (GEMM outputs into adds, LayerNorms, the L2 norm): ~12 bits kept, room for inputs unlike the calibration images


class _Amax(dict):
    """Absmax of every named float tensor of the calibration run (the max over images)."""

    def __call__(self, key: str, t: np.ndarray) -> np.ndarray:
        self[key] = max(self.get(key, 0.0), float(np.abs(t).max(initial=0.0)))
        return t

    def s8(self, key: str) -> float:
        return max(self[key], 1e-12) / 127.0

    def s16(self, key: str) -> float:
        return max(self[key], 1e-12) * INT16_HEADROOM / 32767.0


def _ln_f(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def _softmax_f(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mha_f(a: _Amax, f: dict, pre: str, q_in, kv_in, heads: int, cross: bool):
    """Float ``nn.MultiheadAttention`` recording the absmax of what the integer op stores."""
    e = q_in.shape[-1]
    hd = e // heads
    w, b = f[pre + "in_proj_weight"], f[pre + "in_proj_bias"]
    q = q_in @ w[:e].T + b[:e]
    kv = kv_in @ w[e:].T + b[e:]
    if cross:
        a(pre + "q_proj", q)
        a(pre + "kv_proj", kv)
    else:
        a(pre + "in_proj", np.concatenate([q, kv], axis=1))
    k, v = kv[:, :e], kv[:, e:]
    split = lambda t: t.reshape(t.shape[0], heads, hd).transpose(1, 0, 2)  # noqa: E731
    att = a(pre + "av", (_softmax_f(split(q) @ split(k).transpose(0, 2, 1) / math.sqrt(hd)) @ split(v)))
    att = att.transpose(1, 0, 2).reshape(q_in.shape[0], e)
    return a(pre + "out_proj", att @ f[pre + "out_proj.weight"].T + f[pre + "out_proj.bias"])


def _boq_f(a: _Amax, f: dict, patches: np.ndarray) -> np.ndarray:
    """Float BoQ on ``patches [hw, D]`` in the integer head's op order, recording absmax."""
    iq = _iq()
    eps = float(f["ln_eps"])
    heads = int(f["num_heads"])
    gh, gw = (int(v) for v in f["grid_hw"])
    x = a("head.input", patches)
    w = f["proj_c.weight"]
    x = a("head.proj_c", iq.im2col3x3(x, gh, gw) @ w.reshape(w.shape[0], -1).T + f["proj_c.bias"])
    x = a("head.norm_input", _ln_f(x, f["norm_input.weight"], f["norm_input.bias"], eps))
    outs = []
    for i in range(int(f["num_layers"])):
        pre, hp = f"boqs.{i}.", f"head.boqs.{i}."
        e, he = pre + "encoder.", hp + "encoder."
        o = _mha_f(a, _alias(f, e + "self_attn.", he + "self_attn."), he + "self_attn.", x, x, heads, False)
        x1 = a(he + "norm1", _ln_f(a(he + "add1", x + o), f[e + "norm1.weight"], f[e + "norm1.bias"], eps))
        h1 = a(he + "linear1", x1 @ f[e + "linear1.weight"].T + f[e + "linear1.bias"])
        h1 = a(he + "relu", np.maximum(h1, 0.0))
        o = a(he + "linear2", h1 @ f[e + "linear2.weight"].T + f[e + "linear2.bias"])
        x = a(he + "norm2", _ln_f(a(he + "add2", x1 + o), f[e + "norm2.weight"], f[e + "norm2.bias"], eps))
        q0 = a(hp + "queries", f[pre + "queries"][0])
        o = _mha_f(a, _alias(f, pre + "self_attn.", hp + "self_attn."), hp + "self_attn.", q0, q0, heads, False)
        q = a(hp + "norm_q", _ln_f(a(hp + "add", q0 + o), f[pre + "norm_q.weight"], f[pre + "norm_q.bias"], eps))
        o = _mha_f(a, _alias(f, pre + "cross_attn.", hp + "cross_attn."), hp + "cross_attn.", q, x, heads, True)
        outs.append(a("head.norm_out", _ln_f(o, f[pre + "norm_out.weight"], f[pre + "norm_out.bias"], eps)))
    q = np.concatenate(outs, axis=0)
    return a("head.fc", q.T @ f["fc.weight"].T + f["fc.bias"]).reshape(-1)


def _mixvpr_f(a: _Amax, f: dict, patches: np.ndarray) -> np.ndarray:
    eps = float(f["ln_eps"])
    x = a("head.mix_in", patches.T)                                           # [D, hw]
    for i in range(int(f["mix_depth"])):
        pre, hp = f"mix.{i}.mix.", f"head.mix.{i}."
        h = a(hp + "mix.0", _ln_f(x, f[pre + "0.weight"], f[pre + "0.bias"], eps))
        h = a(hp + "mix.1", h @ f[pre + "1.weight"].T + f[pre + "1.bias"])
        h = a(hp + "mix.2", np.maximum(h, 0.0))
        x = a(hp + "add", x + a(hp + "mix.3", h @ f[pre + "3.weight"].T + f[pre + "3.bias"]))
    x = a("head.mix_out", x)
    c = a("head.channel_proj", x.T @ f["channel_proj.weight"].T + f["channel_proj.bias"])
    return a("head.row_proj", c.T @ f["row_proj.weight"].T + f["row_proj.bias"]).reshape(-1)


def _salad_mlps_f(a: _Amax, f: dict, prefix: np.ndarray, patches: np.ndarray) -> None:
    """Float SALAD MLPs (what runs on the int8 unit), recording absmax."""
    def mlp(pre, x, mid, last):
        w0 = f[pre + "0.weight"]
        h = a("head." + pre + "0", x @ w0.reshape(w0.shape[0], -1).T + f[pre + "0.bias"])
        h = a("head." + pre + mid, np.maximum(h, 0.0))
        w1 = f[pre + last + ".weight"]
        a("head." + pre + last, h @ w1.reshape(w1.shape[0], -1).T + f[pre + last + ".bias"])

    mlp("cluster_features.", patches, "2", "3")
    mlp("score.", patches, "2", "3")
    mlp("token_features.", prefix[:1], "1", "2")


def _alias(f: dict, src: str, dst: str) -> dict:
    """``f``'s ``src*`` arrays also under ``dst*`` (the float pass names ops like the integer head)."""
    return {**f, **{dst + k[len(src):]: v for k, v in f.items() if k.startswith(src)}}


def _wq(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-tensor int8 weights ``w [N, K]`` -> (int8 ``[K, N]``, step)."""
    s = max(float(np.abs(w).max(initial=0.0)), 1e-12) / 127.0
    return np.ascontiguousarray(np.clip(np.rint(w / s), -127, 127).astype(np.int8).T), s


def _head_linear(p: dict, name: str, w: np.ndarray, b: np.ndarray | None, s_in: float, s_out: float,
                 out: str) -> None:
    wq, s_w = _wq(w)
    acc = s_in * s_w
    p[name + ".w"] = wq
    if b is not None:
        bq = np.rint(np.asarray(b, np.float64) / acc).astype(np.int64)
        if np.abs(bq).max(initial=0) >= 2 ** 31:
            raise UserError(f"{name}: bias does not fit int32 accumulator units (step {acc:.3g})")
        p[name + ".b"] = bq
    p[name + ".ms"] = np.array(_mult_shift(acc / s_out))
    p[name + ".out"] = np.array(out)


def _head_ln(p: dict, name: str, w, b, eps: float, s_in: float, s_out: float) -> None:
    ln = _iq().layernorm_params(w, b, eps, s_in, s_out)
    p[name + ".gain"], p[name + ".bias"], p[name + ".eps"] = ln.gain, ln.bias, np.array(ln.eps_q)


def _head_add(p: dict, name: str, s_y: float, s_out: float, d: int) -> None:
    m, s = _mult_shift(s_y / s_out)
    p[name + ".mult"], p[name + ".shift"] = np.full(d, m, np.int64), np.full(d, s, np.int64)


def _relu_table(s_in: float, s_out: float) -> np.ndarray:
    return np.clip(np.rint(np.maximum(np.arange(-128, 128) * s_in, 0.0) / s_out), -128, 127).astype(np.int8)


def _head_mha(p: dict, a: _Amax, f: dict, src: str, pre: str, s_q: float, s_kv: float, heads: int,
              cross: bool, s_out: float) -> None:
    e = f[src + "in_proj_weight"].shape[1]
    w, b = f[src + "in_proj_weight"], f[src + "in_proj_bias"]
    if cross:
        _head_linear(p, pre + "q_proj", w[:e], b[:e], s_q, a.s8(pre + "q_proj"), "int8")
        _head_linear(p, pre + "kv_proj", w[e:], b[e:], s_kv, a.s8(pre + "kv_proj"), "int8")
        sq, skv = a.s8(pre + "q_proj"), a.s8(pre + "kv_proj")
    else:
        _head_linear(p, pre + "in_proj", w, b, s_q, a.s8(pre + "in_proj"), "int8")
        sq = skv = a.s8(pre + "in_proj")
    iq = _iq()
    p[pre + "softmax.ms"] = np.array(_mult_shift(sq * skv / math.sqrt(e // heads) * math.log2(math.e)
                                                 * 2 ** iq.SOFTMAX_U_BITS))
    p[pre + "av.ms"] = np.array(_mult_shift(skv / 255.0 / a.s8(pre + "av")))
    _head_linear(p, pre + "out_proj", f[src + "out_proj.weight"], f[src + "out_proj.bias"], a.s8(pre + "av"),
                 s_out, "int16")


def export_head_q(model, trunk, calibration, *, sparsity: float = 0.0) -> Any:
    """The student's float head -> ``tatvpr_pynq.integer.HeadQ`` (BoQ, MixVPR, CLS, SALAD) with
    scales from the calibration images run through the integer ``trunk`` (what the head will see).
    SALAD's MLPs are integer; its Sinkhorn part runs in float on the host."""
    from tatvpr_hw.lower.hls.bundle import export_head

    iq = _iq()
    grid = model.grid_hw((int(calibration.shape[-2]), int(calibration.shape[-1])))
    f = export_head(model, grid)
    kind = str(f["kind"])
    if kind not in iq.HEAD_Q_KINDS:
        raise UserError(f"the integer head implements {', '.join(iq.HEAD_Q_KINDS)}, not {kind}")
    uses_norm = bool(getattr(model.head, "uses_final_norm", True))
    if uses_norm and trunk.norm is None:
        raise UserError(f"the {kind} head uses the final LayerNorm; the exported trunk has none")
    n_pre = int(f["num_prefix_tokens"])
    p: dict = {"kind": np.array(kind), "num_prefix_tokens": np.array(n_pre), "grid_hw": f["grid_hw"],
               "uses_final_norm": np.array(int(uses_norm))}
    if kind == "cls":
        return iq.HeadQ(p)
    a = _Amax()
    for img in calibration.double().cpu().numpy():
        x = trunk.tokens(trunk.quantize_image(img), sparsity)
        if uses_norm:
            tok = trunk.norm(x).astype(np.float64) * trunk.norm_scale
        else:
            tok = x.astype(np.float64) * trunk.res_scale
        if kind == "salad":
            _salad_mlps_f(a, f, tok[:n_pre], tok[n_pre:])
        else:
            (_boq_f if kind == "boq" else _mixvpr_f)(a, f, tok[n_pre:])
    if kind == "boq":
        _boq_params(p, a, f, trunk.res_scale)
    elif kind == "mixvpr":
        _mixvpr_params(p, a, f, trunk.norm_scale)
    else:
        _salad_params(p, a, f, trunk.norm_scale)
    head = iq.HeadQ(p)
    check_vector_operands(head=head)
    return head


def _salad_params(p: dict, a: _Amax, f: dict, s_n: float) -> None:
    p.update(dust_bin=np.array(float(f["dust_bin"])), sinkhorn_iters=np.array(int(f["sinkhorn_iters"])))
    for pre, mid, last in (("cluster_features.", "2", "3"), ("score.", "2", "3"), ("token_features.", "1", "2")):
        hp = "head." + pre
        w0, w1 = f[pre + "0.weight"], f[pre + last + ".weight"]
        _head_linear(p, hp + "0", w0.reshape(w0.shape[0], -1), f[pre + "0.bias"], s_n, a.s8(hp + "0"), "int8")
        p[hp + mid + ".table"] = _relu_table(a.s8(hp + "0"), a.s8(hp + mid))
        _head_linear(p, hp + last, w1.reshape(w1.shape[0], -1), f[pre + last + ".bias"], a.s8(hp + mid),
                     a.s16(hp + last), "int16")
        p[hp + last + ".step"] = np.array(a.s16(hp + last))  # the host dequantises with it


def _boq_params(p: dict, a: _Amax, f: dict, s_res: float) -> None:
    eps = float(f["ln_eps"])
    heads = int(f["num_heads"])
    p.update(num_heads=np.array(heads), num_layers=np.array(int(f["num_layers"])))
    s_in = a.s8("head.input")
    p["head.input.ms"] = np.array(_mult_shift(s_res / s_in))
    _head_linear(p, "head.proj_c", f["proj_c.weight"].reshape(f["proj_c.weight"].shape[0], -1), f["proj_c.bias"],
                 s_in, a.s16("head.proj_c"), "int16")
    _head_ln(p, "head.norm_input", f["norm_input.weight"], f["norm_input.bias"], eps, a.s16("head.proj_c"),
             a.s8("head.norm_input"))
    s_x = a.s8("head.norm_input")
    s_cat = a.s8("head.norm_out")
    d = f["norm_input.weight"].shape[0]
    for i in range(int(f["num_layers"])):
        pre, hp = f"boqs.{i}.", f"head.boqs.{i}."
        e, he = pre + "encoder.", hp + "encoder."
        s_r1 = max(a.s16(he + "add1"), a.s16(he + "self_attn.out_proj"))
        _head_mha(p, a, f, e + "self_attn.", he + "self_attn.", s_x, s_x, heads, False, s_r1)
        _head_add(p, he + "add1", s_x, s_r1, d)
        _head_ln(p, he + "norm1", f[e + "norm1.weight"], f[e + "norm1.bias"], eps, s_r1, a.s8(he + "norm1"))
        s_x1 = a.s8(he + "norm1")
        _head_linear(p, he + "linear1", f[e + "linear1.weight"], f[e + "linear1.bias"], s_x1,
                     a.s8(he + "linear1"), "int8")
        p[he + "relu.table"] = _relu_table(a.s8(he + "linear1"), a.s8(he + "relu"))
        s_r2 = max(a.s16(he + "add2"), a.s16(he + "linear2"))
        _head_linear(p, he + "linear2", f[e + "linear2.weight"], f[e + "linear2.bias"], a.s8(he + "relu"), s_r2,
                     "int16")
        _head_add(p, he + "add2", s_x1, s_r2, d)
        _head_ln(p, he + "norm2", f[e + "norm2.weight"], f[e + "norm2.bias"], eps, s_r2, a.s8(he + "norm2"))
        s_x = a.s8(he + "norm2")
        s_q0 = a.s8(hp + "queries")
        p[hp + "queries"] = np.clip(np.rint(f[pre + "queries"][0] / s_q0), -127, 127).astype(np.int8)
        s_rq = max(a.s16(hp + "add"), a.s16(hp + "self_attn.out_proj"))
        _head_mha(p, a, f, pre + "self_attn.", hp + "self_attn.", s_q0, s_q0, heads, False, s_rq)
        _head_add(p, hp + "add", s_q0, s_rq, d)
        _head_ln(p, hp + "norm_q", f[pre + "norm_q.weight"], f[pre + "norm_q.bias"], eps, s_rq, a.s8(hp + "norm_q"))
        s_co = a.s16(hp + "cross_attn.out_proj")
        _head_mha(p, a, f, pre + "cross_attn.", hp + "cross_attn.", a.s8(hp + "norm_q"), s_x, heads, True, s_co)
        _head_ln(p, hp + "norm_out", f[pre + "norm_out.weight"], f[pre + "norm_out.bias"], eps, s_co, s_cat)
    _head_linear(p, "head.fc", f["fc.weight"], f["fc.bias"], s_cat, a.s16("head.fc"), "int16")


def _mixvpr_params(p: dict, a: _Amax, f: dict, s_n: float) -> None:
    eps = float(f["ln_eps"])
    p["mix_depth"] = np.array(int(f["mix_depth"]))
    # the mixers' residual stream: int16 at the final norm's int8 step
    if a["head.mix_out"] / s_n >= 32767:
        raise UserError(f"MixVPR: the mixers' output ({a['head.mix_out']:.3g}) overflows int16 at the final "
                        f"norm's step {s_n:.3g}")
    s_x = s_n
    for i in range(int(f["mix_depth"])):
        pre, hp = f"mix.{i}.mix.", f"head.mix.{i}."
        hw = f[pre + "0.weight"].shape[0]
        _head_ln(p, hp + "mix.0", f[pre + "0.weight"], f[pre + "0.bias"], eps, s_x, a.s8(hp + "mix.0"))
        _head_linear(p, hp + "mix.1", f[pre + "1.weight"], f[pre + "1.bias"], a.s8(hp + "mix.0"),
                     a.s8(hp + "mix.1"), "int8")
        p[hp + "mix.2.table"] = _relu_table(a.s8(hp + "mix.1"), a.s8(hp + "mix.2"))
        _head_linear(p, hp + "mix.3", f[pre + "3.weight"], f[pre + "3.bias"], a.s8(hp + "mix.2"),
                     a.s8(hp + "mix.3"), "int8")
        _head_add(p, hp + "add", a.s8(hp + "mix.3"), s_x, hw)
    s_mx = a.s8("head.mix_out")
    p["head.mix_out.ms"] = np.array(_mult_shift(s_x / s_mx))
    _head_linear(p, "head.channel_proj", f["channel_proj.weight"], f["channel_proj.bias"], s_mx,
                 a.s8("head.channel_proj"), "int8")
    _head_linear(p, "head.row_proj", f["row_proj.weight"], f["row_proj.bias"], a.s8("head.channel_proj"),
                 a.s16("head.row_proj"), "int16")


def integer_query_descriptors(trunk, head, images, sparsity: float) -> np.ndarray:
    """Float images ``[B, 3, H, W]`` -> float32 ``[B, D]``: the whole integer query (trunk, head,
    Q15 L2-normalised descriptor), dequantised."""
    iq = _iq()
    rows = [iq.descriptor_float(iq.query_descriptor(trunk, head, trunk.quantize_image(img), sparsity))
            for img in images.double().cpu().numpy()]
    return np.stack(rows).astype(np.float32)


# ------------------------------------------------------------------------------ head ops vs the trace
# Trace ops of the head that the integer head does not run, and why (anything else unmatched fails).
TRACE_ONLY = {
    "mul": "the query scaling 1/sqrt(head_dim) of nn.MultiheadAttention: folded into the softmax multiplier",
    "mean": "the head-averaged attention weights nn.MultiheadAttention returns: not used by the descriptor",
    "bias_add": "a linear's bias added by a separate ATen add: in the int8 unit's accumulator",
    "host": "SALAD's Sinkhorn, aggregation and normalisation: run on the host in float by the integer model; "
            "a trace from before the host flag charges them on the int8 and vector units",
}
# Integer-head ops the trace does not have (the simulator does not charge them), and why.
INTEGER_ONLY = {
    "requant": "the head's int8 input from the int16 residual stream (vector unit; a trace from before the "
               "tracer recorded it lacks it: PyTorch hands the head float tokens)",
}


def head_op_signatures(int_ops: list[dict], traced_kinds: set = frozenset()) -> tuple[list[tuple], list[str]]:
    """Integer-head ops (``RecordingUnits.ops`` / C-sim ops named ``head.*``) -> (signatures, the
    INTEGER_ONLY ops' names; a kind in ``traced_kinds`` counts as traced). A signature is
    ``("int8", m, k, n, batch)`` or ``(kind, elements, row)``."""
    sigs, extra = [], []
    for op in int_ops:
        if not op["name"].startswith("head."):
            continue
        if op["unit"] == "int8":
            sigs.append(("int8", op["m"], op["k"], op["n"], op["batch"]))
        elif op["unit"] == "host":
            sigs.append(("host",))
        elif op["kind"] in INTEGER_ONLY and op["kind"] not in traced_kinds:
            extra.append(op["name"])
        else:
            sigs.append((op["kind"], op["elements"], op["row"]))
    return sigs, extra


def trace_head_signatures(trace_ops) -> tuple[list[tuple], list[tuple[str, str]]]:
    """The head's ops of a ``sim.trace`` trace (names ``head*``) -> (signatures as in
    :func:`head_op_signatures`, [(dropped op, TRACE_ONLY reason)]). ReLU (``other``) is the vector
    unit's table (``lut``); ``l2norm`` (or, in a trace from before the tracer recorded it,
    ``linalg_vector_norm`` + ``clamp_min`` + ``div`` of ``F.normalize``) is one ``l2norm`` of one row;
    a run of host ops (trace field ``host``) is one ``("host",)``; an unknown op keeps its ATen name as
    kind (and so matches nothing)."""
    import re

    from sim.trace import DenseOp

    ops = [op for op in trace_ops if op.name.startswith("head")]
    sigs, dropped = [], []
    i = 0
    while i < len(ops):
        op = ops[i]
        aten = re.sub(r"\d+$", "", op.name.rsplit(".", 1)[-1])
        prev = ops[i - 1] if i else None
        if getattr(op, "host", False):
            if not sigs or sigs[-1] != ("host",):
                sigs.append(("host",))
        elif isinstance(op, DenseOp):
            sigs.append(("int8", op.m, op.k, op.n, op.batch))
        elif op.kind == "l2norm":
            sigs.append(("l2norm", op.elements, op.row))
        elif aten == "linalg_vector_norm" and [re.sub(r"\d+$", "", o.name.rsplit(".", 1)[-1])
                                               for o in ops[i + 1:i + 3]] == ["clamp_min", "div"]:
            sigs.append(("l2norm", op.elements, op.elements))
            i += 3
            continue
        elif op.kind == "requant" or op.name in ("head.input", "head.mix_out"):  # the head's requant
            sigs.append(("requant", op.elements, 0))
        elif aten in ("mul", "mean"):
            dropped.append((op.name, TRACE_ONLY[aten]))
        elif (op.kind == "add" and isinstance(prev, DenseOp) and prev.weights
              and op.elements == prev.m * prev.n * prev.batch
              and op.name.rsplit(".", 1)[0] == prev.name.rsplit(".", 1)[0]):
            dropped.append((op.name, TRACE_ONLY["bias_add"]))
        elif op.kind in ("layernorm", "softmax"):
            sigs.append((op.kind, op.elements, op.row))
        elif op.kind == "add":
            sigs.append(("add", op.elements, 0))
        elif aten == "relu" or op.kind == "gelu":
            sigs.append(("lut", op.elements, 0))
        else:
            sigs.append((aten, op.elements, 0))
        i += 1
    return sigs, dropped


def compare_head_ops(int_ops: list[dict], trace_ops) -> dict:
    """The integer head's ops against the simulator's trace of the same head: ``match`` when, after
    the declared differences (TRACE_ONLY, INTEGER_ONLY), both list the same ops on the same units
    with the same shapes, in the same order; ``first_difference`` names the first op that differs."""
    theirs, dropped = trace_head_signatures(trace_ops)
    mine, extra = head_op_signatures(int_ops, {sig[0] for sig in theirs})
    if ("host",) in mine and ("host",) not in theirs:  # a trace without host flags: its remaining ops are the host part
        cut = mine.index(("host",))
        if mine[cut + 1:]:
            raise ValueError("integer head ops after its host part: not supported by compare_head_ops")
        mine = mine[:cut]
        dropped = dropped + [(f"{len(theirs) - cut} traced ops from #{cut}", TRACE_ONLY["host"])] \
            if len(theirs) > cut else dropped
        theirs = theirs[:cut]
    first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), None)
    if first is None and len(mine) != len(theirs):
        first = min(len(mine), len(theirs))
    return {"match": first is None, "integer": mine, "trace": theirs, "integer_only": extra,
            "trace_only": dropped,
            "first_difference": None if first is None else
            {"index": first, "integer": mine[first] if first < len(mine) else None,
             "trace": theirs[first] if first < len(theirs) else None}}


# ------------------------------------------------------------------------------ command line
def descriptor_cosines(model, images, sparsity: float, calibration) -> np.ndarray:
    """Per image, the cosine between the whole integer query's descriptor and the float student's."""
    import torch

    from brevitas_models.sparsity import sparsity_context

    trunk = export_trunk(model, calibration, sparsity=sparsity)
    head = export_head_q(model, trunk, calibration, sparsity=sparsity) if head_is_integer(model) else None
    dq = (integer_query_descriptors(trunk, head, images, sparsity) if head is not None
          else integer_descriptors(model, trunk, images, sparsity))
    with torch.no_grad(), sparsity_context(model, sparsity, "token"):
        df = l2_normalize(torch.cat([model(images[i:i + 50]) for i in range(0, len(images), 50)]).double().numpy())
    return (dq.astype(np.float64) * df).sum(1)


def main(argv=None) -> int:
    """``python -m tatvpr_hw.integer --config C --checkpoint CK [--sparsity 0,0.4]``: descriptor cosine,
    integer query vs float student, over the benchmark's queries (calibrated like ``eval --integer``)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m tatvpr_hw.integer", description=main.__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--sparsity", default="0,0.4")
    args = ap.parse_args(argv)
    try:
        sps = [float(v) for v in args.sparsity.split(",")]
    except ValueError:
        print(f"error: --sparsity must be comma-separated numbers, got {args.sparsity!r}", file=sys.stderr)
        return 2
    if not all(0.0 <= s < 1.0 for s in sps):
        print(f"error: --sparsity values must be in [0, 1), got {args.sparsity}", file=sys.stderr)
        return 2
    try:
        import torch

        from tatvpr_hw.config import load_config
        from tatvpr_hw.data.vpr import VPREvalSet, eval_root
        from tatvpr_hw.evaluation import INTEGER_CALIBRATION_IMAGES, _sample_images, load_models

        cfg = load_config(args.config)
        _, student = load_models(cfg, args.checkpoint)
        if student is None:
            raise UserError(f"{args.checkpoint} is a teacher checkpoint; the integer model needs the student")
        ev = VPREvalSet(eval_root(cfg.data), cfg.model.student_img_size, cfg.data.positive_radius_m)
        calib = _sample_images(ev.database, INTEGER_CALIBRATION_IMAGES)
        queries = torch.stack([ev.queries[i][0] for i in range(len(ev.queries))])
        for s in sps:
            c = descriptor_cosines(student, queries, s, calib)
            print(f"s={s:g}: {len(c)} queries, cosine integer query vs float student: mean {c.mean():.5f}, "
                  f"median {np.median(c):.5f}, min {c.min():.5f}"
                  + ("" if head_is_integer(student) else " (integer trunk + float head: SALAD)"))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
