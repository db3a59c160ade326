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
    "create_backbone": "vit", "ternarize": "vit", "student_from_teacher": "vit",
    "interpolate_pos_encoding_dinov2": "vit", "DinoV2VisionTransformer": "vit",
    "BACKBONES": "vit",
    # accounting
    "footprint": "footprint", "quantized_plan": "footprint", "config_footprint": "footprint",
    "count_ops": "ops", "seeded_images": "ops",
    # heads + model + checkpoints (area A2)
    "VPRModel": "model", "build_model": "model", "create_head": "heads",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "load_into": "checkpoint",
    "load_model": "checkpoint", "adapt_foreign_state_dict": "checkpoint",
    "init_student_from_teacher": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
