"""The models of TAT-VPR: Brevitas ternary quantizers, top-k activation sparsity, the DINOv2
ViT backbone (float teacher / ternary student), heads, checkpoints, footprint and op counts.

Public names are imported lazily (``brevitas_models.set_sparsity`` loads only what it needs)::

    from brevitas_models import create_backbone, set_sparsity, footprint, count_ops
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # sparsity
    "TopKSparsity": "sparsity", "set_sparsity": "sparsity", "get_sparsity": "sparsity",
    "sparsity_context": "sparsity", "kept_count": "sparsity",
    # quantization
    "SparseTernaryLinear": "quant", "TernaryWeightPerTensor": "quant",
    "TernaryWeightPerChannel": "quant", "Int8ActPerTensor": "quant",
    "calibrate_input_scales": "quant", "ternary_layers": "quant",
    # backbone
    "create_backbone": "vit", "ternarize": "vit", "interpolate_pos_encoding_dinov2": "vit",
    "BACKBONES": "vit",
    # accounting
    "footprint": "footprint", "count_ops": "ops",
    # heads + model + checkpoints (area A2)
    "VPRModel": "model", "build_model": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
