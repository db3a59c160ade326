"""Aggregation heads for visual place recognition: BoQ, SALAD, MixVPR, CLS.

Every head has one face (see :mod:`brevitas_models.heads.base`)::

    head(tokens [B, T, D], grid_hw=(h, w), num_prefix_tokens=p) -> descriptor [B, head.descriptor_dim]

with an L2-normalised descriptor. Heads are built by name and preset with
:func:`create_head`; the backbone supplies ``in_dim`` (D) and ``grid_hw``, a preset the
hyperparameters, and ``overrides`` replace single constructor arguments.

Presets (descriptor_dim for the D it is used with):

=======  ================  ===========================================================  ======
head     preset            hyperparameters                                              dim
=======  ================  ===========================================================  ======
boq      dinov2_boq/paper  proj 384 (3x3 conv + LayerNorm), 64 queries, 2 layers, row 32  12288
boq      resnet50_boq      proj 512, 64 queries, 2 layers, row 32                         16384
boq      tiny              proj 64, 16 queries, 2 layers, row 8                             512
salad    dinov2_salad/paper 64 clusters x 128, 256-d token, MLP 512, dropout 0.3           8448
salad    tiny              16 clusters x 16, 32-d token, MLP 64, no dropout                 288
mixvpr   mixvpr_4096/paper out_channels 1024, mix_depth 4, mlp_ratio 1, out_rows 4         4096
mixvpr   tiny              out_channels 64, mix_depth 2, mlp_ratio 1, out_rows 4            256
cls      tiny/paper        (no parameters)                                                  D
=======  ================  ===========================================================  ======
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from brevitas_models.heads.base import AggregationHead, split_tokens
from brevitas_models.heads.boq import BoQHead
from brevitas_models.heads.cls import CLSHead
from brevitas_models.heads.mixvpr import MixVPRHead
from brevitas_models.heads.salad import SALADHead
from brevitas_models.errors import ModelInputError

__all__ = ["AggregationHead", "BoQHead", "CLSHead", "MixVPRHead", "SALADHead", "HEADS", "PRESETS",
           "create_head", "head_presets", "split_tokens"]

HEADS: dict[str, type[AggregationHead]] = {
    "boq": BoQHead,
    "salad": SALADHead,
    "mixvpr": MixVPRHead,
    "cls": CLSHead,
}

_BOQ_DINOV2 = dict(proj_channels=384, num_queries=64, num_layers=2, row_dim=32)
_SALAD_DINOV2 = dict(num_clusters=64, cluster_dim=128, token_dim=256, hidden_dim=512, dropout=0.3)
_MIXVPR_4096 = dict(out_channels=1024, mix_depth=4, mlp_ratio=1.0, out_rows=4)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "boq": {
        "dinov2_boq": _BOQ_DINOV2,      # BoQ release, DINOv2 ViT-B/14 (768 -> 384), 12288-d
        "paper": _BOQ_DINOV2,
        "resnet50_boq": dict(proj_channels=512, num_queries=64, num_layers=2, row_dim=32),
        "tiny": dict(proj_channels=64, num_queries=16, num_layers=2, row_dim=8),
    },
    "salad": {
        "dinov2_salad": _SALAD_DINOV2,  # DINOv2-SALAD, 8448-d
        "paper": _SALAD_DINOV2,
        "tiny": dict(num_clusters=16, cluster_dim=16, token_dim=32, hidden_dim=64, dropout=0.0),
    },
    "mixvpr": {
        "mixvpr_4096": _MIXVPR_4096,    # MixVPR paper's 4096-d setting
        "paper": _MIXVPR_4096,
        "tiny": dict(out_channels=64, mix_depth=2, mlp_ratio=1.0, out_rows=4),
    },
    "cls": {"paper": {}, "tiny": {}},
}

# Arguments every head takes from the backbone, never from a preset or override.
_FROM_BACKBONE = ("in_dim", "grid_hw")


def head_presets(name: str) -> dict[str, dict[str, Any]]:
    """The presets of head ``name`` (ModelInputError for an unknown head)."""
    _check_name(name)
    return {k: dict(v) for k, v in PRESETS[name].items()}


def _check_name(name: str) -> None:
    if name not in HEADS:
        raise ModelInputError(f"unknown head '{name}': allowed heads are {', '.join(sorted(HEADS))}")


def _head_args(cls: Callable[..., nn.Module]) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def create_head(name: str, preset: str = "tiny", *, in_dim: int, grid_hw: tuple[int, int],
                overrides: dict[str, Any] | None = None) -> AggregationHead:
    """Build head ``name`` with hyperparameters from ``preset`` updated by ``overrides``.

    Args:
        name: one of ``boq``, ``salad``, ``mixvpr``, ``cls``.
        preset: a preset name of that head (see the module docstring).
        in_dim: backbone token width D.
        grid_hw: patch grid (h, w) of the input size the model is built for.
        overrides: constructor arguments replacing the preset's (e.g. ``{"row_dim": 16}``).
    """
    _check_name(name)
    presets = PRESETS[name]
    if preset not in presets:
        raise ModelInputError(f"unknown preset '{preset}' for head '{name}': allowed presets are "
                        f"{', '.join(sorted(presets))}")
    cls = HEADS[name]
    allowed = [a for a in _head_args(cls) if a not in _FROM_BACKBONE]
    overrides = dict(overrides or {})
    bad = [k for k in overrides if k not in allowed]
    if bad:
        raise ModelInputError(f"head '{name}': unknown override(s) {', '.join(map(repr, bad))}; allowed "
                        f"arguments are {', '.join(allowed) or '(none)'} (in_dim and grid_hw come "
                        f"from the backbone)")
    kwargs: dict[str, Any] = {**presets[preset], **overrides, "in_dim": int(in_dim)}
    if "grid_hw" in _head_args(cls):
        kwargs["grid_hw"] = (int(grid_hw[0]), int(grid_hw[1]))
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ModelInputError(f"head '{name}' preset '{preset}': bad arguments {overrides}: {err}") from None
