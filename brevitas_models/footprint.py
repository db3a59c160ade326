"""Exact memory footprint of a model, per component, in five storage formats.

A component is one module's own tensors (``blocks.3.mlp.fc1``: weight + bias), one free
tensor (``pos_embed``, ``cls_token``, ``reg_token``) or the whole aggregation head
(``head``). Counted tensors are the float model's state (parameters and persistent
buffers); quantizer state (the int8 input thresholds) is counted as scales, see below.

Formats (bytes):

- ``fp32`` / ``fp16``: every tensor in 4 / 2 bytes per element (the float teacher of the same
  architecture has exactly these bytes).
- ``int8``, ``ternary2``, ``ternary1.6``: the *quantized layers* (every
  :class:`~brevitas_models.quant.SparseTernaryLinear` in the model, i.e. what the run
  config's ``model.ternary`` selects) store their weight matrix ``[N, K]`` as int8 (``N*K``
  bytes), as 2-bit codes (4 per byte) or as base-3 (5 trits per byte), each row padded to
  whole bytes (:func:`ternary_format.packed_bytes`, the bytes the packed file holds), plus their
  scales in fp32: the weight scale gamma (4 bytes, or ``4*N`` per channel) and the input
  activation scale (4 bytes). Everything else (biases, norms, LayerScale, tokens, position
  embeddings, non-ternary layers, the head unless ternary) stays fp16.

``backbone_bytes`` sums the backbone components, ``total_bytes`` adds the head.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from brevitas_models.quant import SparseTernaryLinear
from ternary_format import pack, packed_bytes

FORMATS = ("fp32", "fp16", "int8", "ternary2", "ternary1.6")
QUANT_FORMATS = ("int8", "ternary2", "ternary1.6")
FLOAT_BYTES = {"fp32": 4, "fp16": 2}
SCALE_BYTES = 4  # fp32 scales
REST_FORMAT = "fp16"  # what non-quantized tensors keep in the quantized columns


def _is_quantizer_key(key: str) -> bool:
    return "_quant." in key


def _component_of(key: str, head_prefix: str | None) -> str:
    if head_prefix is not None and (key == head_prefix.rstrip(".") or key.startswith(head_prefix)):
        return "head"
    parts = key.split(".")
    if len(parts) == 1:
        return key  # free tensor: pos_embed, cls_token, reg_token, ...
    path = parts[:-1]
    if path and path[-1] == "linear":  # SparseTernaryLinear's inner QuantLinear
        path = path[:-1]
    return ".".join(path)


def _kind(name: str) -> str:
    if name == "head":
        return "head"
    if name in ("pos_embed",):
        return "pos_embed"
    if name in ("cls_token", "reg_token", "register_tokens", "mask_token"):
        return "token"
    if name.startswith("patch_embed"):
        return "patch_embed"
    leaf = name.rsplit(".", 1)[-1]
    if leaf.startswith("norm") or name == "norm" or name == "fc_norm":
        return "norm"
    if leaf.startswith("ls"):
        return "layerscale"
    return "linear"


def _split_model(model: nn.Module) -> tuple[nn.Module, str | None, str]:
    """(module whose state is counted, prefix of head keys or None, prefix to strip)."""
    if hasattr(model, "backbone") and hasattr(model, "head"):
        return model, "head.", "backbone."
    return model, None, ""


def quantized_plan(model_cfg, model: nn.Module) -> dict[str, bool]:
    """The layers ``model_cfg.ternary`` makes ternary, named in a FLOAT model: ``{name: per_channel}``.

    Mirrors :func:`brevitas_models.vit.ternarize` (block linears, patch projection) and the
    head rule of :func:`brevitas_models.model.build_model` (every head ``nn.Linear`` except
    those inside ``nn.MultiheadAttention``), so the footprint of a student can be counted on
    a float model built on the meta device (a test checks both agree).
    """
    from brevitas_models.vit import BLOCK_LINEARS

    t = model_cfg.ternary
    root, head_prefix, strip = _split_model(model)
    bb = getattr(model, "backbone", model)
    plan: dict[str, bool] = {}
    if t.blocks:
        for i in range(len(bb.blocks)):
            for lin in BLOCK_LINEARS:
                plan[f"blocks.{i}.{lin}"] = t.per_channel
    if t.patch_embed:
        plan["patch_embed.proj"] = t.per_channel
    if t.head and head_prefix is not None:
        for name, m in model.head.named_modules():
            if isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear):
                plan[f"head.{name}"] = t.per_channel
    return plan


def footprint(model: nn.Module, img_size: int | None = None, *,
              plan: dict[str, bool] | None = None, pack_weights: bool = False) -> dict[str, Any]:
    """Bytes per component and in total for the five formats (see the module docstring).

    Args:
        model: a backbone or a VPRModel (``backbone`` + ``head``).
        img_size: the input side the model runs at (reported with the token count).
        plan: for a FLOAT model (e.g. on the meta device, only shapes are read): the names of
            the ``nn.Linear`` / patch ``nn.Conv2d`` layers to count as quantized, each with its
            per-channel flag (see :func:`quantized_plan`). Without it the quantized layers are
            the model's :class:`SparseTernaryLinear` modules.
        pack_weights: actually pack every quantized layer's ternary codes with
            :mod:`ternary_format` and count the packed arrays' bytes (needs a student with real
            weights); also reports each layer's fraction of nonzero ternary weights.

    Returns ``{"backbone_bytes": {fmt: int}, "total_bytes": {fmt: int}, "components": [...],
    "ratios": {...}, ...}``; each component is ``{"name", "kind", "numel", "quantized",
    "bytes": {fmt: int}}`` (plus ``"weight_density"`` when packed).
    """
    root, head_prefix, strip = _split_model(model)
    # quantized weight tensors: state-dict key (without the backbone prefix) -> spec
    qspec: dict[str, tuple[int, int, bool, SparseTernaryLinear | None]] = {}
    for name, m in root.named_modules():
        key = name[len(strip):] if strip and name.startswith(strip) else name
        if isinstance(m, SparseTernaryLinear):
            qspec[f"{key}.linear.weight"] = (m.out_features, m.in_features, m.per_channel, m)
        elif plan is not None and key in plan:
            if isinstance(m, nn.Linear):
                qspec[f"{key}.weight"] = (m.out_features, m.in_features, plan[key], None)
            elif isinstance(m, nn.Conv2d):
                k = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                qspec[f"{key}.weight"] = (m.out_channels, int(k), plan[key], None)
            else:
                raise ValueError(f"planned quantized layer {key} is a {type(m).__name__}")
    if plan is not None:
        unknown = sorted(set(plan) - {k.rsplit(".", 1)[0] for k in qspec})
        if unknown:
            raise ValueError(f"planned quantized layers not in the model: {', '.join(unknown)}")
    comps: "OrderedDict[str, dict[str, Any]]" = OrderedDict()

    def comp(name: str) -> dict[str, Any]:
        if name not in comps:
            comps[name] = {"name": name, "kind": _kind(name), "numel": 0, "quantized": False,
                           "bytes": {f: 0 for f in FORMATS}}
        return comps[name]

    for key, t in root.state_dict().items():
        if _is_quantizer_key(key):
            continue
        k = key[len(strip):] if strip and key.startswith(strip) else key
        c = comp(_component_of(k, head_prefix))
        n = int(t.numel())
        c["numel"] += n
        for f, b in FLOAT_BYTES.items():
            c["bytes"][f] += b * n
        spec = qspec.get(k)
        if spec is None:
            for f in QUANT_FORMATS:
                c["bytes"][f] += FLOAT_BYTES[REST_FORMAT] * n
            continue
        n_out, k_in, per_channel, layer = spec
        c["quantized"] = True
        scales = SCALE_BYTES * ((n_out if per_channel else 1) + 1)  # weight gamma(s) + input scale
        c["bytes"]["int8"] += n_out * k_in + scales
        if pack_weights and layer is not None:
            codes = layer.ternary_weight()[0].cpu().numpy()
            for f in ("ternary2", "ternary1.6"):
                c["bytes"][f] += int(pack(codes, f).nbytes) + scales
            c["weight_density"] = float(np.count_nonzero(codes) / codes.size)
        else:
            for f in ("ternary2", "ternary1.6"):
                c["bytes"][f] += packed_bytes((n_out, k_in), f) + scales

    components = list(comps.values())
    backbone = {f: sum(c["bytes"][f] for c in components if c["name"] != "head") for f in FORMATS}
    total = {f: sum(c["bytes"][f] for c in components) for f in FORMATS}
    out: dict[str, Any] = {
        "backbone_bytes": backbone,
        "total_bytes": total,
        "ratios": {part: {f"{ref}_over_{f}": round(d[ref] / d[f], 4) for ref in ("fp32", "fp16")
                          for f in FORMATS}
                   for part, d in (("backbone", backbone), ("total", total))},
        "quantized_layers": len(qspec),
        "non_quantized_format": REST_FORMAT,
        "scale_format": "fp32",
        "components": components,
    }
    if img_size is not None:
        out["img_size"] = int(img_size)
        bb = getattr(model, "backbone", model)
        if hasattr(bb, "grid_size"):
            h, w = bb.grid_size(int(img_size))
            out["tokens"] = int(h * w + getattr(bb, "num_prefix_tokens", 0))
    return out


def summary_rows(fp: dict[str, Any]) -> list[tuple[str, dict[str, int]]]:
    """Grouped rows for printing: patch embed, tokens + pos embed, each block, final norm, head."""
    groups: "OrderedDict[str, dict[str, int]]" = OrderedDict()
    for c in fp["components"]:
        name = c["name"]
        if name.startswith("blocks."):
            g = ".".join(name.split(".")[:2])
        elif c["kind"] in ("token", "pos_embed"):
            g = "tokens + pos_embed"
        else:
            g = name.split(".")[0]
        acc = groups.setdefault(g, {f: 0 for f in FORMATS})
        for f in FORMATS:
            acc[f] += c["bytes"][f]
    return list(groups.items())


def format_table(fp: dict[str, Any]) -> str:
    """A fixed-width text table of :func:`footprint` (MB = 10^6 bytes) with the ratios."""
    mb = lambda b: f"{b / 1e6:11.3f}"  # noqa: E731
    head = f"{'component':24s}" + "".join(f"{f:>12s}" for f in FORMATS)
    lines = [head + "   (MB)", "-" * len(head)]
    for name, d in summary_rows(fp):
        lines.append(f"{name:24s}" + "".join(" " + mb(d[f]) for f in FORMATS))
    lines.append("-" * len(head))
    for label, key in (("backbone", "backbone_bytes"), ("total", "total_bytes")):
        lines.append(f"{label:24s}" + "".join(" " + mb(fp[key][f]) for f in FORMATS))
        lines.append(f"{label + ' bytes':24s}" + "".join(f" {fp[key][f]:11d}" for f in FORMATS))
    for part in ("backbone", "total"):
        r = fp["ratios"][part]
        for ref in ("fp32", "fp16"):
            lines.append(f"{ref + ' ' + part + ' / x':24s}"
                         + "".join(f" {r[f'{ref}_over_{f}']:10.2f}x" for f in FORMATS))
    lines.append(f"quantized layers: {fp['quantized_layers']} (other tensors in "
                 f"{fp['non_quantized_format']}, scales in {fp['scale_format']})")
    return "\n".join(lines)


def config_footprint(model_cfg, *, checkpoint: str | None = None) -> dict[str, Any]:
    """Footprint of the configured student.

    Without a checkpoint: the float model is built on the meta device (shapes only, fast) and
    the layers ``model_cfg.ternary`` selects are counted as quantized. With a checkpoint (our
    safetensors + JSON): the real student is built, loaded, and its ternary codes packed.
    """
    from brevitas_models.model import build_model

    if checkpoint is None:
        # the float twin of the student: same input size (heads such as MixVPR depend on it)
        twin = model_cfg.model_copy(update={"teacher_img_size": model_cfg.student_img_size})
        with torch.device("meta"):
            model = build_model(twin, student=False)
        return footprint(model, model_cfg.student_img_size, plan=quantized_plan(model_cfg, model))
    from brevitas_models.checkpoint import load_checkpoint, load_into

    model = build_model(model_cfg, student=True)
    state_dict, _meta = load_checkpoint(checkpoint)
    load_into(model, state_dict, source=str(checkpoint))
    return footprint(model, model_cfg.student_img_size, pack_weights=True)
