"""CLI commands: ``tatvpr train``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add this area's commands to the tatvpr app (and its export group)."""

    @app.command("train")
    def train(
        config: Path = typer.Option(..., "--config", "-c", help="run configuration YAML"),
        stage: str = typer.Option("all", "--stage", help="teacher, distill, finetune or all"),
        resume: bool = typer.Option(False, "--resume", help="continue from <out_dir>/<stage>/last.ckpt"),
        out_dir: Path = typer.Option(None, "--out-dir", help="override train.out_dir"),
        max_steps: int = typer.Option(None, "--max-steps", min=1,
                                      help="override max_steps of every selected stage (quick runs)"),
    ) -> None:
        """Train the teacher, distil the ternary student and fine-tune it (writes
        <out_dir>/<stage>.safetensors + .json; Lightning resume state under <out_dir>/<stage>/)."""
        from tatvpr_hw.config import load_config
        from tatvpr_hw.errors import UserError
        from tatvpr_hw.training import CHOICES, run_stage

        if stage not in CHOICES:
            raise UserError(f"--stage {stage!r}: allowed are {', '.join(CHOICES)}")
        cfg = load_config(config)
        if out_dir is not None:
            cfg.train.out_dir = out_dir
        if max_steps is not None:
            for s in ("teacher", "distill", "finetune"):
                getattr(cfg.train, s).max_steps = max_steps
        path = run_stage(cfg, stage, resume=resume)
        typer.echo(str(path))
