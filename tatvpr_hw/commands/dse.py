"""CLI commands: `tatvpr dse` (design-space sweeps) and `tatvpr trace` (model -> workload trace)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer

from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)

SHOWN_PARETO_ROWS = 25  # the terminal table's rows; results.csv holds every point


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add `dse` and `trace` to the tatvpr app."""

    @app.command("dse")
    def dse(
        space: Path = typer.Option(..., "--space", help="sweep YAML (arch, board, axes, sampling, select), or the "
                            "name of a built-in one in sim/sweeps/: kv260_small, kv260_wide, kv260_gather"),
        trace: List[Path] = typer.Option(..., "--trace", help="workload trace; repeat, one per sparsity level"),
        out: Path = typer.Option(..., "--out", help="sweep folder (points.jsonl, results.csv/.parquet, "
                                 "pareto.png, best_point.json); rerun to resume"),
        backend: str = typer.Option("local", help="local (process pool) or ray (RAY_ADDRESS or a local Ray)"),
        workers: Optional[int] = typer.Option(None, help="parallel workers (default: CPU count)"),
        seed: Optional[int] = typer.Option(None, help="seed of random sampling (overrides sampling.seed)"),
        as_json: bool = typer.Option(False, "--json", help="print the best point as JSON"),
    ) -> None:
        """Sweep the accelerator design space over traces; Pareto front under the board constraint."""
        from sim import dse as sdse

        if backend not in sdse.BACKENDS:
            raise UserError(f"--backend {backend!r}; allowed: {', '.join(sdse.BACKENDS)}")
        if workers is not None and not 1 <= workers <= 4096:
            raise UserError(f"--workers = {workers}; allowed: an integer in [1, 4096]")
        if seed is not None and not 0 <= seed < 2**63:
            raise UserError(f"--seed = {seed}; allowed: an integer in [0, 2^63)")
        spec = sdse.load_sweep(space)
        if seed is not None:
            spec.seed = seed
        res = sdse.run_sweep(spec, trace, out, backend=backend, workers=workers)
        if as_json:
            print(json.dumps(res.best, indent=2))
            return
        t = res.table
        print(f"{len(t)} points ({res.evaluated} run now, {res.skipped} resumed) in {res.seconds:.1f} s; "
              f"{int(t['fits'].sum())} fit the board, {int(t['pareto'].sum())} on the Pareto fronts")
        front = t[t["pareto"]].sort_values(["sparsity", "latency_ms"])
        cols = [c for c in ("sparsity", *spec.axes, "latency_ms", "energy_mj", "queries_per_s",
                            "resource_frac", "resource_mean") if c in front.columns]
        if len(front):
            from tatvpr_hw.commands.tables import echo_table

            def cell(v):
                if not isinstance(v, float):
                    return v
                return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"

            shown = front[cols].head(SHOWN_PARETO_ROWS)
            echo_table(cols, ([cell(v) for v in row] for row in shown.itertuples(index=False)),
                       title="Pareto points (by sparsity, then latency)", left=0)
            if len(front) > len(shown):
                print(f"... {len(front) - len(shown)} more Pareto points in {out}/results.csv (column pareto)")
        if res.best:
            b = res.best
            print(f"best ({b['selected_by']}): pe={b['pe']} simd={b['simd']} clock={b['clock_mhz']} MHz "
                  f"{b['weight_format']} skip={b['skip_mode']} on {b['board']} at s={b['sparsity']}: "
                  f"{b['metrics']['latency_ms']:.4g} ms, {b['metrics']['energy_mj']:.4g} mJ/query")
        print(f"wrote {out}/results.csv, results.parquet, pareto.png"
              + (", best_point.json" if res.best else ""))

    @app.command("trace")
    def trace_cmd(
        config: Path = typer.Option(..., "--config", help="run configuration YAML"),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="student checkpoint "
                                                  "(<path>.safetensors + .json); default: untrained student"),
        sparsity: float = typer.Option(..., "--sparsity", help="activation sparsity s in [0, 1)"),
        images: int = typer.Option(1, "--images", help="queries to trace; N > 1 writes out_0.npz .. out_{N-1}.npz"),
        out: Path = typer.Option(..., "--out", help="trace file (.npz)"),
        seed: int = typer.Option(0, min=0, help="seed (seeded inputs when the benchmark is absent)"),
    ) -> None:
        """Run the student on real queries with hooks and write the workload trace for the simulator."""
        from sim.atomic import check_output_path
        from tatvpr_hw.config import load_config
        from tatvpr_hw.tracing import trace_model

        cfg = load_config(config)
        check_output_path(out, "--out")  # before the model runs
        paths = trace_model(cfg, checkpoint=checkpoint, sparsity=sparsity, images=images, out=out, seed=seed)
        for p in paths:
            print(f"wrote {p}")
