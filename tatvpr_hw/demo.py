"""``tatvpr demo`` / ``make demo``: the whole flow, offline, on the tiny configuration.

The flow is an ordered list of named steps (:mod:`tatvpr_hw.flow`): each records its result
and wall time in ``<run_dir>/steps.json``, so a killed demo resumes at the first unfinished
step and ``--from`` / ``--to`` rerun a slice. Everything lands under the run folder
(default ``reports/demo/``): the synthetic benchmark, checkpoints, traces, simulator results,
exported artifacts, the HLS and RTL checks, and ``index.html``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tatvpr_hw.config import Config, config_to_dict, load_config, parse_config
from tatvpr_hw.flow import FlowContext, NamedStep, run_flow

log = logging.getLogger(__name__)

DEMO_SPARSITIES_TRACE = (0.0, 0.2, 0.4, 0.6)
RTL_TRACE_SPARSITY = 0.4


def demo_config(config_path: str | Path, run_dir: Path) -> Config:
    """The config with the benchmark and checkpoints relocated into the run folder."""
    cfg = load_config(config_path)
    data = config_to_dict(cfg)
    data["data"]["root"] = str(run_dir / "data")
    data["train"]["out_dir"] = str(run_dir / "checkpoints")
    return parse_config(data, str(config_path))


def _ckpt(ctx: FlowContext, stage: str) -> Path:
    return Path(ctx.results[stage]["checkpoint"])


def _train(stage: str):
    def step(ctx: FlowContext) -> dict[str, Any]:
        from tatvpr_hw.training import run_stage

        path = run_stage(ctx.cfg, stage, resume=True)
        return {"checkpoint": str(path)}
    return step


def step_models(ctx: FlowContext) -> dict[str, Any]:
    """Exact footprint of the trained student (its real packed codes)."""
    from brevitas_models.checkpoint import load_model
    from brevitas_models.footprint import footprint
    from tatvpr_hw.io import write_json

    model, _ = load_model(_ckpt(ctx, "finetune"), ctx.cfg.model)
    fp = footprint(model, model.img_size, pack_weights=True)
    path = write_json(ctx.run_dir / "footprint.json", fp)
    return {"footprint": str(path), "backbone_bytes": fp.get("backbone_bytes")}


def step_trace(ctx: FlowContext) -> dict[str, Any]:
    from tatvpr_hw.tracing import trace_demo

    paths = trace_demo(ctx.cfg, _ckpt(ctx, "finetune"), DEMO_SPARSITIES_TRACE, ctx.run_dir / "traces",
                       seed=ctx.cfg.seed)
    return {"traces": {str(s): str(p) for s, p in paths.items()}}


def _traces(ctx: FlowContext) -> dict[float, Path]:
    return {float(s): Path(p) for s, p in ctx.results["trace"]["traces"].items()}


def step_sim(ctx: FlowContext) -> dict[str, Any]:
    from sim.report import sim_demo

    data = sim_demo(_traces(ctx), ctx.run_dir)
    return {"sim_json": str(ctx.run_dir / "sim.json"), "arch": str(data.get("arch", ""))}


def step_dse(ctx: FlowContext) -> dict[str, Any]:
    from sim.dse import write_dse_summary
    from tatvpr_hw.tracing import dse_demo

    res = dse_demo(_traces(ctx), ctx.run_dir / "dse")
    write_dse_summary(res["out_dir"], ctx.run_dir)  # run_dir/dse.json: the report's dse section
    return {"table": str(res["table"]), "best_point": str(res["best_point"]), "points": res["points"],
            "best": res["best"]}


PAPER_TARGET_QPS = 60.0
PAPER_SPARSITY = 0.4


def step_paper(ctx: FlowContext) -> dict[str, Any]:
    """The paper model's whole query on the KV260 against the 60 queries/s target (SIMULATED):
    a synthetic ViT-B/14 trace at 224 px and the neighbourhood sweep of the best point
    (``sim/sweeps/kv260_query_demo.yaml``; the full sweep is ``kv260_query.yaml``, docs/dse.md)."""
    from sim import dse as sdse
    from sim.trace import synthetic_vit_trace, write_trace
    from tatvpr_hw.io import write_json

    out = ctx.run_dir / "paper"
    trace = out / f"vitb14_224_s{PAPER_SPARSITY}.npz"
    out.mkdir(parents=True, exist_ok=True)
    write_trace(trace, synthetic_vit_trace(sparsity=PAPER_SPARSITY, seed=ctx.cfg.seed))
    space = sdse.SIM_DIR / "sweeps" / "kv260_query_demo.yaml"
    from tatvpr_hw.lower.hls.board import get_board

    res = sdse.run_sweep(sdse.load_sweep(space), [trace], out / "dse", workers=1, progress=False)
    data = paper_summary(res.table.to_dict("records"), space, get_board("kv260").max_clock_mhz)
    write_json(ctx.run_dir / "paper.json", data)
    best = data["best_fitting"]
    return {"paper_json": str(ctx.run_dir / "paper.json"), "met": data["met"],
            "best_fitting_qps": best["queries_per_s"] if best else None}


def _util(row: dict) -> dict[str, float]:
    return {k[len("util_"):]: float(v) for k, v in row.items() if k.startswith("util_") and v == v}


def _ip_builds(p: dict, ip_max_clock_mhz: float) -> bool:
    """What `tatvpr export bitstream` builds (docs/hls.md): the IP's skip modes, at most the board
    flow's clock, and hand-offs through DDR (the IPs are AXI masters to the PS DDR; a point whose
    sweep does not say ``schedule.handoffs: dram`` was charged the simulator's default, on chip)."""
    from tatvpr_hw.lower.hls.board import IP_SKIP_MODES

    return bool(p["skip_mode"] in IP_SKIP_MODES and p["clock_mhz"] <= ip_max_clock_mhz
                and p.get("handoffs") == "dram")


def _ip_skip_modes() -> tuple[str, ...]:
    from tatvpr_hw.lower.hls.board import IP_SKIP_MODES

    return IP_SKIP_MODES


def paper_summary(rows: list[dict], space: Path, ip_max_clock_mhz: float) -> dict[str, Any]:
    """``paper.json``: every point, the fastest fitting one against the target, what binds, and the
    fastest fitting one this repository's HLS IP builds (its skip modes, at most the board flow's
    clock cap ``ip_max_clock_mhz``)."""
    def given(v) -> bool:  # a CSV cell: NaN / None / "" mean "not given"
        return isinstance(v, str) and v != ""

    invalid = [r for r in rows if given(r.get("invalid"))]
    failed = [r for r in rows if given(r.get("error")) and not given(r.get("invalid"))]
    pts = []
    for r in rows:
        if given(r.get("invalid")) or given(r.get("error")):
            continue  # an axis combination the arch refuses, or a point the simulator refused: no numbers
        util = _util(r)
        binding = max(util, key=util.get) if util else None
        pts.append({k: r[k] for k in ("pe", "simd", "skip_mode", "clock_mhz", "overlap", "int8_rows", "int8_cols",
                                      "tile_tokens", "queries_per_s", "latency_ms", "energy_mj", "fits")}
                   | {"handoffs": r.get("handoffs", r.get("schedule.handoffs", "onchip")),
                      "topk": r.get("topk", r.get("schedule.topk", "fabric")),
                      "attention": r.get("attention", r.get("schedule.attention", "split"))}
                   | {"misfit": r["misfit"] if isinstance(r.get("misfit"), str) else "", "max_util": max(util.values()) if util else None,
                      "binding": binding})
    for p in pts:
        p["ip_builds"] = _ip_builds(p, ip_max_clock_mhz)
    pts.sort(key=lambda p: -p["queries_per_s"])
    fitting = [p for p in pts if p["fits"]]
    buildable = next((p for p in fitting if p["ip_builds"]), None)
    best = fitting[0] if fitting else None
    serial = next((p for p in fitting if p["overlap"] == "none"), None)
    faster = [p for p in pts if not p["fits"] and (best is None or p["queries_per_s"] > best["queries_per_s"])]
    return {"model": "ViT-B/14, 224 px, 257 tokens, 12 blocks (synthetic trace, no head)",
            "sparsity": PAPER_SPARSITY, "board": "kv260", "space": space.name, "target_qps": PAPER_TARGET_QPS,
            "resource_limit": 0.8, "points": pts, "best_fitting": best, "best_serial": serial,
            "faster_not_fitting": faster, "met": bool(best and best["queries_per_s"] >= PAPER_TARGET_QPS),
            "ip_skip_modes": list(_ip_skip_modes()), "ip_max_clock_mhz": ip_max_clock_mhz,
            "best_buildable": buildable, "invalid": len(invalid), "failed": len(failed),
            "invalid_reasons": sorted({r["invalid"] for r in invalid})}


def step_export(ctx: FlowContext) -> dict[str, Any]:
    from tatvpr_hw.lower.api import export_demo

    res = export_demo(ctx.cfg, _ckpt(ctx, "finetune"), ctx.run_dir,
                      dse_point=ctx.results["dse"]["best_point"])
    return {"export_json": res["export_json"], "time_s": res.get("time_s")}


def step_hls(ctx: FlowContext) -> dict[str, Any]:
    from tatvpr_hw.lower.hls.demo import hls_demo

    traces = _traces(ctx)
    res = hls_demo(ctx.run_dir, _ckpt(ctx, "finetune"), seed=ctx.cfg.seed,
                   trace_path=traces.get(RTL_TRACE_SPARSITY), dse_point=ctx.results["dse"]["best_point"])
    return {k: v for k, v in res.items() if isinstance(v, (str, int, float, bool, type(None)))}


def step_rtl(ctx: FlowContext) -> dict[str, Any]:
    from tatvpr_hw.lower.rtl.flow import rtl_demo

    return rtl_demo(ctx.run_dir, _traces(ctx)[RTL_TRACE_SPARSITY], seed=ctx.cfg.seed)


def _query_step(ctx: FlowContext) -> dict[str, Any]:
    from tatvpr_hw.lower.hls.query_csim import flow_step_query

    res = flow_step_query(ctx)
    return {k: v for k, v in res.items() if k != "units"} | {
        f"{u}_cycles_match": v["match"] for u, v in res["units"].items()}


def demo_steps() -> list[NamedStep]:
    from tatvpr_hw.evaluation import flow_step_data, flow_step_eval, flow_step_report

    return [
        NamedStep("data", flow_step_data, "write the synthetic benchmark (GSV-Cities + VPR layouts)"),
        NamedStep("teacher", _train("teacher"), "float teacher: load model.teacher_checkpoint, else train it"),
        NamedStep("distill", _train("distill"), "stage 1+2: ternary student from the teacher, token distillation"),
        NamedStep("finetune", _train("finetune"), "stage 3: metric fine-tuning of the head and last blocks"),
        NamedStep("eval", flow_step_eval, "Recall@N, GMACs, memory and simulated KV260 latency/energy over "
                                          "granularity x sparsity"),
        NamedStep("models", step_models, "exact footprint of the trained student"),
        NamedStep("trace", step_trace, "workload traces of one query at several sparsities"),
        NamedStep("sim", step_sim, "cycle-level simulation: latency and energy per query (KV260)"),
        NamedStep("dse", step_dse, "design-space sweep and Pareto front"),
        NamedStep("paper", step_paper, "paper model (ViT-B/14) on the KV260: whole-query sweep vs 60 queries/s"),
        NamedStep("export", step_export, "QONNX, hls4ml (C-simulated) and FINN exports, verified"),
        NamedStep("hls", step_hls, "packed-ternary HLS IP: C-simulation on real layers, KV260 project"),
        NamedStep("query", _query_step, "one query (trunk and head) through the C-simulated units = the integer model"),
        NamedStep("rtl", step_rtl, "RTL tile vs simulator (Verilator), iCE40 bitstream"),
        NamedStep("report", flow_step_report, "HTML report"),
    ]


def run_demo(config_path: str | Path = "tiny", run_dir: str | Path = "reports/demo", *,
             start: str | None = None, stop: str | None = None, force: bool = False) -> dict[str, Any]:
    run_dir = Path(run_dir)
    cfg = demo_config(config_path, run_dir)
    ctx = FlowContext(cfg, run_dir)
    return run_flow(demo_steps(), ctx, start=start, stop=stop, force=force)
