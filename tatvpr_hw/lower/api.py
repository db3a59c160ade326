"""The export routes as functions of (run config, checkpoint): what the CLI and the demo call.

Every function verifies its artifact against PyTorch before returning and raises
:class:`~tatvpr_hw.lower.common.ExportCheckError` (a UserError: exit 2) when the error is above
the stated bound. Each writes a ``<route>.json`` summary next to its artifacts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.common import (BLOCKS, Check, capture_inputs, check_choice, error_stats,
                                     load_student, sample_images, select_layers)
from tatvpr_hw.io import write_json

log = logging.getLogger(__name__)

EXPORT_JSON_VERSION = 1


def _sparsity(cfg, sparsity: float | None) -> float:
    from brevitas_models.sparsity import check_sparsity

    return check_sparsity(cfg.model.sparsity.default if sparsity is None else sparsity)


def _prepare(cfg, checkpoint, sparsity: float | None, n_images: int, seed: int | None):
    from brevitas_models.sparsity import set_sparsity

    torch.manual_seed(cfg.seed if seed is None else seed)
    model = load_student(cfg, checkpoint)
    s = _sparsity(cfg, sparsity)
    set_sparsity(model, s)
    img_size = getattr(model, "img_size", cfg.model.student_img_size)
    images, source = sample_images(cfg, n_images, cfg.seed if seed is None else seed, img_size)
    return model, s, images, source


def export_qonnx(cfg, checkpoint, out_dir: str | Path, *, sparsity: float | None = None,
                 n_images: int = 2, seed: int | None = None) -> dict[str, Any]:
    """Whole student -> QONNX (``out_dir/student_clean.onnx``), checked with qonnx's executor."""
    from tatvpr_hw.lower.qonnx.route import export_model_qonnx

    out_dir = Path(out_dir)
    model, s, images, source = _prepare(cfg, checkpoint, sparsity, n_images, seed)
    summary = export_model_qonnx(model, images, out_dir, sparsity=s)
    summary.update({"inputs": source, "checkpoint": str(checkpoint) if checkpoint else None})
    write_json(out_dir / "qonnx.json", summary)
    Check(**_check_args(summary["check"])).require()
    return summary


def _check_args(d: dict[str, Any]) -> dict[str, Any]:
    stats = {k: d[k] for k in ("max_abs_err", "mean_abs_err")}
    return {"artifact": d["artifact"], "stats": stats, "bound_max_abs": d["bound_max_abs"],
            "bound_mean_abs": d["bound_mean_abs"], "why": d["bound_reason"]}


def block_layers(cfg, checkpoint, block: str, layer: int, *, sparsity: float | None,
                 n_images: int, seed: int | None, output_quant: bool = False):
    """The standalone layers of ``block`` with the real activations they receive."""
    from tatvpr_hw.lower.layers import standalone_linear

    check_choice(block, BLOCKS, "block")
    model, s, images, source = _prepare(cfg, checkpoint, sparsity, n_images, seed)
    named = select_layers(model, block, layer)
    tokens: list[int] = []
    inputs = capture_inputs(model, [m for _, m in named], images, tokens=tokens)
    layers = [standalone_linear(n, m, x, output_quant=output_quant, tokens=t)
              for (n, m), x, t in zip(named, inputs, tokens)]
    return layers, s, source


def export_hls4ml(cfg, checkpoint, out_dir: str | Path, *, block: str = "mlp", layer: int = 0,
                  backend: str = "Vitis", io_type: str = "io_parallel", board: str = "kv260",
                  part: str | None = None, reuse_factor: int | None = None,
                  dse_point: str | Path | None = None, strategy: str = "Resource",
                  sparsity: float | None = None, n_images: int = 2, seed: int | None = None,
                  build: bool = True, max_layers: int | None = None,
                  qkeras_twin: bool | int = False) -> dict[str, Any]:
    """Each GEMM of ``block`` -> hls4ml project ``tatvpr_<layer>``, C-simulated against PyTorch.

    ReuseFactor per layer: ``reuse_factor`` if given; else ``K * N / (PE * SIMD)`` with PE and
    SIMD of ``dse_point`` (``best_point.json``), else of the board's default accelerator
    (``sim/arch/<board>.yaml``), rounded to a valid hls4ml reuse factor. ``part`` defaults to
    the board's part. ``max_layers`` limits how many of the block's layers are lowered (the
    head may have many). ``qkeras_twin``: also build the QKeras twin of the ternary layers
    (True = all, an int = the first N) and compare the two frontends' C-simulations (needs
    the ``qkeras`` extra).
    """
    from tatvpr_hw.lower.finn.route import finn_board, read_dse_point
    from tatvpr_hw.lower.hls4ml.route import check_part, export_layer_hls4ml

    fb = finn_board(board)
    part = check_part(part or fb.part)
    if reuse_factor is not None and dse_point is not None:
        raise UserError("give either --reuse-factor or --dse-point (reuse = K*N / (PE*SIMD)), not both")
    if reuse_factor is not None:
        pe_simd, rf_source = None, "--reuse-factor"
    elif dse_point is not None:
        pt = read_dse_point(dse_point, fb)
        pe_simd, rf_source = pt.pe * pt.simd, f"{dse_point} (PE {pt.pe} x SIMD {pt.simd})"
    else:
        pe_simd = fb.default_pe * fb.default_simd
        rf_source = f"sim/arch/{fb.name}.yaml (PE {fb.default_pe} x SIMD {fb.default_simd})"
    out_dir = Path(out_dir)
    layers, s, source = block_layers(cfg, checkpoint, block, layer, sparsity=sparsity,
                                     n_images=n_images, seed=seed)
    if max_layers is not None:
        layers = layers[:max_layers]
    results, twins = [], []
    n_twins = len(layers) if qkeras_twin is True else int(qkeras_twin)
    for le in tqdm(layers, desc=f"hls4ml {block}", unit="layer"):
        r, hmodel = export_layer_hls4ml(le, out_dir, backend=backend, io_type=io_type, part=part,
                                        reuse_factor=reuse_factor, pe_simd=pe_simd,
                                        strategy=strategy, build=build, return_model=True)
        r["reuse"]["source"] = rf_source
        results.append(r)
        if le.ternary and len(twins) < n_twins:
            from tatvpr_hw.lower.hls4ml.qkeras_twin import export_twin_hls4ml

            twins.append(export_twin_hls4ml(le, out_dir, qonnx_hls_model=hmodel, backend=backend,
                                            io_type=io_type, part=part,
                                            reuse_factor=r["reuse_factor"], strategy=strategy))
    summary = {"route": "hls4ml", "block": block, "layer": layer, "sparsity": s, "inputs": source,
               "board": fb.name, "checkpoint": str(checkpoint) if checkpoint else None,
               "layers": results, "qkeras_twins": twins,
               "warnings": [w for r in results for w in r["warnings"]]}
    write_json(out_dir / "hls4ml.json", summary)
    for r in results + twins:
        Check(**_check_args(r["check"])).require()
    return summary


def export_finn(cfg, checkpoint, out_dir: str | Path, *, board: str = "kv260",
                dse_point: str | Path | None = None, pe: int | None = None, simd: int | None = None,
                clock_mhz: float | None = None, strict: bool = False, block: str = "mlp",
                layer: int = 0, index: int = 0, sparsity: float | None = None,
                seed: int | None = None) -> dict[str, Any]:
    """One ternary GEMM of ``block`` -> the folder FINN's ``build_dataflow`` consumes.

    ``board``: the project's board name (``kv260``, ``zcu104``, ``pynq_z2``). PE, SIMD and the
    clock come from ``dse_point`` (``best_point.json`` of ``tatvpr dse``: ``pe``, ``simd``,
    ``clock_mhz``) or from explicit ``pe`` and ``simd`` (+ ``clock_mhz``, default the board
    arch's clock); one of the two is required. The model's input is the layer's real
    ``[M, K]`` activation of one image (M tokens).
    """
    from tatvpr_hw.lower.finn.route import (FINN_VERIFY_ATOL, design_point, finn_board, fold,
                                             write_finn_folder)
    from tatvpr_hw.lower.qonnx.route import cleanup, execute, export_qonnx_file

    fb = finn_board(board)
    point = design_point(fb, dse_point=dse_point, pe=pe, simd=simd, clock_mhz=clock_mhz)
    out_dir = Path(out_dir)
    layers, s, source = block_layers(cfg, checkpoint, block, layer, sparsity=sparsity,
                                     n_images=1, seed=seed, output_quant=True)
    ternary = [le for le in layers if le.ternary]
    if not ternary:
        raise UserError(f"block {block!r} has no ternary layers for FINN's MVAU "
                        "(the head is ternary only with model.ternary.head: true)")
    if not 0 <= index < len(ternary):
        raise UserError(f"layer index {index} out of range: block {block!r} has "
                        f"{len(ternary)} ternary layers")
    le = ternary[index]
    fold(le.in_features, le.out_features, point.pe, point.simd, strict=strict)  # fail early
    if le.inputs.shape[0] != le.tokens:
        raise UserError(f"{le.name}: captured {le.inputs.shape[0]} rows for one image of "
                        f"{le.tokens} tokens")
    out_dir.mkdir(parents=True, exist_ok=True)
    # the whole [M, K] activation of one image: FINN's MVAU sees M input vectors per frame
    raw = export_qonnx_file(le.module, le.inputs, out_dir / "model.onnx")
    qm = cleanup(raw, raw)
    x = le.inputs.numpy()
    with torch.no_grad():
        ref = le.module(le.inputs).numpy()
    got = execute(qm, x)
    stats = error_stats(got, ref)
    s_y = float(le.module.output_quant.scale().reshape(()))
    step = s_y + le.input_scale() * float(le.weight_scale().max())
    mismatches = int((~np.isclose(ref, got.reshape(ref.shape), atol=FINN_VERIFY_ATOL)).sum())
    check = Check(f"finn:{out_dir.name}/model.onnx",
                  {**stats, "samples": int(x.shape[0]), "samples_values": int(ref.size),
                   "finn_verify_mismatches": mismatches},
                  2 * step, 0.05 * step,
                  "int8 output codes: float32 order differences can flip an input or output "
                  "rounding boundary; one flip = s_y (output) or s_x*gamma (input)")
    check.require()
    summary = write_finn_folder(out_dir, qonnx_model_path=raw, layer_name=le.name,
                                mw=le.in_features, mh=le.out_features, tokens=le.tokens,
                                board=fb, point=point, strict=strict,
                                input_npy=x[None], expected_npy=ref[None], check=check.to_dict())
    summary.update({"route": "finn", "check": check.to_dict(), "sparsity": s, "inputs": source,
                    "dse_point": str(dse_point) if dse_point else None,
                    "checkpoint": str(checkpoint) if checkpoint else None})
    write_json(out_dir / "finn.json", summary)
    return summary


def _artifact_rows(qonnx: dict | None, hls: dict | None, finn: dict | None,
                   qkeras: dict | None = None) -> list[dict[str, Any]]:
    rows = []
    if qonnx:
        rows.append({"route": "qonnx", "artifact": qonnx["file"], **_err(qonnx["check"]),
                     "detail": f"{qonnx['quant_nodes']['weights_2bit_narrow']} ternary Quant nodes "
                               f"(2-bit narrow), {qonnx['quant_nodes']['activation']} int8 "
                               f"activation Quant nodes, {qonnx['ops'].get('TopK', 0)} TopK"})
    for r in (hls or {}).get("layers", []):
        rows.append({"route": "hls4ml", "artifact": r["project"], **_err(r["check"]),
                     "detail": f"{r['layer']} {r['n_in']}->{r['n_out']}, {r['backend']} {r['io_type']} "
                               f"{r['part']}, {r.get('strategy', '')} RF {r.get('reuse_factor', '')}, product {','.join(r['generated']['dense_products'])}, "
                               f"g++ {r['time_s']['gxx_compile']:.1f} s"})
    if finn:
        f = finn["folding"]
        rows.append({"route": "finn", "artifact": finn["dir"], **_err(finn["check"]),
                     "detail": f"{finn['layer']} MW={finn['mw']} MH={finn['mh']} PE={f['PE']} "
                               f"SIMD={f['SIMD']} M={finn.get('tokens', 1)} "
                               f"{finn.get('clock_mhz', 0):g} MHz {finn['board']}"
                               + (f" ({f['note']})" if f["adjusted"] else "")})
    if qkeras:
        rows.append({"route": "qkeras", "artifact": qkeras["project"], **_err(qkeras["check"]),
                     "detail": qkeras.get("detail", "")})
    return rows


def _err(check: dict[str, Any]) -> dict[str, Any]:
    return {"max_abs_err": check["max_abs_err"], "mean_abs_err": check["mean_abs_err"],
            "bound_max_abs": check["bound_max_abs"], "bound_mean_abs": check["bound_mean_abs"],
            "bound_reason": check["bound_reason"], "passed": check["passed"]}


def write_export_json(run_dir: str | Path, *, qonnx: dict | None = None, hls4ml: dict | None = None,
                      finn: dict | None = None, qkeras: dict | None = None,
                      time_s: dict[str, float] | None = None) -> Path:
    """``run_dir/export.json`` for the report: one row per artifact with its error and bound."""
    run_dir = Path(run_dir)
    rows = _artifact_rows(qonnx, hls4ml, finn, qkeras)
    for r in rows:  # paths relative to the run folder where they live inside it
        try:
            r["artifact"] = str(Path(r["artifact"]).resolve().relative_to(run_dir.resolve()))
        except ValueError:
            pass
    doc = {"version": EXPORT_JSON_VERSION,
           "artifacts": rows,
           "hls4ml_multiplier_free": all(r["generated"]["multiplier_free"]
                                         for r in (hls4ml or {}).get("layers", []) if r["ternary"]),
           "build_commands": [r["build_command"] for r in (hls4ml or {}).get("layers", [])]
           + ([finn["command"]] if finn else []),
           "time_s": time_s or {}}
    return write_json(run_dir / "export.json", doc)


def qkeras_available() -> bool:
    """Whether the optional ``qkeras`` extra is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("qkeras", "tf_keras", "tensorflow"))


DEMO_SPARSITY = 0.4  # the paper's operating point: the top-k is in every exported graph


def export_demo(cfg, checkpoint, run_dir: str | Path, *, board: str = "kv260",
                dse_point: str | Path | None = None, sparsity: float = DEMO_SPARSITY
                ) -> dict[str, Any]:
    """The demo's export step on the tiny student: QONNX (whole model), hls4ml (block 0's
    ternary MLP, io_parallel, Vitis, KV260 part; the QKeras twin of fc1 when the ``qkeras``
    extra is installed) and the FINN folder (block 0's fc1).

    Artifacts go to ``run_dir/export/{qonnx,hls4ml,finn}``; ``run_dir/export.json`` lists them
    with their verification errors. ``dse_point`` defaults to ``run_dir/dse/best_point.json``
    when that exists, else the FINN folder takes the board's default accelerator
    (``sim/arch/<board>.yaml``: PE, SIMD and clock, as ``tatvpr export bitstream`` does).
    """
    run_dir = Path(run_dir)
    base = run_dir / "export"
    if dse_point is None and (run_dir / "dse" / "best_point.json").is_file():
        dse_point = run_dir / "dse" / "best_point.json"
    times = {}
    t = time.perf_counter()
    q = export_qonnx(cfg, checkpoint, base / "qonnx", sparsity=sparsity)
    times["qonnx"] = time.perf_counter() - t
    t = time.perf_counter()
    h = export_hls4ml(cfg, checkpoint, base / "hls4ml", block="mlp", layer=0, build=False,
                      sparsity=sparsity, board=board, dse_point=dse_point,
                      qkeras_twin=1 if qkeras_available() else 0)
    times["hls4ml"] = time.perf_counter() - t
    t = time.perf_counter()
    if dse_point is None:
        from tatvpr_hw.lower.finn.route import finn_board

        fb = finn_board(board)
        folding = {"pe": fb.default_pe, "simd": fb.default_simd}  # clock: the arch's
    else:
        folding = {"dse_point": dse_point}
    f = export_finn(cfg, checkpoint, base / "finn", board=board, sparsity=sparsity, **folding)
    times["finn"] = time.perf_counter() - t
    twins = h.get("qkeras_twins") or [None]
    path = write_export_json(run_dir, qonnx=q, hls4ml=h, finn=f, qkeras=twins[0], time_s=times)
    return {"export_json": str(path), "qonnx": q, "hls4ml": h, "finn": f, "time_s": times}
