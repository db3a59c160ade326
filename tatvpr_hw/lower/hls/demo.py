"""The demo's HLS step and the report's ``hls.json``.

:func:`hls_demo` compiles the kernel's C simulation, runs it on one real ternary layer of the
tiny student (its own int8 activations after top-k, its ternary codes) at several sparsities
in both weight formats, checks the outputs bit-exactly against the integer reference and the
CHUNK-loop trip counts against the simulator's ``fold_compute_cycles(..., "act", banks=B, ports=P)``
(bank conflicts included), optionally
runs layers of a workload trace, and writes the KV260 bitstream project.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.io import write_json

log = logging.getLogger(__name__)

DEMO_LAYER = "backbone.blocks.0.mlp.fc1"
DEMO_SPARSITIES = (0.0, 0.4, 0.6)
DEMO_FORMATS = ("ternary2", "ternary1.6")
# top-k granularities run per sparsity > 0: "bank" keeps kept_count(K / B, s) channels in each of
# the IP's B banks (docs/engine.md section 3), so its conflict cycles should all but vanish
DEMO_GRANULARITIES = ("token", "bank")


def _sim_cycles(layer) -> tuple[list[int], list[int]]:
    """The simulator's C_f of the layer with the IP's banks, and with one bank of SIMD ports."""
    from sim.engine import fold_compute_cycles
    from tatvpr_hw.lower.hls.formats import unpack_weights, unschedule_activations

    if layer.skip_mode == "none":  # the dense tokens; no bank conflicts in skip mode none
        x = np.asarray(layer.pairs, np.int8).reshape(layer.m, layer.k)
    else:
        x = unschedule_activations(layer.tok_chunks, layer.pairs, layer.k, layer.simd, layer.banks)
    w = unpack_weights(layer.weights, layer.n, layer.k, layer.fmt)
    mode = layer.skip_mode
    banked = fold_compute_cycles(x != 0, w, layer.pe, layer.simd, mode, banks=layer.banks, ports=layer.ports)
    one_bank = fold_compute_cycles(x != 0, w, layer.pe, layer.simd, mode, banks=1, ports=1)
    return [int(c) for c in banked], [int(c) for c in one_bank]


def _skip_mode_of(path) -> str | None:
    import json

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # read_design_point reports the problem
    return d.get("skip_mode") if isinstance(d, dict) else None


def _record(layer, res, info: dict[str, Any]) -> dict[str, Any]:
    sim, one_bank = _sim_cycles(layer)
    got = [int(c) for c in res.chunk_cycles]
    rec = {k: info[k] for k in ("name", "m", "k", "n", "fmt", "act_density") if k in info}
    rec.update({
        "sparsity": info.get("sparsity"), "granularity": info.get("granularity"), "status": int(res.status), "mismatches": int(res.mismatches),
        "bit_exact": bool(res.status == 0 and res.mismatches == 0),
        "folds": len(got), "chunk_cycles_per_fold": got[0] if got else 0,
        "chunk_cycles_total": int(sum(got)),
        "sim_cycles_total": int(sum(sim)), "cycles_match": got == sim,
        "banks": layer.banks, "ports": layer.ports,
        "conflict_cycles_total": int(sum(sim) - sum(one_bank)),
    })
    for k in ("out_scale", "out_max_abs_err", "acc_max_abs_err"):
        if k in info:
            rec[k] = info[k]
    return rec


def _student(checkpoint: str | Path | None, seed: int):
    import torch

    from brevitas_models.model import build_model
    from tatvpr_hw.config import load_config, parse_config
    from tatvpr_hw.lower.hls.paths import REPO_ROOT

    if checkpoint is None:
        cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml")
        torch.manual_seed(seed)
        return build_model(cfg.model, student=True).eval(), cfg, "untrained tiny student (seeded init)"
    from brevitas_models.checkpoint import load_checkpoint, load_into

    state, meta = load_checkpoint(checkpoint)
    cfg = parse_config(meta["config"], f"{checkpoint} (meta config)") if meta.get("config") else \
        load_config(REPO_ROOT / "configs" / "tiny.yaml")
    if meta.get("role") not in (None, "student"):
        raise UserError(f"{checkpoint}: role {meta.get('role')!r}; the HLS demo needs a student checkpoint")
    model = build_model(cfg.model, student=True)
    load_into(model, state)
    return model.eval(), cfg, f"{checkpoint} (stage {meta.get('stage')}, step {meta.get('step')})"


def hls_demo(run_dir: str | Path, checkpoint: str | Path | None = None, *, seed: int = 0,
             images=None, trace_path: str | Path | None = None, dse_point: str | Path | None = None,
             pe: int | None = None, simd: int | None = None, layer_name: str = DEMO_LAYER,
             sparsities=DEMO_SPARSITIES, board: str = "kv260", model=None) -> dict[str, Any]:
    """Run the HLS IP's C simulation on a real student layer; write the board project and hls.json.

    Args:
        run_dir: run folder; writes ``hls.json`` and ``hls/<board>/`` (the bitstream project).
        checkpoint: student checkpoint (``.safetensors`` + ``.json``); default: seeded tiny student.
        images: float images ``[B, 3, H, W]`` for the forward pass; default one seeded noise image.
        trace_path: a ``sim.trace`` file; up to 4 of its ternary layers also run through the C-sim.
        dse_point: ``best_point.json`` for the board project and the C-sim's PE x SIMD (default:
            the simulator's accelerator for the board, ``sim/arch/<board>.yaml``).
        pe, simd: override the C-sim's PE x SIMD (the board project keeps the design point's).
        model: an already built (and calibrated) student to use instead of ``checkpoint``.
    """
    import torch

    from brevitas_models.quant import calibrate_input_scales
    from tatvpr_hw.lower.hls.board import (default_design_point, export_bitstream, get_board, kernel_params,
                                         read_design_point)
    from tatvpr_hw.lower.hls.csim import build_csim, run_csim
    from tatvpr_hw.lower.hls.layers import layers_from_trace, model_layers

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    point_note = None
    if dse_point and _skip_mode_of(dse_point) not in (None, "act", "none"):
        # the IP builds act or none: a DSE winner of another skip mode cannot be built as this IP
        point_note = (f"{dse_point}: skip_mode {_skip_mode_of(dse_point)!r} is not one the IP builds ('act', "
                      f"'none'); the board's default arch is used instead")
        log.warning("HLS demo: %s", point_note)
        dse_point = None
    point = read_design_point(dse_point, get_board(board)) if dse_point else \
        default_design_point(get_board(board))
    if pe or simd:  # a C-sim of another array; banks fall back to SIMD when SIMD changes
        point = replace(point, pe=pe or point.pe, simd=simd or point.simd,
                        banks=point.banks if simd in (None, point.simd) else None)
    kp = kernel_params(point)  # one build serves the demo's layers and the board project's sample
    pe, simd, banks, ports = kp.pe, kp.simd, kp.banks, kp.ports
    if model is not None:
        source, fresh = "given student model", False
        img = int(getattr(model, "img_size", 98))
    else:
        model, cfg, source = _student(checkpoint, seed)
        img, fresh = cfg.model.student_img_size, checkpoint is None
    if images is None:
        images = torch.randn(1, 3, img, img, generator=torch.Generator().manual_seed(seed))
    if fresh:  # an untrained student: set its int8 input ranges from this forward pass
        calibrate_input_scales(model, [images])

    from brevitas_models.sparsity import sparsity_modules

    tops = sparsity_modules(model)
    saved = [(m.granularity, m.banks) for m in tops]
    runs: list[tuple[Any, dict]] = []
    try:
        for s in sparsities:
            for granularity in DEMO_GRANULARITIES if s > 0 else DEMO_GRANULARITIES[:1]:
                for m in tops:
                    m.granularity, m.banks = granularity, banks
                # the bank granularity in one weight format: the stream does not depend on it
                for fmt in DEMO_FORMATS if granularity == "token" else DEMO_FORMATS[:1]:
                    ((layer, info),) = model_layers(model, images, s, pe=pe, simd=simd, banks=banks, ports=ports,
                                                    fmt=fmt, names=[layer_name], skip_mode=kp.skip_mode)
                    runs.append((layer, {**info, "granularity": granularity}))
    finally:
        for m, (g, b) in zip(tops, saved):
            m.granularity, m.banks = g, b
    trace_runs: list[tuple[Any, dict]] = []
    if trace_path:
        from sim.trace import read_trace

        trace_runs = layers_from_trace(read_trace(trace_path), pe=pe, simd=simd, banks=banks, ports=ports,
                                       seed=seed, max_layers=4, skip_mode=kp.skip_mode)
    all_layers = [lay for lay, _ in runs + trace_runs]
    for (lay, info) in runs + trace_runs:
        why = kp.fits(lay)
        if why:
            raise UserError(f"HLS demo layer {info['name']}: {why}")
    cache = run_dir / "hls" / "csim_build"
    t_build = time.perf_counter()
    exe = build_csim(kp, cache)
    compile_s = time.perf_counter() - t_build
    t_run = time.perf_counter()
    results = run_csim(exe, all_layers, run_dir / "hls" / "csim_run")
    csim_s = time.perf_counter() - t_run
    records = [_record(lay, res, info) for (lay, info), res in zip(runs + trace_runs, results)]
    for rec in records:
        if not rec["bit_exact"]:
            log.error("HLS C simulation MISMATCH on %s (%s, s=%s): %d outputs differ, status %d",
                      rec["name"], rec["fmt"], rec["sparsity"], rec["mismatches"], rec["status"])

    project_dir = run_dir / "hls" / board
    manifest = export_bitstream(board, project_dir, dse_point=dse_point, kmax=max(lay.k for lay in all_layers),
                                mmax=max(lay.m for lay in all_layers), seed=seed, csim_cache=cache)
    model_recs = records[:len(runs)]
    summary = {
        "source": source, "layer": layer_name, "pe": pe, "simd": simd, "banks": banks, "ports": ports,
        "bit_exact": all(r["bit_exact"] for r in records),
        "cycles_match": all(r["cycles_match"] is not False for r in records),
        "layers": model_recs, "trace_layers": records[len(runs):],
        "trace": None if trace_path is None else str(trace_path), "design_point_note": point_note,
        "board_project": {
            "board": manifest["board"], "part": manifest["part"], "dir": str(project_dir.relative_to(run_dir)),
            "design_point": manifest["design_point"], "kernel": manifest["kernel"],
            "onchip_bits": manifest["onchip_bits"], "board_onchip_bits": manifest["board_onchip_bits"],
            "tools_ran": manifest["tools"].get("ran", False), "commands": manifest["commands"],
            "sample_bit_exact": manifest["csim_sample"].get("bit_exact")},
        "timing_s": {"compile": round(compile_s, 2), "csim": round(csim_s, 2),
                     "total": round(time.perf_counter() - t0, 2)},
    }
    write_json(run_dir / "hls.json", summary)
    log.info("HLS demo: %d layers, bit-exact %s, cycles match %s, %.1f s", len(records),
             summary["bit_exact"], summary["cycles_match"], summary["timing_s"]["total"])
    return summary
