"""One export step for the board runtime (``tatvpr_pynq.runtime``): float student -> bundle folder.

``trunk.npz`` (the integer trunk, ``tatvpr_hw.integer.export_trunk``), ``head_q.npz`` (the integer
head, ``tatvpr_hw.integer.export_head_q``: BoQ, MixVPR, CLS, SALAD's MLPs), ``head.npz`` (the head's
float parameters for ``tatvpr_pynq.heads``: a reference, and the runtime's head for bundles without ``head_q.npz``),
``meta.json`` (image side, sparsity, head, final norm, ``head_integer``); ``database.npy`` is written
by the runtime's own build step so the database descriptors come from the same path as the queries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls.paths import driver_package

SUPPORTED_HEADS = ("boq", "cls", "mixvpr", "salad")


def _refuse_ternary(head) -> None:
    for name, mod in head.named_modules():
        if hasattr(mod, "ternary_weight"):
            raise UserError(f"head.{name} is ternary (model.ternary.head: true): the numpy head needs the float head")


def _one_eps(head, name: str) -> float:
    import torch

    eps = {float(m.eps) for m in head.modules() if isinstance(m, torch.nn.LayerNorm)}
    if len(eps) != 1:
        raise UserError(f"{name} head: LayerNorm eps values differ ({sorted(eps)}); the numpy head takes one")
    return eps.pop()


def export_head(model, grid_hw: tuple[int, int]) -> dict:
    """The student's head as plain float64 arrays + its shape parameters (``tatvpr_pynq.heads``)."""
    import torch

    from brevitas_models.heads.boq import BoQHead
    from brevitas_models.heads.cls import CLSHead
    from brevitas_models.heads.mixvpr import MixVPRHead
    from brevitas_models.heads.salad import SALADHead

    head = model.head
    common = {"num_prefix_tokens": np.array(int(model.backbone.num_prefix_tokens)),
              "grid_hw": np.array([int(grid_hw[0]), int(grid_hw[1])])}
    if isinstance(head, CLSHead):
        return {"kind": np.array("cls"), **common}
    if isinstance(head, MixVPRHead):
        _refuse_ternary(head)
        out = {k: v.detach().double().cpu().numpy() for k, v in head.state_dict().items()}
        return {**out, "kind": np.array("mixvpr"), "mix_depth": np.array(len(head.mix)),
                "ln_eps": np.array(_one_eps(head, "MixVPR")), **common}
    if isinstance(head, SALADHead):
        _refuse_ternary(head)
        out = {k: v.detach().double().cpu().numpy() for k, v in head.state_dict().items()}
        return {**out, "kind": np.array("salad"), "sinkhorn_iters": np.array(int(head.sinkhorn_iters)), **common}
    if not isinstance(head, BoQHead):
        raise UserError(f"model.head: the board runtime implements {', '.join(SUPPORTED_HEADS)} in numpy, "
                        f"not {type(head).__name__}")
    _refuse_ternary(head)
    blk = head.boqs[0]
    enc = blk.encoder
    if enc.norm_first or getattr(enc, "activation_relu_or_gelu", 1) != 1:
        raise UserError("BoQ head: the numpy head implements the post-norm ReLU TransformerEncoderLayer only")
    out = {k: v.detach().double().cpu().numpy() for k, v in head.state_dict().items()}
    out.update(kind=np.array("boq"), num_layers=np.array(len(head.boqs)),
               num_heads=np.array(int(blk.cross_attn.num_heads)), ln_eps=np.array(_one_eps(head, "BoQ")), **common)
    return out


def export_bundle(model, calibration, out_dir, *, sparsity: float, extra_meta: dict | None = None) -> Path:
    """Write ``trunk.npz``, ``head.npz``, ``head_q.npz`` (integer heads) and ``meta.json`` for ``model`` (ternary student) to ``out_dir``.
    ``calibration``: images ``[B, 3, S, S]`` (preprocessed) for the integer trunk's scales."""
    from tatvpr_hw.integer import export_head_q, export_trunk, head_is_integer

    driver_package()
    from tatvpr_pynq.heads import save_head
    from tatvpr_pynq.integer import save_head_q, save_trunk

    if not 0.0 <= float(sparsity) < 1.0:
        raise UserError(f"sparsity must be in [0, 1), got {sparsity}")
    side = int(calibration.shape[-1])
    if calibration.dim() != 4 or calibration.shape[1] != 3 or int(calibration.shape[-2]) != side:
        raise UserError(f"calibration images must be [B, 3, S, S], got {tuple(calibration.shape)}")
    grid = model.grid_hw((side, side))
    head = export_head(model, grid)
    trunk = export_trunk(model, calibration, sparsity=float(sparsity))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_trunk(out / "trunk.npz", trunk)
    save_head(out / "head.npz", head)
    head_integer = head_is_integer(model)
    if head_integer:
        save_head_q(out / "head_q.npz", export_head_q(model, trunk, calibration, sparsity=float(sparsity)))
    elif (out / "head_q.npz").exists():
        (out / "head_q.npz").unlink()
    meta = {"img_size": side, "sparsity": float(sparsity), "final_norm": trunk.norm is not None,
            "head": str(head["kind"]), "head_integer": head_integer, "descriptor_dim": int(model.descriptor_dim),
            "grid_hw": [int(grid[0]), int(grid[1])], "calibration_images": int(calibration.shape[0]),
            **(extra_meta or {})}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    stale = out / "database.npy"
    if stale.exists():
        stale.unlink()  # descriptors of the previous export no longer match this trunk
    return out
