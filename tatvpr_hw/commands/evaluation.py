"""CLI commands: ``tatvpr eval`` (Recall@N over the sparsity sweep) and ``tatvpr report``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def metrics_table(records: list[dict]):
    """The rich table of ``tatvpr eval``'s records (``metrics.json``): one row per model x format x
    granularity x sparsity; the simulated latency column only when some record has one."""
    from tatvpr_hw.commands.tables import make_table

    simulated = any(r.get("sim_latency_ms") is not None for r in records)
    cols = ["model", "format", "granularity", "sparsity", "R@1 (%)", "GMACs", "memory (MB)"]
    if simulated:
        cols.append("latency (ms, SIMULATED)")
    def num(r, key, digits):
        return "" if r.get(key) is None else f"{r[key]:.{digits}f}"

    rows = []
    for r in records:
        row = [r.get("model", ""), r.get("format", ""), r.get("granularity") or "", num(r, "sparsity", 2),
               num(r, "recall@1", 2), num(r, "gmacs", 4), num(r, "memory_mb", 3)]
        if simulated:
            row.append(num(r, "sim_latency_ms", 4))
        rows.append(row)
    return make_table(cols, rows, left=3)


def print_metrics(records: list[dict]) -> None:
    from tatvpr_hw.commands.tables import print_table

    print_table(metrics_table(records))


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
        integer: Optional[str] = typer.Option(None, "--integer",
                                              help="comma-separated sparsities at which the bit-exact integer model "
                                                   "(docs/integer.md) is also evaluated, e.g. 0,0.4 "
                                                   "(default eval.integer_sparsities)"),
    ) -> None:
        """Evaluate teacher and student: Recall@N, GMACs and memory per sparsity; write the report."""
        from tatvpr_hw.config import load_config
        from tatvpr_hw.evaluation import evaluate_checkpoint, parse_sparsity_list

        sp = parse_sparsity_list(sparsity) if sparsity is not None else None
        cfg = load_config(config)
        isp = parse_sparsity_list(integer, "--integer") if integer is not None else None
        records = evaluate_checkpoint(cfg, checkpoint, out, sp, integer_sparsities=isp)
        print_metrics(records)
        typer.echo(f"report: {Path(out) / 'index.html'}")

    @app.command("report")
    def report_cmd(run_dir: Path = typer.Argument(..., help="run folder (metrics.json, <section>.json, figures)")) -> None:
        """Render RUN_DIR/index.html from what the run folder holds."""
        from tatvpr_hw.report import render_report

        typer.echo(str(render_report(run_dir)))
