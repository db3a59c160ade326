"""CLI commands: ``tatvpr sim`` (one design point), ``tatvpr sim-synth`` (a synthetic ViT trace) and
``tatvpr sim-report`` (the report section: every skip mode x every traced sparsity + board fit)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer

from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)


# sim-synth bounds: a few times ViT-G / 1,000-block scale; the trace is held in memory whole
SYNTH_MAX = {"depth": 1024, "dim": 65536, "tokens": 65536, "heads": 1024}
SYNTH_MAX_BYTES = 2**32


def _parse_sets(sets: list[str]) -> dict:
    """``["compute.pe=16", "clock_mhz=300"]`` -> overrides (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for item in sets:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. compute.pe=16")
        out[key.strip()] = yaml.safe_load(val)
    return out


def format_table(d: dict) -> str:
    """Readable summary of ``SimResult.to_dict()``, labelled SIMULATED with the arch file."""
    from tatvpr_hw.commands.tables import make_table, render_table

    a = d["arch"]
    c = a["compute"]
    res = d["resources"]
    lines = [
        f"SIMULATED (modelled, not measured) on {d['arch_file']}",
        f"  arch {d['arch_name']}: {c['pe']} PE x {c['simd']} SIMD, {c['weight_format']}, skip={c['skip_mode']}, "
        f"{a['clock_mhz']:g} MHz, board {res['board']} ({res['part']}), energy table {a['energy_table']}",
        f"  trace: {d['trace_meta'].get('model', '?')} sparsity={d['trace_meta'].get('sparsity', '?')}",
        "",
        render_table(make_table(("metric", "value"), [
            ("cycles", f"{d['cycles']:,}"),
            ("latency_ms", f"{d['latency_ms']:.4f}"),
            ("queries_per_s", f"{d['queries_per_s']:.2f}"),
            ("energy_mj (per query)", f"{d['energy_mj']:.4f}"),
            ("average_power_w", f"{d['average_power_w']:.3f}"),
            ("effective_gops", f"{d['effective_gops']:.1f}"),
            ("gops_per_w", f"{d['gops_per_w']:.1f}"),
            ("mac_utilisation", f"{d['mac_utilisation']:.3f}"),
            ("dram_mb (per query)", f"{d['dram_bytes'] / 1e6:.3f}"),
        ])),
        "",
    ]
    g = d.get("gather")
    if g:
        lines.append(f"gather: skip={g['mode']}, {g['banks']} banks x {g['ports']} port(s) x {g['replicas']} "
                     f"replica(s), {g['lanes_per_bank']} lane(s) per bank; conflict_cycles {g['conflict_cycles']:,} "
                     f"per query (cycles lost to bank conflicts)")
    bufs = d.get("buffers")
    if bufs:
        lines.append(render_table(make_table(
            ("name", "kbit", "banks", "ports", "repl", "halves", "width", "depth", "block_type", "blocks"),
            [(b["name"], f"{b['bits'] / 1024:.1f}", b["banks"], b["ports"], b["replicas"], b["halves"],
              b["width_bits"], b["depth"], b["block_type"], f"{b['blocks']:,}") for b in bufs],
            title="buffers")))
    if d.get("power_scope"):
        lines.append(f"energy and power scope: {d['power_scope']}")
    if g or bufs or d.get("power_scope"):
        lines.append("")
    lines.append(render_table(make_table(("unit", "cycles"), [(k, f"{v:,}") for k, v in d["cycles_by_unit"].items()],
                                         title="cycles by unit")))
    sc = d.get("schedule")
    if sc:  # sim.schedule.schedule_summary (docs/simulator.md, "The overlap schedule")
        crit = f"{sc['critical']} ({sc['cycles_by_critical'][sc['critical']]:,} of {sc['cycles']:,} cycles)"
        if sc["overlap"] == "pipelined":
            lines.append(f"schedule: pipelined, {len(sc['segments'])} segments, tiles of {sc['tile_tokens']} tokens, "
                         f"hand-offs {'through DRAM' if sc.get('handoffs') == 'dram' else 'on chip'}; "
                         f"saved {sc['saved_cycles']:,} cycles vs the same ops in sequence; bound by {crit}; "
                         f"DRAM port busy {sc['dram_cycles']:,} cycles")
        else:
            lines.append(f"schedule: none (ops in sequence); most cycles on {crit}; DRAM port busy "
                         f"{sc['dram_cycles']:,} cycles")
    lines.append("")
    total = d["energy_mj"] or 1.0
    lines.append(render_table(make_table(
        ("component", "energy_mj", "share"),
        [(k, f"{v:.4f}", f"{100 * v / total:.1f}%")
         for k, v in sorted(d["energy_by_component_mj"].items(), key=lambda kv: -kv[1])],
        title="energy by component")))
    lines.append("")
    rows = []
    for k in ("lut", "ff", "dsp", "bram36", "uram"):
        u = res["utilisation"][k]
        rows.append((k, f"{res['used'][k]:,}", f"{res['available'][k]:,}", "n/a" if u is None else f"{100 * u:.1f}%"))
    lines.append(render_table(make_table(
        ("resource", "used", "available", "utilisation"), rows,
        title=f"resources on {res['board']} (fit limit {100 * res['max_utilisation']:.0f}%)")))
    lines.append(f"fits: {'yes' if res['fits'] else 'NO (' + ', '.join(res['over']) + ')'}")
    for reason in res.get("why") or []:
        lines.append(f"  {reason}")
    return "\n".join(lines)


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    """Add ``sim``, ``sim-synth`` and ``sim-report`` to the tatvpr app."""

    @app.command("sim")
    def sim_cmd(
        trace: Path = typer.Option(..., "--trace", help="workload trace (.npz from `tatvpr trace` or `tatvpr sim-synth`)"),
        arch: Path = typer.Option(Path("kv260"), "--arch",
                                  help="hardware description YAML (or a name in sim/arch/: kv260, zcu104, pynq_z2)"),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="override an arch key, e.g. compute.skip_mode=both"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of the table"),
        layers: bool = typer.Option(False, "--layers", help="with --json: include per-layer records"),
        out: Optional[Path] = typer.Option(None, "--out", help="also write the full JSON result here"),
    ) -> None:
        """Simulate one query of a trace on an accelerator description (cycles, latency, energy, fit)."""
        from sim import load_arch, read_trace, simulate, with_overrides
        from tatvpr_hw.io import write_json

        if out is not None:  # a folder / under-a-file --out fails before simulating
            from sim.atomic import check_output_path
            check_output_path(out, "--out")
        a = load_arch(arch)
        if sets:
            a = with_overrides(a, _parse_sets(sets))
        result = simulate(a, read_trace(trace)).to_dict()
        if out is not None:
            write_json(out, result)
        if as_json:
            shown = result if layers else {k: v for k, v in result.items() if k != "layers"}
            print(json.dumps(shown, indent=2))
        else:
            print(format_table(result))

    @app.command("sim-synth")
    def sim_synth(
        out: Path = typer.Option(..., "--out", help="trace file to write (.npz)"),
        depth: int = typer.Option(12, help="transformer blocks"),
        dim: int = typer.Option(768, help="embedding dimension D"),
        tokens: int = typer.Option(257, help="tokens per query (class token + patches; ViT-B/14 at 224 px: 257)"),
        heads: int = typer.Option(12, help="attention heads"),
        mlp_ratio: float = typer.Option(4.0, help="MLP hidden = mlp_ratio * D"),
        sparsity: float = typer.Option(0.0, help="activation sparsity s (top-k keeps ceil((1-s) K) per token)"),
        weight_zero_frac: float = typer.Option(1 / 3, help="fraction of zero ternary weights"),
        seed: int = typer.Option(0, help="random seed"),
        granularity: str = typer.Option("token", help="top-k granularity: token (per token) or bank "
                                        "(per token within each bank's channel group; docs/engine.md)"),
        banks: int = typer.Option(32, help="channel groups of the bank granularity (the arch's gather banks)"),
    ) -> None:
        """Write a synthetic ViT query trace from random numbers (defaults: ViT-B/14 at 224 px)."""
        import math

        from sim.atomic import check_output_path
        from sim.trace import synthetic_vit_trace, write_trace

        for name, v in (("depth", depth), ("dim", dim), ("tokens", tokens), ("heads", heads)):
            if not 1 <= v <= SYNTH_MAX[name]:
                raise UserError(f"--{name} = {v}: allowed: an integer in [1, {SYNTH_MAX[name]}]")
        if not math.isfinite(mlp_ratio) or not 0 < mlp_ratio <= 64 or round(dim * mlp_ratio) < 1:
            raise UserError(f"--mlp-ratio = {mlp_ratio}: allowed: a finite number in (0, 64] with "
                            "mlp_ratio * dim >= 1")
        if not math.isfinite(sparsity) or not 0 <= sparsity < 1:
            raise UserError(f"--sparsity = {sparsity}: allowed: a number in [0, 1)")
        if not math.isfinite(weight_zero_frac) or not 0 <= weight_zero_frac <= 1:
            raise UserError(f"--weight-zero-frac = {weight_zero_frac}: allowed: a number in [0, 1]")
        if seed < 0:
            raise UserError(f"--seed = {seed}: allowed: an integer >= 0")
        if granularity not in ("token", "bank"):
            raise UserError(f"--granularity = {granularity!r}: allowed: token, bank")
        if granularity == "bank" and not 1 <= banks <= dim:
            raise UserError(f"--banks = {banks}: allowed: an integer in [1, dim = {dim}]")
        # bytes the trace holds: packed weights (d^2 (4 + 2 r) / 4) and act masks (t d (3 + r)) per block
        held_bytes = depth * (dim * dim * (4 + 2 * mlp_ratio) / 4 + tokens * dim * (3 + mlp_ratio))
        if held_bytes > SYNTH_MAX_BYTES:
            raise UserError(f"--depth {depth} --dim {dim} --tokens {tokens} --mlp-ratio {mlp_ratio:g}: the trace "
                            f"would hold {held_bytes / 2**30:.3g} GiB; allowed: at most "
                            f"{SYNTH_MAX_BYTES / 2**30:g} GiB")
        check_output_path(out, "--out")
        tr = synthetic_vit_trace(depth=depth, dim=dim, tokens=tokens, heads=heads, mlp_ratio=mlp_ratio,
                                 sparsity=sparsity, weight_zero_frac=weight_zero_frac, seed=seed,
                                 granularity=granularity, banks=banks)
        write_trace(out, tr)
        print(f"wrote {out}: {len(tr.ops)} ops ({len(tr.ternary_ops())} ternary linears), sparsity {sparsity}, "
              f"top-k per {granularity}" + (f" ({banks} channel groups)" if granularity == "bank" else ""))

    @app.command("sim-report")
    def sim_report(
        trace: List[str] = typer.Option(..., "--trace", help="S=PATH: the trace of sparsity S; repeat per sparsity"),
        out: Path = typer.Option(..., "--out", help="run folder: writes sim.json and sim_*.png there"),
        arch: Path = typer.Option(Path("kv260"), "--arch", help="hardware description YAML (or a name in "
                                  "sim/arch/: kv260, zcu104, pynq_z2)"),
    ) -> None:
        """Energy/latency vs sparsity for every skip mode, energy breakdown, board fit (SIMULATED)."""
        from sim.report import sim_demo

        traces = {}
        for item in trace:
            s, eq, path = item.partition("=")
            try:
                sv = float(s)
            except ValueError:
                sv = None
            if not eq or sv is None or not 0.0 <= sv < 1.0:
                raise UserError(f"--trace {item!r}: expected S=PATH with 0 <= S < 1, e.g. 0.4=runs/tiny/trace_s0.4.npz")
            traces[sv] = Path(path)
        data = sim_demo(traces, out, arch)
        h = data["headline"]
        print(f"SIMULATED on {data['arch_file']}: wrote {out}/sim.json and {len(data['figures'])} figures")
        print(f"  skip={h['skip_mode']}: s={h['sparse_sparsity']:g} {h['latency_ms_sparse']:.4f} ms, "
              f"{h['energy_mj_sparse']:.4f} mJ/query vs dense (skip=none, s={h['dense_sparsity']:g}) "
              f"{h['latency_ms_dense']:.4f} ms, {h['energy_mj_dense']:.4f} mJ/query")
