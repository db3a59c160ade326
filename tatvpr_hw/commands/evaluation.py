"""CLI commands: ``tatvpr eval`` (Recall@N over the sparsity sweep) and ``tatvpr report``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add this area's commands to the tatvpr app (and its export group)."""

    @app.command("eval")
    def eval_cmd(
        config: Path = typer.Option(..., "--config", help="run config YAML"),
        checkpoint: Path = typer.Option(..., "--checkpoint",
                                        help="student checkpoint (<name>.safetensors + <name>.json); its teacher "
                                             "is found from its metadata (a teacher checkpoint: teacher only)"),
        out: Path = typer.Option(..., "--out", help="run folder for metrics.json, figures and index.html"),
        sparsity: Optional[str] = typer.Option(None, "--sparsity",
                                               help="comma-separated student sparsities, e.g. 0,0.2,0.4 "
                                                    "(default eval.sparsities)"),
    ) -> None:
        """Evaluate teacher and student: Recall@N, GMACs and memory per sparsity; write the report."""
        from tatvpr_hw.config import load_config
        from tatvpr_hw.evaluation import evaluate_checkpoint, parse_sparsity_list

        sp = parse_sparsity_list(sparsity) if sparsity is not None else None
        cfg = load_config(config)
        records = evaluate_checkpoint(cfg, checkpoint, out, sp)
        for r in records:
            sim = "" if r.get("sim_latency_ms") is None else f"  sim {r['sim_latency_ms']:.4f} ms (SIMULATED)"
            typer.echo(f"{r['model']:13s} {r['format']:8s} {r.get('granularity') or '':6s} s={r['sparsity']:.2f}  "
                       f"R@1 {r['recall@1']:6.2f}  GMACs {r['gmacs']:.4f}  memory {r['memory_mb']:.3f} MB{sim}")
        typer.echo(f"report: {Path(out) / 'index.html'}")

    @app.command("report")
    def report_cmd(run_dir: Path = typer.Argument(..., help="run folder (metrics.json, <section>.json, figures)")) -> None:
        """Render RUN_DIR/index.html from what the run folder holds."""
        from tatvpr_hw.report import render_report

        typer.echo(str(render_report(run_dir)))
