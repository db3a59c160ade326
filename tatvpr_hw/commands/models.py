"""CLI commands of the model layer: ``tatvpr footprint`` and ``tatvpr ops``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer

from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)


def parse_sparsities(text: str) -> list[float]:
    """``"0,0.2,0.4"`` -> ``[0.0, 0.2, 0.4]``; each in [0, 1) (UserError otherwise)."""
    from brevitas_models.errors import ModelInputError
    from brevitas_models.sparsity import check_sparsity

    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise UserError(f"--sparsity: {part!r} is not a number; give a comma-separated list "
                            "of values in [0, 1), e.g. 0,0.2,0.4") from None
        try:
            values.append(check_sparsity(v))
        except ModelInputError:
            raise UserError(f"--sparsity: {v} is outside [0, 1) (fraction of activations "
                            "zeroed)") from None
    if not values:
        raise UserError("--sparsity: give at least one value in [0, 1), e.g. 0,0.2,0.4")
    return values


def prepare_ops_model(cfg, *, checkpoint: Optional[Path] = None, role: str = "student",
                      batch: int = 2):
    """(model, seeded images, role) for op counting.

    Without a checkpoint the model is freshly initialised from ``cfg.seed`` and (student)
    its int8 input thresholds are calibrated at s = 0 on the same seeded inputs; with one,
    the checkpoint's weights and thresholds are used as they are.
    """
    import torch

    from brevitas_models.model import build_model
    from brevitas_models.ops import seeded_images
    from brevitas_models.quant import calibrate_input_scales
    from brevitas_models.sparsity import sparsity_context

    if role not in ("student", "teacher"):
        raise UserError(f"--model must be 'student' or 'teacher', got {role!r}")
    torch.manual_seed(cfg.seed)
    if checkpoint is not None:
        from brevitas_models.checkpoint import load_model

        model, meta = load_model(checkpoint, cfg.model)
        role = meta.get("role", role)
    else:
        model = build_model(cfg.model, student=role == "student")
    images = seeded_images(batch, int(model.img_size), cfg.seed)
    if checkpoint is None and role == "student":
        with sparsity_context(model, 0.0):
            calibrate_input_scales(model, [images])
    return model, images, role


def config_ops(cfg, sparsities: list[float], *, checkpoint: Optional[Path] = None,
               role: str = "student", batch: int = 2, per_layer: bool = False,
               progress: bool = False, authors: bool = False) -> list[dict[str, Any]]:
    """MACs per query of the configured model at each sparsity (see brevitas_models.ops)."""
    from tqdm import tqdm

    from brevitas_models.ops import count_ops

    model, images, role = prepare_ops_model(cfg, checkpoint=checkpoint, role=role, batch=batch)
    rows = []
    for s in tqdm(sparsities, desc="ops", unit="sparsity", disable=not progress, leave=False):
        r = count_ops(model, images, s, per_layer=per_layer)
        r["reduction_vs_dense"] = 1.0 - r["effective_macs"] / r["dense_macs"]
        r["model"] = role
        r["img_size"] = int(model.img_size)
        rows.append(r)
    if authors:
        from brevitas_models.ops import add_authors_flops

        add_authors_flops(model, images, rows)  # the paper's profiler convention, same model (docs/recipe.md)
    return rows


def write_model_reports(cfg, out_dir: Path, *, checkpoint: Optional[Path] = None,
                        sparsities: Optional[list[float]] = None) -> dict[str, Path]:
    """The model part of ``make demo``: ``out_dir/footprint.json`` and ``out_dir/ops.json``.

    Footprint of the configured student (packed real codes with a student ``checkpoint``) and
    MACs per query at ``sparsities`` (default ``cfg.eval.sparsities``). Files are written
    atomically; returns their paths.
    """
    from brevitas_models.footprint import config_footprint, footprint
    from tatvpr_hw.io import write_json

    out_dir = Path(out_dir)
    if checkpoint is None:
        fp = config_footprint(cfg.model)
    else:
        from brevitas_models.checkpoint import load_model

        model, meta = load_model(checkpoint, cfg.model)
        fp = (footprint(model, model.img_size, pack_weights=True) if meta.get("role") == "student"
              else config_footprint(cfg.model))
    rows = config_ops(cfg, list(sparsities if sparsities is not None else cfg.eval.sparsities),
                      checkpoint=checkpoint, progress=True)
    return {"footprint": write_json(out_dir / "footprint.json", fp),
            "ops": write_json(out_dir / "ops.json", rows)}


def ops_table(rows: list[dict[str, Any]]):
    """The rich table of ``tatvpr ops`` (GMACs at the real nonzero activations, the rest dense)."""
    from tatvpr_hw.commands.tables import make_table

    return make_table(
        ("sparsity", "GMACs", "dense", "w-skip", "both", "saved", "act dens", "w dens")
        + (("vs s=0", "paper GFLOPs", "paper vs s=0") if "authors_flops" in rows[0] else ()),
        [(f"{r['sparsity']:.2f}", f"{r['gmacs']:.4f}", f"{r['dense_macs'] / 1e9:.4f}",
          f"{r['effective_macs_weight'] / 1e9:.4f}", f"{r['effective_macs_both'] / 1e9:.4f}",
          f"{100 * r['reduction_vs_dense']:.1f}%", f"{r['act_density']:.3f}", f"{r['weight_density']:.3f}")
         + ((f"{0.0 - 100 * r['reduction_vs_s0']:+.1f}%", f"{r['authors_flops'] / 1e9:.4f}",
             f"{0.0 - 100 * r['authors_reduction_vs_s0']:+.1f}%") if "authors_flops" in r else ())
         for r in rows], left=0)


def footprint_table(fp: dict[str, Any]):
    """The rich table of ``tatvpr footprint``: MB (10^6 bytes) per component and format, the
    backbone and total in MB and bytes, and the fp32 / fp16 ratios."""
    from brevitas_models.footprint import FORMATS, summary_rows
    from tatvpr_hw.commands.tables import make_table

    rows: list = [(name, *(f"{d[f] / 1e6:.3f}" for f in FORMATS)) for name, d in summary_rows(fp)]
    rows.append(None)
    for label, key in (("backbone", "backbone_bytes"), ("total", "total_bytes")):
        rows.append((label, *(f"{fp[key][f] / 1e6:.3f}" for f in FORMATS)))
        rows.append((f"{label} bytes", *(f"{fp[key][f]:,}" for f in FORMATS)))
    rows.append(None)
    for part in ("backbone", "total"):
        r = fp["ratios"][part]
        for ref in ("fp32", "fp16"):
            rows.append((f"{ref} {part} / x", *(f"{r[f'{ref}_over_{f}']:.2f}x" for f in FORMATS)))
    return make_table(("component (MB)", *FORMATS), rows)


def format_ops(rows: list[dict[str, Any]]) -> str:
    from tatvpr_hw.commands.tables import render_table

    return (f"MACs per query ({rows[0]['model']}, {rows[0]['img_size']} px; GMACs = ternary layers "
            f"at their real nonzero activations, the rest dense; paper GFLOPs = the Sparse-TeTRA "
            f"convention on the same model: torch.profiler FLOPs of 1 image, addmm/linear x (1 - s), "
            f"docs/recipe.md)\n{render_table(ops_table(rows))}")


def _load(config: Path):
    from tatvpr_hw.config import load_config

    return load_config(config)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add this area's commands to the tatvpr app (and its export group)."""

    @app.command("footprint")
    def footprint_cmd(
        config: Path = typer.Option(Path("tiny"), "--config", help="run config YAML or a built-in name in configs/"),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                                  help="student checkpoint: pack its real ternary codes"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    ) -> None:
        """Memory footprint by component in fp32/fp16/int8/ternary2/ternary1.6, with ratios."""
        from brevitas_models.footprint import config_footprint, footprint, quantized_plan

        cfg = _load(config)
        if checkpoint is None:
            fp = config_footprint(cfg.model)
        else:
            from brevitas_models.checkpoint import load_model

            model, meta = load_model(checkpoint, cfg.model)
            if meta.get("role") == "student":
                fp = footprint(model, model.img_size, pack_weights=True)
            else:
                fp = footprint(model, model.img_size, plan=quantized_plan(cfg.model, model))
        fp["config"] = str(config)
        fp["backbone"] = cfg.model.backbone
        fp["head"] = cfg.model.head.name
        if as_json:
            typer.echo(json.dumps(fp, indent=2))
            return
        from tatvpr_hw.commands.tables import print_table

        typer.echo(f"{cfg.model.backbone} + {cfg.model.head.name} head ({config})")
        print_table(footprint_table(fp))
        typer.echo(f"quantized layers: {fp['quantized_layers']} (other tensors in {fp['non_quantized_format']}, "
                   f"scales in {fp['scale_format']})")

    @app.command("ops")
    def ops_cmd(
        config: Path = typer.Option(Path("tiny"), "--config", help="run config YAML or a built-in name in configs/"),
        sparsity: Optional[str] = typer.Option(None, "--sparsity",
                                               help="comma-separated sparsities in [0, 1) "
                                                    "(default: eval.sparsities of the config)"),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="model checkpoint"),
        model: str = typer.Option("student", "--model", help="student or teacher (without --checkpoint)"),
        batch: int = typer.Option(2, "--batch", min=1, max=256, help="seeded input images averaged over"),
        per_layer: bool = typer.Option(False, "--per-layer", help="include per-layer counts (JSON)"),
        as_json: bool = typer.Option(False, "--json", help="print a JSON list of records"),
    ) -> None:
        """MACs per query at each sparsity, from the real nonzero activations of a forward pass.

        One forward pass per sparsity: seconds on configs/tiny.yaml, minutes on the paper config
        (configs/tatvpr_boq_vitb14.yaml: about 1 minute per sparsity on 2 CPU cores, its 7 default
        sparsities took 31 minutes on a busy shared machine); --sparsity picks fewer.
        """
        cfg = _load(config)
        values = parse_sparsities(sparsity) if sparsity is not None else list(cfg.eval.sparsities)
        rows = config_ops(cfg, values, checkpoint=checkpoint, role=model, batch=batch,
                          per_layer=per_layer, progress=not as_json, authors=True)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        typer.echo(format_ops(rows))
