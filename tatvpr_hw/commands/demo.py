"""CLI command: `tatvpr demo` -- the whole flow on the tiny config (what `make demo` runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add `tatvpr demo`."""

    @app.command("demo")
    def demo(
        config: Path = typer.Option(Path("configs/tiny.yaml"), help="run configuration"),
        out: Path = typer.Option(Path("reports/demo"), help="run folder (report: OUT/index.html)"),
        start: Optional[str] = typer.Option(None, "--from", help="first step to run"),
        stop: Optional[str] = typer.Option(None, "--to", help="last step to run"),
        force: bool = typer.Option(False, help="rerun steps that finished earlier"),
        list_steps: bool = typer.Option(False, "--list", help="list the steps and exit"),
    ) -> None:
        """Run the whole flow offline: data, 3-stage training, evaluation, simulation, DSE, export, HLS, RTL, report.

        Resumable: finished steps are skipped (their results are kept in OUT/steps.json).
        """
        from tatvpr_hw.demo import demo_steps, run_demo

        if list_steps:
            for i, s in enumerate(demo_steps(), 1):
                print(f"{i:2d}. {s.name:9s} {s.doc}")
            return
        t0 = time.perf_counter()
        state = run_demo(config, out, start=start, stop=stop, force=force)
        total = time.perf_counter() - t0
        print(f"\n{'step':10s} {'seconds':>8s}")
        for name, rec in state["steps"].items():
            print(f"{name:10s} {rec['seconds']:8.1f}")
        print(f"demo finished in {total:.0f} s (this invocation); report: {out / 'index.html'}")
