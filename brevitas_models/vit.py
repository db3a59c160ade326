"""DINOv2 Vision Transformer backbones (timm's ``VisionTransformer``): float teacher, ternary student.

DINOv2: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023.
The backbone is timm's ``VisionTransformer`` (LayerScale, register tokens, dynamic image size)
with one change: the position embeddings are resampled to the input grid exactly as the
official DINOv2 code does (:func:`interpolate_pos_encoding_dinov2`: bicubic with a scale factor
of ``(n + 0.1) / sqrt(N)``, no antialiasing; the register variants ``*_reg4_*`` use the hub's
``interpolate_offset=0.0, interpolate_antialias=True``: size-based, antialiased), so real DINOv2 /
BoQ weights give the official outputs at 224 and 322 px. timm's own ``resample_abs_pos_embed`` (size-based, antialiased)
differs; :func:`pos_embed_resampling_difference` measures by how much.

The student (:func:`ternarize`) is the same backbone with every block linear (``attn.qkv``,
``attn.proj``, ``mlp.fc1``, ``mlp.fc2``) replaced by a
:class:`~brevitas_models.quant.SparseTernaryLinear` carrying the float weights over (stage-1
initialisation); the patch embedding can be made ternary too (:class:`TernaryPatchProj`).

File order (timm's): pos-embed geometry, the backbone class, student conversion, variants,
factory.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from brevitas_models.quant import SparseTernaryLinear
from brevitas_models.sparsity import Granularity
from brevitas_models.config import TernaryConfig
from brevitas_models.errors import ModelInputError

log = logging.getLogger(__name__)

PATCH_PX = 14
DINOV2_OFFSET = 0.1  # official hub models: interpolate_offset=0.1, interpolate_antialias=False
# ... except the register variants (hub dinov2_vit*14_reg): no offset (size-based), antialiased
_DINOV2_REG_INTERP = dict(interpolate_offset=0.0, interpolate_antialias=True)


# --------------------------------------------------------------------------------------------
# Position-embedding geometry
# --------------------------------------------------------------------------------------------

def interpolate_pos_encoding_dinov2(pos_embed: torch.Tensor, grid_hw: tuple[int, int],
                                    num_prefix_tokens: int = 1, *,
                                    offset: float = DINOV2_OFFSET,
                                    antialias: bool = False) -> torch.Tensor:
    """Resample ``pos_embed [1, P + M*M, D]`` to a ``grid_hw = (h0, w0)`` patch grid, DINOv2's way.

    The ``P`` prefix entries (class token; 0 for timm's register layout) pass through. As the
    official ``DinoVisionTransformer.interpolate_pos_encoding``: the table is returned
    unchanged when the grid has ``M*M`` patches and is square; otherwise the ``M x M`` grid is
    resampled in float32 by ``F.interpolate(mode="bicubic", scale_factor=((h0 + offset) / M,
    (w0 + offset) / M))`` (``size=(h0, w0)`` when ``offset == 0``), i.e. output pixel ``i``
    samples source coordinate ``(i + 0.5) * M / (h0 + offset) - 0.5``.
    """
    h0, w0 = int(grid_hw[0]), int(grid_hw[1])
    n = pos_embed.shape[1] - num_prefix_tokens
    m = int(math.isqrt(n))
    if m * m != n:
        raise ModelInputError(f"position embedding has {n} patch entries, not a square grid")
    if h0 * w0 == n and h0 == w0:
        return pos_embed
    dtype = pos_embed.dtype
    pe = pos_embed.float()
    prefix, grid = pe[:, :num_prefix_tokens], pe[:, num_prefix_tokens:]
    dim = pe.shape[-1]
    grid = grid.reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:
        kwargs = {"scale_factor": (float(h0 + offset) / m, float(w0 + offset) / m)}
    else:
        kwargs = {"size": (h0, w0)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
    if tuple(grid.shape[-2:]) != (h0, w0):
        raise ModelInputError(f"DINOv2 interpolation gave a {tuple(grid.shape[-2:])} grid, wanted {(h0, w0)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, dim)
    return torch.cat((prefix, grid), dim=1).to(dtype)


def pos_embed_resampling_difference(pos_embed: torch.Tensor, img_px: int,
                                    num_prefix_tokens: int = 1) -> dict[str, float]:
    """Max / mean |official DINOv2 - timm ``resample_abs_pos_embed``| at ``img_px`` (square)."""
    from timm.layers import resample_abs_pos_embed

    g = img_px // PATCH_PX
    m = int(math.isqrt(pos_embed.shape[1] - num_prefix_tokens))
    ours = interpolate_pos_encoding_dinov2(pos_embed, (g, g), num_prefix_tokens)
    theirs = resample_abs_pos_embed(pos_embed, new_size=(g, g), old_size=(m, m),
                                    num_prefix_tokens=num_prefix_tokens)
    d = (ours - theirs).abs()
    return {"img_px": img_px, "grid": g, "max_abs_diff": float(d.max()),
            "mean_abs_diff": float(d.mean()), "pos_embed_abs_max": float(pos_embed.abs().max())}


# --------------------------------------------------------------------------------------------
# Backbone
# --------------------------------------------------------------------------------------------

class DinoV2VisionTransformer(VisionTransformer):
    """timm ``VisionTransformer`` with DINOv2's position-embedding interpolation.

    One face for teacher and student: ``forward_features(x) -> tokens [B, T, D]`` (T = prefix
    tokens + h*w patches, after the final norm), attributes ``embed_dim``,
    ``num_prefix_tokens``, ``patch_size``, ``img_size`` (the run's input side in px) and
    :meth:`grid_size`. Any input side that is a multiple of 14 px works (dynamic size).

    Args:
        img_size: side in px of the stored position-embedding grid (518 for the official
            DINOv2 checkpoints, i.e. 37 x 37 patches).
        run_img_size: the input side the run uses (defaults to ``img_size``).
        interpolate_offset, interpolate_antialias: DINOv2's resampling settings.
        **kwargs: timm ``VisionTransformer`` arguments (embed_dim, depth, num_heads,
            init_values, reg_tokens, no_embed_class, ...).
    """

    def __init__(self, *, img_size: int = 518, run_img_size: int | None = None,
                 interpolate_offset: float = DINOV2_OFFSET, interpolate_antialias: bool = False,
                 **kwargs) -> None:
        kwargs.setdefault("patch_size", PATCH_PX)
        kwargs["dynamic_img_size"] = True
        kwargs.setdefault("num_classes", 0)
        super().__init__(img_size=img_size, **kwargs)
        self.patch_size = int(kwargs["patch_size"])
        self.pos_embed_img_size = int(img_size)
        self.img_size = int(run_img_size or img_size)
        self.interpolate_offset = float(interpolate_offset)
        self.interpolate_antialias = bool(interpolate_antialias)

    def grid_size(self, img_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of an input of ``img_size`` px (int = square)."""
        if img_size is None:
            img_size = self.img_size
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        return h // self.patch_size, w // self.patch_size

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, h, w, D] from the dynamic-size patch embedding
        b, h, w, d = x.shape
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        pos = interpolate_pos_encoding_dinov2(self.pos_embed, (h, w), prefix,
                                              offset=self.interpolate_offset,
                                              antialias=self.interpolate_antialias)
        x = x.reshape(b, h * w, d)
        to_cat = []
        if self.cls_token is not None:
            to_cat.append(self.cls_token.expand(b, -1, -1))
        if self.reg_token is not None:
            to_cat.append(self.reg_token.expand(b, -1, -1))
        if self.no_embed_class:  # timm's register layout: [cls, reg, patches + pos]
            x = x + pos
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
        else:
            if to_cat:
                x = torch.cat(to_cat + [x], dim=1)
            x = x + pos
        return self.pos_drop(x)

    def forward_features(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ModelInputError(f"input of {tuple(x.shape[-2:])} px is not a multiple of the "
                            f"patch size {self.patch_size} px")
        return super().forward_features(x, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Student conversion
# --------------------------------------------------------------------------------------------

BLOCK_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


class TernaryPatchProj(nn.Module):
    """A stride = kernel patch convolution as a :class:`SparseTernaryLinear` over unfolded patches.

    Drop-in for ``patch_embed.proj`` (``Conv2d(C, D, p, stride=p)``): input ``[B, C, H, W]``,
    output ``[B, D, H/p, W/p]``. The linear's ``K = C*p*p`` follows ``F.unfold``'s order
    (channel, row, column), which is the conv weight's ``reshape(D, -1)``.
    """

    def __init__(self, conv: nn.Conv2d, **kwargs) -> None:
        super().__init__()
        if conv.kernel_size != conv.stride or conv.padding not in ((0, 0), 0) or conv.groups != 1:
            raise ModelInputError("only a stride == kernel, unpadded patch convolution can be ternarized")
        self.patch = tuple(conv.kernel_size)
        d = conv.out_channels
        self.proj = SparseTernaryLinear(conv.in_channels * self.patch[0] * self.patch[1], d,
                                        bias=conv.bias is not None, **kwargs)
        with torch.no_grad():
            self.proj.linear.weight.copy_(conv.weight.reshape(d, -1))
            if conv.bias is not None:
                self.proj.linear.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        gh, gw = h // self.patch[0], w // self.patch[1]
        cols = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)  # [B, h*w, C*p*p]
        y = self.proj(cols)
        return y.transpose(1, 2).reshape(b, -1, gh, gw)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def replace_linears(root: nn.Module, names: Iterable[str], **kwargs) -> list[str]:
    """Replace the named ``nn.Linear`` submodules of ``root`` by SparseTernaryLinear copies.

    ``kwargs`` go to :class:`SparseTernaryLinear` (per_channel, act_bits, sparsity,
    granularity). Returns the replaced names. Usable on heads too.
    """
    done = []
    for name in names:
        mod = root.get_submodule(name)
        if isinstance(mod, SparseTernaryLinear):
            continue
        if not isinstance(mod, nn.Linear):
            raise ModelInputError(f"{name} is a {type(mod).__name__}, not a Linear; cannot ternarize it")
        _set_submodule(root, name, SparseTernaryLinear.from_linear(mod, **kwargs))
        done.append(name)
    return done


def resolve_blocks(indices: Iterable[int], depth: int, key: str = "model.ternary.float_ffn_blocks") -> set[int]:
    """Block indices (negative = from the end) -> a set of 0-based indices; out of range raises."""
    out = set()
    for i in indices:
        j = int(i) + depth if int(i) < 0 else int(i)
        if not 0 <= j < depth:
            raise ModelInputError(f"{key}: block {i} does not exist; the backbone has {depth} blocks "
                                  f"(0..{depth - 1}, or negative from the end)")
        out.add(j)
    return out


def set_act_quant(model: nn.Module, enabled: bool) -> int:
    """Switch the input quantizer of every SparseTernaryLinear in ``model`` on or off.

    Off (the Sparse-TeTRA reference: float activations) the linear sees the float top-k output;
    the threshold parameter stays (calibrated as usual) so tracing and op counting still work.
    Returns the number of layers set.
    """
    layers = [m for m in model.modules() if isinstance(m, SparseTernaryLinear)]
    for m in layers:
        m.linear.input_quant.disable_quant = not enabled
    return len(layers)


def ternarize(backbone: DinoV2VisionTransformer, ternary: TernaryConfig | None = None, *,
              sparsity: float = 0.0, granularity: Granularity = "token") -> DinoV2VisionTransformer:
    """Turn a float backbone into the ternary student, IN PLACE, keeping its float weights.

    Which parts: ``ternary.blocks`` (every block's qkv, proj, fc1, fc2, except the FFN of the
    blocks in ``ternary.float_ffn_blocks``, which stays a float dense ``nn.Linear`` pair without
    top-k) and ``ternary.patch_embed``; ``ternary.per_channel``, ``ternary.act_bits`` and
    ``ternary.act_quant`` configure the quantizers. The int8 input thresholds start at 1.0: set
    them with :func:`brevitas_models.quant.calibrate_input_scales` before evaluating. Use
    ``ternarize(copy.deepcopy(teacher))`` for the stage-1 initialisation from a teacher.
    """
    ternary = ternary or TernaryConfig()
    kw = dict(per_channel=ternary.per_channel, act_bits=ternary.act_bits,
              sparsity=sparsity, granularity=granularity)
    replaced = []
    depth = len(backbone.blocks)
    float_ffn = resolve_blocks(ternary.float_ffn_blocks, depth)
    if ternary.blocks:
        names = [f"blocks.{i}.{lin}" for i in range(depth) for lin in BLOCK_LINEARS
                 if not (i in float_ffn and lin.startswith("mlp."))]
        replaced += replace_linears(backbone, names, **kw)
    if ternary.patch_embed and not isinstance(backbone.patch_embed.proj, TernaryPatchProj):
        if not isinstance(backbone.patch_embed.proj, nn.Conv2d):
            raise ModelInputError("ternary.patch_embed needs a convolution patch embedding; this backbone's "
                                  f"is a {type(backbone.patch_embed.proj).__name__}")
        backbone.patch_embed.proj = TernaryPatchProj(backbone.patch_embed.proj, **kw)
        replaced.append("patch_embed.proj")
    if not ternary.act_quant:
        set_act_quant(backbone, False)
    log.debug("ternarized %d layers", len(replaced))
    backbone.is_student = True
    return backbone


def student_from_teacher(teacher: DinoV2VisionTransformer, ternary: TernaryConfig | None = None,
                         **kwargs) -> DinoV2VisionTransformer:
    """Stage 1: a ternary student whose latent weights are a copy of the teacher's."""
    return ternarize(copy.deepcopy(teacher), ternary, **kwargs)


# --------------------------------------------------------------------------------------------
# Variants and factory
# --------------------------------------------------------------------------------------------

class LNPatchEmbed(PatchEmbed):
    """Sparse-TeTRA's patch embedding (``model/models.py`` ``to_patch_embedding``): each p x p
    patch flattened in (row, column, channel) order -> LayerNorm -> Linear -> LayerNorm.

    A timm ``PatchEmbed`` (same constructor, output ``[B, h, w, D]`` as the dynamic-size ViT
    wants) whose ``proj`` is an ``nn.Linear(3 * p * p, D)`` instead of a convolution.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.pop("norm_layer", None)
        super().__init__(*args, **kwargs)
        conv = self.proj
        k = conv.in_channels * self.patch_size[0] * self.patch_size[1]
        self.pre_norm = nn.LayerNorm(k)
        self.proj = nn.Linear(k, conv.out_channels, bias=conv.bias is not None)
        self.norm = nn.LayerNorm(conv.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p0, p1 = self.patch_size
        gh, gw = h // p0, w // p1
        x = x.reshape(b, c, gh, p0, gw, p1).permute(0, 2, 4, 3, 5, 1).reshape(b, gh, gw, p0 * p1 * c)
        return self.norm(self.proj(self.pre_norm(x)))


# Sparse-TeTRA's student ViT (model/models.py SparseTernaryViT, model/blocks.py): patch 16, no
# LayerScale, qkv without bias, a LayerNorm between GELU and fc2 in every FFN, nn.LayerNorm
# (eps 1e-5), the LN-Linear-LN patch embedding; position grid of the run's input size.
# Its last block's FFN (a plain ViTFeedForward, float and dense there) has no such mid norm.
_SPARSE_TETRA = dict(patch_size=16, init_values=None, qkv_bias=False, norm_layer=nn.LayerNorm,
                     scale_mlp_norm=True, embed_layer=LNPatchEmbed, plain_ffn_blocks=(-1,))

_DINOV2 = dict(patch_size=PATCH_PX, init_values=1e-5, img_size=518)
# The official DINOv2 architectures (same arguments as timm's registered *_dinov2 models, so
# timm / official checkpoints load unchanged) plus our CPU tiny size. The tiny model is trained
# from scratch, so its LayerScale starts at 0.1 (CaiT's value for shallow nets) instead of
# DINOv2's 1e-5: with 1e-5 the 4 blocks would add almost nothing to the tokens at the start of
# training (the net would be its patch embedding), slowing training, and a "student close to
# teacher" check would pass even for a random student.
BACKBONES: dict[str, dict] = {
    "vit_tiny_patch14_dinov2": dict(patch_size=PATCH_PX, embed_dim=192, depth=4, num_heads=3,
                                    init_values=0.1),
    "vit_small_patch14_dinov2": dict(_DINOV2, embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch14_dinov2": dict(_DINOV2, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch14_dinov2": dict(_DINOV2, embed_dim=1024, depth=24, num_heads=16),
    "vit_small_patch14_reg4_dinov2": dict(_DINOV2, embed_dim=384, depth=12, num_heads=6,
                                          reg_tokens=4, no_embed_class=True, **_DINOV2_REG_INTERP),
    "vit_base_patch14_reg4_dinov2": dict(_DINOV2, embed_dim=768, depth=12, num_heads=12,
                                         reg_tokens=4, no_embed_class=True, **_DINOV2_REG_INTERP),
    "vit_large_patch14_reg4_dinov2": dict(_DINOV2, embed_dim=1024, depth=24, num_heads=16,
                                          reg_tokens=4, no_embed_class=True, **_DINOV2_REG_INTERP),
    # the reference's random-init student (ViT-B/16: 224 px -> 196 patches + class token = 197)
    "vit_base_patch16_sparse_tetra": dict(_SPARSE_TETRA, embed_dim=768, depth=12, num_heads=12),
    # its tiny twin for CPU tests and the tiny benchmark (the tiny DINOv2 size, same structure)
    "vit_tiny_patch16_sparse_tetra": dict(_SPARSE_TETRA, embed_dim=192, depth=4, num_heads=3),
}


def init_sparse_tetra_(backbone: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise ``backbone`` in place the way Sparse-TeTRA's random student starts
    (``model/models.py`` ``SparseTernaryViT``, no init pass of its own): position embedding,
    class token and register tokens ~ N(0, 1) (``torch.randn``); every linear, convolution and
    LayerNorm with PyTorch's own default (linear / conv weight and bias
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), LayerNorm weight 1, bias 0). LayerScale (absent in the
    reference structure) is left as built. timm's default, which ``create_backbone`` gives, is
    position embedding trunc-normal std 0.02, class token std 1e-6, linears trunc-normal std 0.02
    with zero bias. Draws from ``generator`` for the tokens (default: the global RNG), and
    from the global RNG for the layers (PyTorch's reset_parameters takes no generator).
    """
    with torch.no_grad():
        for name in ("pos_embed", "cls_token", "reg_token"):
            t = getattr(backbone, name, None)
            if isinstance(t, torch.Tensor):
                t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype, device="cpu").to(t.device))
        for m in backbone.modules():
            for kind in (nn.Linear, nn.Conv2d, nn.LayerNorm):
                if isinstance(m, kind):
                    kind.reset_parameters(m)  # the base class's default, also for brevitas subclasses
                    break
    return backbone


def create_backbone(name: str, img_size: int, *, ternary: TernaryConfig | None = None,
                    granularity: Granularity = "token", sparsity: float = 0.0,
                    device: torch.device | str | None = None) -> DinoV2VisionTransformer:
    """Build a DINOv2 backbone (random init, ``pretrained=False``) for ``img_size`` px inputs.

    The official sizes keep DINOv2's 37 x 37 position grid (518 px) so official / timm / BoQ
    checkpoints load, and resample it to ``img_size`` at run time; the tiny size stores the
    grid of ``img_size``. ``ternary`` (a :class:`TernaryConfig`) returns the student.
    ``device="meta"`` builds shapes only (for byte counting).
    """
    if name not in BACKBONES:
        raise ModelInputError(f"unknown backbone {name!r}; allowed: {', '.join(BACKBONES)}")
    args = dict(BACKBONES[name])
    plain_ffn = args.pop("plain_ffn_blocks", ())
    patch = int(args.get("patch_size", PATCH_PX))
    if img_size % patch:
        raise ModelInputError(f"image size {img_size} px is not a multiple of the patch size {patch} "
                              f"of backbone {name!r}")
    args.setdefault("img_size", img_size)
    ctx = torch.device(device) if device is not None else _nullcontext()
    with ctx:
        model = DinoV2VisionTransformer(run_img_size=img_size, **args)
    for i in resolve_blocks(plain_ffn, len(model.blocks), key=f"backbone {name} plain_ffn_blocks"):
        model.blocks[i].mlp.norm = nn.Identity()
    model.backbone_name = name
    model.is_student = False
    if ternary is not None:
        ternarize(model, ternary, sparsity=sparsity, granularity=granularity)
    return model


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def compare_pos_embed_resampling(seed: int = 0) -> list[dict[str, float]]:
    """The official-vs-timm difference for a ViT-B/14 table (37 x 37 grid) at 224 and 322 px.

    Two tables: timm's random init (trunc-normal, std 0.02) and a smooth 2-D sin-cos table
    (amplitude 1), which resembles trained position embeddings.
    """
    g = torch.Generator().manual_seed(seed)
    rand = nn.init.trunc_normal_(torch.empty(1, 1 + 37 * 37, 768), std=0.02, a=-0.04, b=0.04,
                                 generator=g)
    ys, xs = torch.meshgrid(torch.arange(37.0), torch.arange(37.0), indexing="ij")
    freqs = 1.0 / (100.0 ** (torch.arange(192.0) / 192.0))
    sincos = torch.cat([torch.sin(ys.reshape(-1, 1) * freqs), torch.cos(ys.reshape(-1, 1) * freqs),
                        torch.sin(xs.reshape(-1, 1) * freqs), torch.cos(xs.reshape(-1, 1) * freqs)], 1)
    smooth = torch.cat([torch.zeros(1, 768), sincos], 0)[None]
    rows = []
    for label, pe in (("random init (std 0.02)", rand), ("2-D sin-cos (amplitude 1)", smooth)):
        for px in (224, 322):
            rows.append({"table": label, **pos_embed_resampling_difference(pe, px)})
    return rows


if __name__ == "__main__":  # python -m brevitas_models.vit : the pos-embed resampling table
    print(f"{'table':28s} {'px':>4s} {'grid':>5s} {'max|diff|':>10s} {'mean|diff|':>11s} {'max|pe|':>8s}")
    for r in compare_pos_embed_resampling():
        print(f"{r['table']:28s} {r['img_px']:4d} {r['grid']:5d} {r['max_abs_diff']:10.3e} "
              f"{r['mean_abs_diff']:11.3e} {r['pos_embed_abs_max']:8.3f}")
