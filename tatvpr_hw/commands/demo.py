"""CLI command: `tatvpr demo` -- the whole flow on the tiny config (what `make demo` runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer


def report_line(state: dict, out: Path) -> str:
    """Where the report is -- only when the report step has written it; else how to get it."""
    report = out / "index.html"
    if "report" not in state["steps"]:
        return (f"no report written (the report step has not run); `tatvpr demo --out {out}` "
                "continues the flow up to it")
    if not report.is_file():
        return f"no report: {report} is missing; `tatvpr demo --out {out} --from report --force` writes it"
    return f"report: {report}"


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add `tatvpr demo`."""

    @app.command("demo")
    def demo(
        config: Path = typer.Option(Path("tiny"), help="run configuration YAML or a built-in name in configs/"),
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

        from tatvpr_hw.commands.tables import echo_table

        if list_steps:
            echo_table(("#", "step", "what it does"),
                       ((i, s.name, s.doc) for i, s in enumerate(demo_steps(), 1)), left=3)
            return
        t0 = time.perf_counter()
        state = run_demo(config, out, start=start, stop=stop, force=force)
        total = time.perf_counter() - t0
        print()
        echo_table(("step", "seconds"), ((name, f"{rec['seconds']:.1f}") for name, rec in state["steps"].items()))
        print(f"demo finished in {total:.0f} s (this invocation); {report_line(state, out)}")
