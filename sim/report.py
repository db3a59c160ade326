"""The simulator's part of the run report and of ``make demo``: :func:`sim_demo`.

Writes ``run_dir/sim.json`` (rendered by ``tatvpr_hw/report/templates/section_sim.html.j2``) and
``run_dir/sim_*.png``: energy per query and latency vs sparsity for every skip mode on one
arch (KV260 by default), the energy breakdown by component, and the board-fit table of the
shipped arch files, and the overlap schedule (``schedule``: why the arch's query takes its
cycles; ``overlap``: the arch under ``none`` and ``pipelined``, docs/engine.md section 5a).
Everything here is SIMULATED (modelled), never measured.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from sim.arch import ARCH_DIR, DEFAULT_ARCH, load_arch, with_overrides
from sim.atomic import atomic_write, check_output_dir
from sim.energy import COMPONENTS
from sim.errors import SimInputError
from sim.simulator import simulate
from sim.trace import read_trace

log = logging.getLogger(__name__)

SKIP_MODES = ("none", "act", "weight", "both")
BOARD_ARCHS = ("kv260", "zcu104", "pynq_z2")


def _atomic_write(path: Path, write) -> Path:
    """Write through a temporary file beside ``path`` and rename it (readers never see half a file)."""
    return atomic_write(path, lambda tmp: write(str(tmp)))


def write_json(path: str | os.PathLike, obj) -> Path:
    def w(tmp):
        Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")
    return _atomic_write(Path(path), w)


def _row(s: float, mode: str, res) -> dict:
    d = res.summary
    return {"sparsity": s, "skip_mode": mode, "cycles": d["cycles"], "latency_ms": d["latency_ms"],
            "queries_per_s": d["queries_per_s"], "energy_mj": d["energy_mj"], "average_power_w": d["average_power_w"],
            "effective_gops": d["effective_gops"], "gops_per_w": d["gops_per_w"], "mac_utilisation": d["mac_utilisation"],
            "dram_mb": d["dram_bytes"] / 1e6, "ternary_array_cycles": d["cycles_by_unit"]["ternary_array"],
            "energy_by_component_mj": d["energy_by_component_mj"], **_overlap_fields(d)}


def _overlap_fields(d: dict) -> dict:
    """Why a point runs at its rate (docs/simulator.md, "The schedule block"): the overlap mode, each
    unit's busy cycles, the shared DRAM port's, what bound the query, and the cycles the overlap saved
    against the same ops in sequence."""
    s = d["schedule"]
    return {"overlap": s["overlap"], "busy_cycles_by_unit": s["busy_cycles_by_unit"],
            "dram_port_cycles": s["dram_cycles"], "critical": s["critical"], "serial_cycles": s["serial_cycles"],
            "saved_cycles": s["saved_cycles"]}


def overlap_block(arch, trace) -> dict:
    """The base arch under both schedules on one trace: queries/s, cycles, fit and the ``schedule``
    block of each, the cycles ``pipelined`` saves against ``none`` (each with its own buffers and
    tiling), and the rate the busiest resource allows (``clock / bound_cycles``)."""
    out = {}
    for mode in ("none", "pipelined"):
        try:
            r = simulate(with_overrides(arch, {"schedule.overlap": mode}), trace)
        except SimInputError as err:  # e.g. a trace longer than schedule.max_tokens
            out[mode] = {"error": str(err)}
            continue
        s = r.summary["schedule"]
        out[mode] = {"cycles": r["cycles"], "queries_per_s": r["queries_per_s"], "fits": r["fits"],
                     "bound_queries_per_s": arch.spec.clock_mhz * 1e6 / s["bound_cycles"] if s["bound_cycles"] else None,
                     "schedule": s}
    if "cycles" in out["none"] and "cycles" in out["pipelined"]:
        out["saved_cycles_vs_none"] = out["none"]["cycles"] - out["pipelined"]["cycles"]
        out["speedup_vs_none"] = out["none"]["cycles"] / out["pipelined"]["cycles"]
    out["configured"] = arch.spec.schedule.overlap
    out["tile_tokens"] = arch.spec.schedule.tile_tokens
    return out


def _figures(run_dir: Path, rows: list[dict], arch_label: str, breakdown_s: float) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    for key, ylabel, fname in (("energy_mj", "energy per query (mJ)", "sim_energy_vs_sparsity.png"),
                               ("latency_ms", "latency per query (ms)", "sim_latency_vs_sparsity.png")):
        fig, ax = plt.subplots(figsize=(8.0, 4.4), dpi=150)  # the report shows figures 8 in x 150 dpi = 1200 px wide
        for mode in SKIP_MODES:
            pts = sorted((r["sparsity"], r[key]) for r in rows if r["skip_mode"] == mode)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"skip={mode}")
        ax.set_xlabel("activation sparsity s")
        ax.set_ylabel(ylabel)
        ax.set_title(f"SIMULATED on {arch_label}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _atomic_write(run_dir / fname, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
        figs[key] = fname

    fig, ax = plt.subplots(figsize=(8.0, 4.6), dpi=150)
    sel = [r for r in rows if r["sparsity"] == breakdown_s]
    bottom = [0.0] * len(sel)
    for comp in COMPONENTS:
        vals = [r["energy_by_component_mj"][comp] for r in sel]
        if any(v > 0 for v in vals):
            ax.bar([r["skip_mode"] for r in sel], vals, bottom=bottom, label=comp)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("energy per query (mJ)")
    ax.set_title(f"SIMULATED energy by component, s = {breakdown_s:g}, {arch_label}", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    _atomic_write(run_dir / "sim_energy_breakdown.png", lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    figs["breakdown"] = "sim_energy_breakdown.png"
    return figs


def sim_demo(traces: dict[float, Path], run_dir: Path, arch: Path = DEFAULT_ARCH, *,
             board_archs: tuple[str, ...] = BOARD_ARCHS, figures: bool = True) -> dict:
    """Simulate every trace (one per sparsity) under every skip mode on ``arch``; write
    ``run_dir/sim.json`` and the ``sim_*.png`` figures; return the JSON dict.

    ``traces`` maps sparsity s -> trace file (from ``tatvpr trace`` / :mod:`tatvpr_hw.tracing`).
    The board-fit table simulates the densest trace on each shipped arch in ``board_archs``.
    """
    if not traces:
        raise SimInputError("sim_demo: no traces given (expected {sparsity: trace.npz})")
    t0 = time.perf_counter()
    run_dir = check_output_dir(run_dir, "run folder")
    base = load_arch(arch)
    loaded = {float(s): read_trace(p) for s, p in sorted(traces.items())}
    rows = []
    try:
        from tqdm import tqdm
        jobs = tqdm([(s, m) for s in loaded for m in SKIP_MODES], desc="sim", leave=False)
    except ImportError:  # pragma: no cover
        jobs = [(s, m) for s in loaded for m in SKIP_MODES]
    for s, mode in jobs:
        res = simulate(with_overrides(base, {"compute.skip_mode": mode}), loaded[s])
        rows.append(_row(s, mode, res))
    default_mode = base.spec.compute.skip_mode
    s_lo, s_hi = min(loaded), max(loaded)
    arch_res = simulate(base, loaded[s_hi])

    boards = []
    for name in board_archs:
        a = load_arch(ARCH_DIR / f"{name}.yaml")
        try:
            r = simulate(a, loaded[s_lo])
        except SimInputError as err:  # e.g. a weight buffer too small for this model
            boards.append({"arch": name, "arch_file": a.source, "error": str(err)})
            continue
        res = r.resources
        boards.append({"arch": name, "arch_name": a.name, "arch_file": a.source, "board": res["board"],
                       "part": res["part"], "pe": a.compute.pe, "simd": a.compute.simd, "clock_mhz": a.clock_mhz,
                       "skip_mode": a.compute.skip_mode, "weight_format": a.compute.weight_format,
                       "used": res["used"], "available": res["available"], "utilisation": res["utilisation"],
                       "fits": res["fits"], "over": res["over"], "sparsity": s_lo,
                       "latency_ms": r["latency_ms"], "energy_mj": r["energy_mj"]})

    def pick(s, mode):
        return next(r for r in rows if r["sparsity"] == s and r["skip_mode"] == mode)

    dense, best = pick(s_lo, "none"), pick(s_hi, default_mode)
    data = {
        "label": "SIMULATED",
        "note": "modelled by the cycle-level simulator (sim/), not measured on hardware",
        "arch_file": base.source, "arch_name": base.name, "arch": base.to_dict(),
        "energy_table": base.energy.name, "board": base.board.name,
        "default_skip_mode": default_mode,
        "sparsities": list(loaded), "skip_modes": list(SKIP_MODES),
        "traces": {str(s): str(p) for s, p in sorted(traces.items())},
        "trace_meta": {str(s): t.meta for s, t in loaded.items()},
        "rows": rows,
        "breakdown": {"sparsity": s_hi, "skip_mode": default_mode,
                      "energy_by_component_mj": arch_res.summary["energy_by_component_mj"],
                      "cycles_by_unit": arch_res.summary["cycles_by_unit"]},
        "schedule": arch_res.summary["schedule"],
        "overlap": overlap_block(base, loaded[s_hi]),
        "resources": arch_res.resources,
        "boards": boards,
        "headline": {"dense_sparsity": s_lo, "sparse_sparsity": s_hi, "skip_mode": default_mode,
                     "latency_ms_dense": dense["latency_ms"], "latency_ms_sparse": best["latency_ms"],
                     "energy_mj_dense": dense["energy_mj"], "energy_mj_sparse": best["energy_mj"],
                     "speedup": dense["latency_ms"] / best["latency_ms"],
                     "energy_saving_pct": 100.0 * (1 - best["energy_mj"] / dense["energy_mj"])},
        "figures": {},
    }
    if figures:
        data["figures"] = _figures(run_dir, rows, f"{base.name} ({Path(base.source).name})", s_hi)
    data["seconds"] = time.perf_counter() - t0
    write_json(run_dir / "sim.json", data)
    log.info("sim: wrote %s (%d points) in %.1f s", run_dir / "sim.json", len(rows), data["seconds"])
    return data
