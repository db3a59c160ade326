"""FINN route: a folder that FINN's ``build_dataflow`` consumes unchanged.

What FINN can map of the student is its ternary GEMMs: each becomes a MatrixVectorActivation
unit (MVAU) with ``MW`` = input channels and ``MH`` = output channels. FINN has no GELU,
LayerNorm or softmax unit, so the folder holds ONE ternary linear layer of the chosen block
(int8 input quantizer -> ternary Quant weights -> bias -> int8 output quantizer, the
requantised int8 ``Y`` of docs/engine.md), exported with Brevitas to QONNX.

Files written into ``out_dir``::

    model.onnx                    QONNX model (FINN's step_qonnx_to_finn input)
    dataflow_build_config.json    FINN DataflowBuildConfig (field names as in FINN's
                                  src/finn/builder/build_dataflow_config.py)
    folding_config.json           PE / SIMD of the MVAU (applied by FINN's ApplyConfig)
    specialize_layers.json        MVAU_0 -> HLS implementation (so the node is MVAU_hls_0)
    input.npy, expected_output.npy  real activations and the PyTorch output, for FINN's
                                  own verify_steps
    README.md                     the command to run it in FINN's container

Folding constraints (FINN's MVAU): ``MH % PE == 0`` and ``MW % SIMD == 0``. A design point
from the simulator sweep (``best_point.json`` with ``pe`` and ``simd``) that does not divide is
moved to the nearest divisor (ties go to the smaller one) and the change is reported, or
rejected with ``strict=True``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.io import write_json, write_text

log = logging.getLogger(__name__)

# board -> (FPGA part, default clock period in ns), parts as in FINN's finn.util.basic.pynq_part_map
BOARDS: dict[str, tuple[str, float]] = {
    "KV260_SOM": ("xck26-sfvc784-2LV-c", 5.0),
    "ZCU104": ("xczu7ev-ffvc1156-2-e", 5.0),
    "Pynq-Z2": ("xc7z020clg400-1", 10.0),
}
# FINN marks the Zynq-7000 PYNQ boards as retired (still buildable after un-retiring them).
RETIRED_BOARDS = ("Pynq-Z2",)

# FINN DataflowOutputType values
GENERATE_OUTPUTS = ("estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package")
# FINN VerificationStepType values run on our input.npy / expected_output.npy
VERIFY_STEPS = ("finn_onnx_python", "initial_python", "streamlined_python", "folded_hls_cppsim")
MVAU_NODE = "MVAU_hls_0"
FINN_DOCKER_CMD = "./run-docker.sh build_dataflow {path}"


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n`` in increasing order."""
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def nearest_divisor(n: int, want: int) -> int:
    """The divisor of ``n`` closest to ``want`` (the smaller one on a tie)."""
    return min(divisors(n), key=lambda d: (abs(d - want), d))


def read_dse_point(path: str | Path) -> dict[str, int]:
    """``{"pe": .., "simd": ..}`` from a simulator design point (B2's ``best_point.json``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"design point file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"design point {path} is not valid JSON: {err}") from None
    point = doc.get("point", doc) if isinstance(doc, dict) else None
    if not isinstance(point, dict):
        raise UserError(f"design point {path} must be a JSON object with keys 'pe' and 'simd'")
    out = {}
    for key in ("pe", "simd"):
        v = point.get(key, point.get(f"compute.{key}"))
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"design point {path}: '{key}' must be a positive integer, got {v!r}")
        out[key] = v
    return out


def fold(mw: int, mh: int, pe: int, simd: int, *, strict: bool = False) -> dict[str, Any]:
    """Valid MVAU folding for a ``MW x MH`` layer from a wanted ``(pe, simd)``.

    Returns ``{"PE", "SIMD", "requested": {...}, "adjusted": bool, "note"}``; with ``strict``,
    a wanted value that does not divide raises :class:`UserError` instead.
    """
    if pe < 1 or simd < 1:
        raise UserError(f"PE and SIMD must be >= 1, got PE={pe}, SIMD={simd}")
    bad = []
    if mh % pe:
        bad.append(f"PE={pe} does not divide the {mh} output channels (MH)")
    if mw % simd:
        bad.append(f"SIMD={simd} does not divide the {mw} input channels (MW)")
    if bad and strict:
        raise UserError("non-divisible folding: " + "; ".join(bad) + f"; valid PE: {divisors(mh)}, "
                        f"valid SIMD: {divisors(mw)}")
    new_pe, new_simd = nearest_divisor(mh, pe), nearest_divisor(mw, simd)
    note = ""
    if bad:
        note = (f"adjusted to the nearest divisors: PE {pe} -> {new_pe}, SIMD {simd} -> {new_simd} "
                f"({'; '.join(bad)})")
        log.warning("folding %s", note)
    return {"PE": new_pe, "SIMD": new_simd, "requested": {"PE": pe, "SIMD": simd},
            "adjusted": bool(bad), "note": note}


def folding_config(folding: dict[str, Any]) -> dict[str, Any]:
    """FINN ``folding_config.json`` for the single MVAU."""
    return {"Defaults": {},
            MVAU_NODE: {"PE": folding["PE"], "SIMD": folding["SIMD"], "ram_style": "auto",
                        "resType": "auto", "mem_mode": "internal_decoupled",
                        "runtime_writeable_weights": 0}}


def build_config(board: str, *, output_dir: str = "output_finn", clk_period_ns: float | None = None,
                 verify: bool = True) -> dict[str, Any]:
    """FINN ``DataflowBuildConfig`` as JSON (paths relative to the build folder)."""
    if board not in BOARDS:
        raise UserError(f"unknown board {board!r}; allowed: {', '.join(BOARDS)}")
    part, default_ns = BOARDS[board]
    cfg: dict[str, Any] = {
        "output_dir": output_dir,
        "synth_clk_period_ns": float(clk_period_ns or default_ns),
        "board": board,
        "shell_flow_type": "vivado_zynq",
        "generate_outputs": list(GENERATE_OUTPUTS),
        "folding_config_file": "folding_config.json",
        "specialize_layers_config_file": "specialize_layers.json",
        "auto_fifo_depths": True,
        "save_intermediate_models": True,
        "minimize_bit_width": True,
        "enable_build_pdb_debug": False,
        "verbose": False,
    }
    if verify:
        cfg.update({"verify_steps": list(VERIFY_STEPS), "verify_input_npy": "input.npy",
                    "verify_expected_output_npy": "expected_output.npy"})
    return cfg


def _readme(board: str, layer_name: str, mw: int, mh: int, folding: dict[str, Any],
            check: dict[str, Any]) -> str:
    part = BOARDS[board][0]
    lines = [
        f"# FINN build of `{layer_name}` for {board} ({part})",
        "",
        f"One ternary linear layer of the TAT-VPR student as a FINN MVAU: MW = {mw} input channels,",
        f"MH = {mh} output channels, 2-bit narrow-range (ternary) weights, int8 input and output.",
        f"Folding: PE = {folding['PE']}, SIMD = {folding['SIMD']}"
        + (f" ({folding['note']})" if folding["adjusted"] else "") + ".",
        f"Cycles per token on the MVAU: MW/SIMD * MH/PE = {mw // folding['SIMD'] * (mh // folding['PE'])}.",
        "",
        "Run it in FINN's container (from a FINN checkout, with Vivado set up as FINN documents):",
        "",
        "```",
        FINN_DOCKER_CMD.format(path="/path/to/this/folder"),
        "```",
        "",
        "FINN reads `dataflow_build_config.json` and `model.onnx` from this folder, runs its own",
        "verification steps on `input.npy` / `expected_output.npy` (real activations of the",
        "student and the PyTorch output) and writes everything under `output_finn/`.",
        "",
        f"Checked here before writing: the QONNX model run by qonnx's executor matches PyTorch with "
        f"max |err| {check['max_abs_err']:.3g} (bound {check['bound_max_abs']:.3g}).",
    ]
    if board in RETIRED_BOARDS:
        lines += ["", f"Note: FINN lists {board} among its retired PYNQ boards; its config check "
                  "blocks the board until it is removed from `retired_pynq_boards` in "
                  "`finn/util/basic.py` (the build flow itself is unchanged)."]
    return "\n".join(lines) + "\n"


def write_finn_folder(out_dir: str | Path, *, qonnx_model_path: Path, layer_name: str,
                      mw: int, mh: int, board: str, pe: int, simd: int, strict: bool,
                      input_npy: np.ndarray, expected_npy: np.ndarray,
                      check: dict[str, Any], clk_period_ns: float | None = None) -> dict[str, Any]:
    """Write the FINN folder around an already verified QONNX model; return its summary."""
    out_dir = Path(out_dir)
    if board not in BOARDS:
        raise UserError(f"unknown board {board!r}; allowed: {', '.join(BOARDS)}")
    folding = fold(mw, mh, pe, simd, strict=strict)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    if Path(qonnx_model_path) != model_path:
        from tatvpr_hw.io import write_bytes

        write_bytes(model_path, Path(qonnx_model_path).read_bytes())
    write_json(out_dir / "dataflow_build_config.json", build_config(board, clk_period_ns=clk_period_ns))
    write_json(out_dir / "folding_config.json", folding_config(folding))
    write_json(out_dir / "specialize_layers.json",
               {"Defaults": {}, "MVAU_0": {"preferred_impl_style": "hls"}})
    from tatvpr_hw.io import atomic_path

    for name, arr in (("input.npy", input_npy), ("expected_output.npy", expected_npy)):
        with atomic_path(out_dir / name) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(arr, dtype=np.float32))
    write_text(out_dir / "README.md", _readme(board, layer_name, mw, mh, folding, check))
    return {"dir": str(out_dir), "board": board, "part": BOARDS[board][0], "layer": layer_name,
            "mw": mw, "mh": mh, "folding": folding,
            "command": FINN_DOCKER_CMD.format(path=out_dir.resolve())}
