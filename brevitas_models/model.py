"""The place-recognition model: a ViT backbone plus an aggregation head, with one face.

``VPRModel`` has the same three methods as a timm model, so training, evaluation, tracing and
export never special-case a head::

    forward_features(x [B, 3, H, W]) -> tokens [B, T, D]     (T = prefix tokens + h*w patches)
    forward_head(tokens [B, T, D])   -> descriptor [B, descriptor_dim], L2-normalised
    forward(x)                       -> forward_head(forward_features(x))

Whether ``forward_features`` applies the backbone's final LayerNorm follows the head's
release: BoQ feeds the last block's tokens to its head without it (as the BoQ release does),
SALAD / MixVPR / CLS use the normalised tokens (``head.uses_final_norm``).

``build_model(model_cfg, student=...)`` builds the teacher (float, ``teacher_img_size``) or the
student (ternary per ``model_cfg.ternary``, ``student_img_size``) from a run configuration.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from brevitas_models.heads import AggregationHead, create_head
from brevitas_models.config import ModelConfig
from brevitas_models.errors import ModelInputError

log = logging.getLogger(__name__)


def _backbone_tokens(backbone: nn.Module, x: torch.Tensor, final_norm: bool) -> torch.Tensor:
    """Tokens of a timm-style ViT, with or without its final norm."""
    if final_norm:
        return backbone.forward_features(x)
    # timm VisionTransformer.forward_features without the last ``norm``; every step is the
    # backbone's own (possibly overridden) module or method.
    x = backbone.patch_embed(x)
    x = backbone._pos_embed(x)
    x = backbone.patch_drop(x)
    x = backbone.norm_pre(x)
    return backbone.blocks(x)


class VPRModel(nn.Module):
    """Backbone + aggregation head.

    Args:
        backbone: timm-style ViT with ``forward_features``, ``embed_dim``,
            ``num_prefix_tokens``, ``patch_size`` and ``grid_size(img_size)``.
        head: an :class:`~brevitas_models.heads.AggregationHead` built for ``backbone.embed_dim``.
        img_size: input side in px the model is built for (square).
    """

    def __init__(self, backbone: nn.Module, head: AggregationHead, img_size: int) -> None:
        super().__init__()
        if getattr(head, "in_dim", backbone.embed_dim) != backbone.embed_dim:
            raise ModelInputError(f"head expects {head.in_dim}-d tokens but the backbone gives "
                            f"{backbone.embed_dim}-d")
        self.backbone = backbone
        self.head = head
        self.img_size = int(img_size)
        self.descriptor_dim = int(head.descriptor_dim)

    @property
    def final_norm(self) -> bool:
        """Whether the backbone's final LayerNorm is applied before the head."""
        return bool(getattr(self.head, "uses_final_norm", True))

    @property
    def patch_size(self) -> int:
        p = self.backbone.patch_size
        return int(p[0] if isinstance(p, (tuple, list)) else p)

    def grid_hw(self, img_hw: tuple[int, int] | int | None = None) -> tuple[int, int]:
        """Patch grid (h, w) for an input of ``img_hw`` px (default: ``img_size``)."""
        if img_hw is None:
            img_hw = self.img_size
        h, w = (img_hw, img_hw) if isinstance(img_hw, int) else img_hw
        p = self.patch_size
        if h % p or w % p:
            raise ModelInputError(f"input {h}x{w} px is not a multiple of the patch size {p} px")
        return h // p, w // p

    def _infer_grid(self, num_tokens: int) -> tuple[int, int]:
        n = num_tokens - int(self.backbone.num_prefix_tokens)
        h, w = self.grid_hw()
        if n == h * w:
            return h, w
        side = math.isqrt(max(n, 0))
        if side * side == n and n > 0:
            return side, side
        raise ModelInputError(f"cannot tell the patch grid of {num_tokens} tokens "
                        f"({self.backbone.num_prefix_tokens} prefix); pass grid_hw")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> tokens [B, T, D] (the tokens the head consumes)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ModelInputError(f"model input must be images [B, 3, H, W], got shape {tuple(x.shape)}")
        self.grid_hw((int(x.shape[-2]), int(x.shape[-1])))  # size check with a clear message
        return _backbone_tokens(self.backbone, x, self.final_norm)

    def forward_head(self, tokens: torch.Tensor, grid_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Tokens [B, T, D] -> L2-normalised descriptor [B, descriptor_dim]."""
        grid = tuple(grid_hw) if grid_hw is not None else self._infer_grid(int(tokens.shape[1]))
        return self.head(tokens, grid, int(self.backbone.num_prefix_tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid_hw((int(x.shape[-2]), int(x.shape[-1])))
        return self.forward_head(self.forward_features(x), grid)


def _create_backbone(model_cfg: ModelConfig, img_size: int, student: bool) -> nn.Module:
    from brevitas_models.vit import create_backbone

    name = (model_cfg.student_backbone or model_cfg.backbone) if student else model_cfg.backbone
    return create_backbone(name, img_size,
                           ternary=model_cfg.ternary if student else None,
                           granularity=model_cfg.sparsity.granularity)


def build_model(model_cfg: ModelConfig, *, student: bool) -> VPRModel:
    """Build the teacher (``student=False``) or the ternary student from a model config.

    The teacher is the float backbone at ``teacher_img_size``; the student is the same
    architecture at ``student_img_size`` with the layers ``model_cfg.ternary`` names made
    ternary (top-k sparsity + Brevitas ternary linear), its sparsity set to
    ``model_cfg.sparsity.default`` with ``model_cfg.sparsity.granularity`` and ``.banks``. Weights are freshly initialised: load a checkpoint with
    :mod:`brevitas_models.checkpoint`.
    """
    img_size = model_cfg.student_img_size if student else model_cfg.teacher_img_size
    backbone = _create_backbone(model_cfg, img_size, student)
    grid = tuple(backbone.grid_size(img_size))
    head_cfg = (model_cfg.student_head or model_cfg.head) if student else model_cfg.head
    head = create_head(head_cfg.name, head_cfg.preset, in_dim=backbone.embed_dim,
                       grid_hw=grid, overrides=head_cfg.overrides)
    if head_cfg.final_norm == "always":  # Sparse-TeTRA: the student's final norm always feeds the head
        head.uses_final_norm = True
    model = VPRModel(backbone, head, img_size)
    if student and model_cfg.ternary.head:
        _ternarize_head(model, model_cfg)
    if student:
        from brevitas_models.sparsity import set_sparsity

        set_sparsity(model, model_cfg.sparsity.default, model_cfg.sparsity.granularity,
                     banks=model_cfg.sparsity.banks, gradient=model_cfg.sparsity.gradient)
    log.debug("built %s: %s + %s head (%d-d) at %d px", "student" if student else "teacher",
              model_cfg.backbone, model_cfg.head.name, model.descriptor_dim, img_size)
    return model


def _ternarize_head(model: VPRModel, model_cfg: ModelConfig) -> None:
    """Replace every ``nn.Linear`` of the head by a SparseTernaryLinear (``ternary.head``).

    Linears inside ``nn.MultiheadAttention`` (BoQ) keep their float weights: PyTorch's
    attention reads ``out_proj.weight`` directly, so it cannot be swapped for a module.
    """
    from brevitas_models.quant import SparseTernaryLinear

    targets = [(name, m) for name, m in model.head.named_modules()
               if isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]
    for name, lin in targets:
        new = SparseTernaryLinear(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  per_channel=model_cfg.ternary.per_channel,
                                  act_bits=model_cfg.ternary.act_bits,
                                  granularity=model_cfg.sparsity.granularity)
        with torch.no_grad():
            new.linear.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.linear.bias.copy_(lin.bias)
        parent_name, _, leaf = name.rpartition(".")
        parent = model.head.get_submodule(parent_name) if parent_name else model.head
        setattr(parent, leaf, new)
