"""Shared pieces of the export routes: loading the student, real inputs, layer selection,
activation capture and error statistics.

A *block* names the part of the student a route lowers:

- ``mlp``: ``backbone.blocks[L].mlp.fc1`` and ``.fc2`` (the ternary MLP; GELU between them runs
  on the accelerator's vector unit, docs/engine.md, so it is not part of the GEMM IP),
- ``attn_proj``: ``backbone.blocks[L].attn.qkv`` and ``.proj`` (the attention projections),
- ``head``: the aggregation head's ``nn.Linear`` / ternary linear layers (MLP part of the head).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)

BLOCKS = ("mlp", "attn_proj", "head")
_BLOCK_LEAVES = {"mlp": ("mlp.fc1", "mlp.fc2"), "attn_proj": ("attn.qkv", "attn.proj")}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is one of ``allowed``; else a UserError naming both."""
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


def load_student(cfg, checkpoint: str | Path | None) -> nn.Module:
    """The ternary student of ``cfg`` with the weights of ``checkpoint`` (eval mode).

    ``checkpoint`` is ``<name>.safetensors`` (+ ``<name>.json``) as written by
    :func:`brevitas_models.checkpoint.save_checkpoint`; ``None`` keeps the fresh initialisation
    (only for smoke runs, and logged as such).
    """
    from brevitas_models.checkpoint import load_checkpoint, load_into
    from brevitas_models.model import build_model

    model = build_model(cfg.model, student=True)
    if checkpoint is None:
        log.warning("no checkpoint given: exporting the freshly initialised student")
    else:
        path = Path(checkpoint)
        if not path.with_suffix(".safetensors").is_file() and not path.is_file():
            raise UserError(f"checkpoint not found: {path} (expected <name>.safetensors + <name>.json)")
        sd, meta = load_checkpoint(path)
        if meta.get("role") not in (None, "student"):
            raise UserError(f"checkpoint {path} holds a {meta.get('role')!r} model; export needs the "
                            "student (role 'student')")
        load_into(model, sd, source=str(path))
    return model.eval()


def _benchmark_images(cfg) -> list[Path]:
    root = Path(cfg.data.eval_root) if cfg.data.eval_root else Path(cfg.data.root) / "eval"
    folder = root / "images" / "test" / "queries"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def sample_images(cfg, n: int, seed: int, img_size: int) -> tuple[torch.Tensor, str]:
    """``n`` input images ``[n, 3, S, S]`` and where they came from.

    The query images of the evaluation benchmark when they exist (``data.root/eval`` or
    ``data.eval_root``), preprocessed as the evaluation does
    (:func:`tatvpr_hw.data.transforms.load_image`); otherwise
    seeded N(0, 1) images (said so in the returned source string).
    """
    files = _benchmark_images(cfg)
    if files:
        from tatvpr_hw.data.transforms import load_image  # the evaluation's own preprocessing

        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))
        imgs = [load_image(files[i], img_size) for i in pick]
        return torch.stack(imgs), f"benchmark queries ({files[0].parent})"
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, img_size, img_size, generator=g), f"seeded N(0,1) images (seed {seed})"


def select_layers(model: nn.Module, block: str, layer: int = 0) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the linear layers that make up ``block`` (see module docstring)."""
    from brevitas_models.quant import SparseTernaryLinear

    check_choice(block, BLOCKS, "block")
    if block == "head":
        head = getattr(model, "head", None)
        if head is None:
            raise UserError("the model has no aggregation head ('head' attribute)")
        found = []
        for name, m in head.named_modules():
            inner_of_ternary = any(name.startswith(f + ".") for f, _ in found)
            if isinstance(m, SparseTernaryLinear) or (
                    type(m) is nn.Linear and not inner_of_ternary):
                found.append((name, m))
        found = [(f"head.{n}", m) for n, m in found]
        if not found:
            raise UserError("the aggregation head has no linear layers to export")
        return found
    blocks = getattr(getattr(model, "backbone", model), "blocks", None)
    if blocks is None:
        raise UserError("the model has no transformer blocks (backbone.blocks)")
    if not 0 <= layer < len(blocks):
        raise UserError(f"--layer {layer} is out of range: the backbone has blocks 0..{len(blocks) - 1}")
    prefix = "backbone." if hasattr(model, "backbone") else ""
    out = []
    for leaf in _BLOCK_LEAVES[block]:
        name = f"{prefix}blocks.{layer}.{leaf}"
        try:
            out.append((name, model.get_submodule(name)))
        except AttributeError:
            raise UserError(f"block {block!r}: the model has no layer {name}") from None
    return out


@torch.no_grad()
def capture_inputs(model: nn.Module, modules: list[nn.Module], images: torch.Tensor,
                   tokens: list[int] | None = None) -> list[torch.Tensor]:
    """Inputs each module receives when ``model`` runs on ``images``, flattened to ``[rows, K]``.

    For a ternary layer this is its input *before* its own top-k (the layer re-applies it).
    ``tokens``: if a list, it receives each module's token count per call (``M`` of an
    ``[B, M, K]`` input; 1 for a ``[B, K]`` input).
    """
    seen: list[list[torch.Tensor]] = [[] for _ in modules]
    shapes: list[list[tuple[int, ...]]] = [[] for _ in modules]

    def hook(mod, args, i):
        seen[i].append(args[0].detach().reshape(-1, args[0].shape[-1]).clone())
        shapes[i].append(tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: hook(mod, args, i))
             for i, m in enumerate(modules)]
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    if any(not s for s in seen):
        raise UserError("a selected layer was not reached by the model's forward pass")
    if tokens is not None:
        tokens[:] = [sh[0][-2] if len(sh[0]) >= 3 else 1 for sh in shapes]
    return [torch.cat(s) for s in seen]


def error_stats(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Max and mean absolute error of ``got`` against ``ref`` and the reference's scale."""
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    ref = np.asarray(ref, dtype=np.float64)
    d = np.abs(got - ref)
    return {"max_abs_err": float(d.max()) if d.size else 0.0,
            "mean_abs_err": float(d.mean()) if d.size else 0.0,
            "ref_max_abs": float(np.abs(ref).max()) if ref.size else 0.0}


@dataclass
class Check:
    """One numeric verification: the statistics, the bound and why that bound."""

    artifact: str
    stats: dict[str, float]
    bound_max_abs: float
    bound_mean_abs: float
    why: str

    @property
    def passed(self) -> bool:
        return (self.stats["max_abs_err"] <= self.bound_max_abs
                and self.stats["mean_abs_err"] <= self.bound_mean_abs)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, **self.stats, "bound_max_abs": self.bound_max_abs,
                "bound_mean_abs": self.bound_mean_abs, "bound_reason": self.why,
                "passed": self.passed}

    def require(self) -> None:
        """Raise :class:`ExportCheckError` when the check failed."""
        if not self.passed:
            raise ExportCheckError(
                f"{self.artifact}: verification failed: max |err| {self.stats['max_abs_err']:.3g} "
                f"(bound {self.bound_max_abs:.3g}), mean |err| {self.stats['mean_abs_err']:.3g} "
                f"(bound {self.bound_mean_abs:.3g}); {self.why}")


class ExportCheckError(UserError):
    """An exported artifact disagrees with the PyTorch model beyond its stated bound."""


def pow2_ceil_log2(x: float) -> int:
    """``ceil(log2(x))`` for x > 0 (0 for x <= 0)."""
    return int(math.ceil(math.log2(x))) if x > 0 else 0
