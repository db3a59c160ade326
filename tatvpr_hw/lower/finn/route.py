"""FINN route: a folder that FINN's ``build_dataflow`` consumes unchanged.

What FINN can map of the student is its ternary GEMMs: each becomes a MatrixVectorActivation
unit (MVAU) with ``MW`` = input channels and ``MH`` = output channels. FINN has no GELU,
LayerNorm or softmax unit, so the folder holds ONE ternary linear layer of the chosen block
(int8 input quantizer -> ternary Quant weights -> bias -> int8 output quantizer, the
requantised int8 ``Y`` of docs/engine.md), exported with Brevitas to QONNX with the layer's
real ``M x K`` input (``M`` tokens of one image as FINN's input vectors).

Files written into ``out_dir``::

    model.onnx                    QONNX model (FINN's step_qonnx_to_finn input), input [M, K]
    dataflow_build_config.json    FINN DataflowBuildConfig (field names as in FINN main's
                                  src/finn/builder/build_dataflow_config.py)
    folding_config.json           PE / SIMD of the MVAU and PE of the requantising
                                  thresholding unit (applied by FINN's ApplyConfig)
    specialize_layers.json        MVAU_0 -> HLS, Thresholding_0 -> RTL
    input.npy, expected_output.npy  [1, M, K] real activations and the [1, M, N] PyTorch
                                  output, for FINN's own verify_steps
    README.md                     the command to run it in FINN's container

Design point: PE, SIMD and the clock come from one place - ``best_point.json`` of
``tatvpr dse`` (keys ``pe``, ``simd``, ``clock_mhz``, the same keys and clock limits as
``tatvpr export bitstream``), or an explicit ``--pe/--simd`` (clock: ``--clock-mhz``, default
the board's simulator arch ``sim/arch/<board>.yaml``, the bitstream export's default too).
FINN's ``synth_clk_period_ns`` is ``1000 / clock_mhz``.

Folding constraints (FINN's MVAU): ``MH % PE == 0`` and ``MW % SIMD == 0``. A design point
that does not divide is moved to the nearest divisor (ties go to the smaller one) and the
change is reported, or rejected with ``strict=True``.

Output requantisation: FINN turns the int8 output ``Quant`` into a MultiThreshold with one row
of 254 thresholds per output channel (FINN main's ``QuantIdentityHandler`` broadcasts even a
per-tensor scale to ``[MH, 254]``, and streamlining folds the per-channel bias into the
thresholds, so the rows differ by channel: the requantisation is a per-channel table by
nature). Absorbed into the MVAU, those 768 x 254 values become a C++ initializer in the MVAU's
``thresh.h`` and the ``folded_hls_cppsim`` compile ran for over 14 minutes. The build config
therefore sets ``standalone_thresholds`` (FINN infers a separate ``Thresholding`` layer
before the MVAU absorbs it) and ``specialize_layers.json`` makes it RTL: the MVAU emits the
integer accumulator, FINN's RTL thresholding (binary search, thresholds in memory, no C++)
requantises, and in the cppsim verify step FINN executes the RTL thresholding node in Python,
so the only C++ compiled is the MVAU (weights from a .npy in ``internal_decoupled`` mode).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.io import write_json, write_text

log = logging.getLogger(__name__)

# FINN DataflowOutputType values
GENERATE_OUTPUTS = ("estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package")
# FINN VerificationStepType values run on our input.npy / expected_output.npy
VERIFY_STEPS = ("finn_onnx_python", "initial_python", "streamlined_python", "folded_hls_cppsim")
MVAU_NODE = "MVAU_hls_0"
THRESHOLD_NODE = "Thresholding_rtl_0"
FINN_DOCKER_CMD = "./run-docker.sh build_dataflow {path}"
FINN_VERIFY_ATOL = 1e-3  # FINN's verify_step: np.isclose(expected, produced, atol=1e-3)


@dataclass(frozen=True)
class FinnBoard:
    """A board in the project's vocabulary with FINN's name and the flow's clock limits."""

    name: str          # the project's name (tatvpr_hw.boards.BOARDS)
    finn_name: str     # FINN's name (finn.util.basic.pynq_part_map key)
    part: str
    max_clock_mhz: float
    default_clock_mhz: float  # the board's simulator arch clock (also export bitstream's default)
    default_pe: int
    default_simd: int


def finn_board(value: str) -> FinnBoard:
    """The board ``value`` (the project's name, e.g. ``kv260``; FINN's own spelling such as
    ``KV260_SOM`` is accepted with a note) with FINN's name, part and clock limits."""
    from tatvpr_hw.boards import board_name, tool_board
    from tatvpr_hw.lower.hls.board import default_design_point, get_board

    name = board_name(value)
    finn = tool_board(name, "finn")
    if value.strip() != name and value.strip() == finn:
        log.warning("board %r is FINN's name; the project's name for it is %r", value, name)
    hb = get_board(tool_board(name, "hls"))
    dp = default_design_point(hb)
    return FinnBoard(name=name, finn_name=finn, part=hb.part, max_clock_mhz=float(hb.max_clock_mhz),
                     default_clock_mhz=float(dp.clock_mhz), default_pe=dp.pe, default_simd=dp.simd)


@dataclass(frozen=True)
class FinnPoint:
    """PE, SIMD and clock of the FINN build, and where they came from."""

    pe: int
    simd: int
    clock_mhz: float
    source: str

    @property
    def clk_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz


def _positive_int(v, key: str, where: str) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UserError(f"{where}: {key} = {v!r}; allowed: a positive integer")
    return v


def _clock(v, board: FinnBoard, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not 0 < v <= board.max_clock_mhz:
        raise UserError(f"{where}: clock_mhz = {v!r}; allowed: a number in (0, {board.max_clock_mhz:g}] "
                        f"MHz for {board.name}")
    return float(v)


def read_dse_point(path: str | Path, board: FinnBoard) -> FinnPoint:
    """PE, SIMD and clock of a design point (``best_point.json`` of ``tatvpr dse``: keys
    ``pe``, ``simd``, ``clock_mhz`` and optionally ``board``, which must be ``board``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"design point file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"design point {path} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise UserError(f"design point {path} must be a JSON object with keys pe, simd, clock_mhz")
    missing = [k for k in ("pe", "simd", "clock_mhz") if k not in doc]
    if missing:
        raise UserError(f"design point {path}: missing key(s) {', '.join(missing)}; a design point "
                        "needs pe, simd, clock_mhz (best_point.json of `tatvpr dse`)")
    pb = doc.get("board")
    if pb is not None:
        from tatvpr_hw.boards import board_name

        if board_name(str(pb), option=f"{path}: board") != board.name:
            raise UserError(f"design point {path} is for board {pb!r}, not {board.name!r}")
    return FinnPoint(pe=_positive_int(doc["pe"], "pe", str(path)),
                     simd=_positive_int(doc["simd"], "simd", str(path)),
                     clock_mhz=_clock(doc["clock_mhz"], board, str(path)), source=str(path))


def design_point(board: FinnBoard, *, dse_point: str | Path | None = None, pe: int | None = None,
                 simd: int | None = None, clock_mhz: float | None = None) -> FinnPoint:
    """The FINN build's PE / SIMD / clock: from ``dse_point``, or from explicit ``pe`` and
    ``simd`` (clock ``clock_mhz``, default the board arch's); one of the two is required."""
    explicit = pe is not None or simd is not None
    if dse_point is not None:
        if explicit or clock_mhz is not None:
            raise UserError("give either --dse-point (pe, simd and clock_mhz from the file) or "
                            "--pe/--simd [--clock-mhz], not both")
        return read_dse_point(dse_point, board)
    if pe is None or simd is None:
        raise UserError("FINN needs a folding: give --dse-point <best_point.json of tatvpr dse> "
                        "or both --pe and --simd (e.g. the board's default accelerator: "
                        f"--pe {board.default_pe} --simd {board.default_simd})")
    clock = board.default_clock_mhz if clock_mhz is None else clock_mhz
    return FinnPoint(pe=_positive_int(pe, "pe", "--pe"), simd=_positive_int(simd, "simd", "--simd"),
                     clock_mhz=_clock(clock, board, "--clock-mhz"),
                     source=("--pe/--simd --clock-mhz" if clock_mhz is not None
                             else f"--pe/--simd, clock of sim/arch/{board.name}.yaml"))


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n`` in increasing order."""
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def nearest_divisor(n: int, want: int) -> int:
    """The divisor of ``n`` closest to ``want`` (the smaller one on a tie)."""
    return min(divisors(n), key=lambda d: (abs(d - want), d))


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
    """FINN ``folding_config.json``: the MVAU's PE / SIMD and the thresholding unit's PE (the
    same PE, so it consumes the MVAU's output stream at the rate it is produced)."""
    return {"Defaults": {},
            MVAU_NODE: {"PE": folding["PE"], "SIMD": folding["SIMD"], "ram_style": "auto",
                        "resType": "auto", "mem_mode": "internal_decoupled",
                        "runtime_writeable_weights": 0},
            THRESHOLD_NODE: {"PE": folding["PE"], "runtime_writeable_weights": 0}}


def specialize_config() -> dict[str, Any]:
    """FINN ``specialize_layers.json`` (node names before specialisation)."""
    return {"Defaults": {}, "MVAU_0": {"preferred_impl_style": "hls"},
            "Thresholding_0": {"preferred_impl_style": "rtl"}}


def build_config(board: FinnBoard, point: FinnPoint, *, output_dir: str = "output_finn",
                 verify: bool = True) -> dict[str, Any]:
    """FINN ``DataflowBuildConfig`` as JSON (paths relative to the build folder)."""
    cfg: dict[str, Any] = {
        "output_dir": output_dir,
        "synth_clk_period_ns": round(point.clk_period_ns, 6),
        "board": board.finn_name,
        "shell_flow_type": "vivado_zynq",
        "generate_outputs": list(GENERATE_OUTPUTS),
        "folding_config_file": "folding_config.json",
        "specialize_layers_config_file": "specialize_layers.json",
        # the requantisation as its own (RTL) thresholding layer, see the module docstring
        "standalone_thresholds": True,
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


def _readme(board: FinnBoard, point: FinnPoint, layer_name: str, mw: int, mh: int, tokens: int,
            folding: dict[str, Any], check: dict[str, Any]) -> str:
    cycles = tokens * (mw // folding["SIMD"]) * (mh // folding["PE"])
    lines = [
        f"# FINN build of `{layer_name}` for {board.name} (FINN board {board.finn_name}, {board.part})",
        "",
        f"One ternary linear layer of the TAT-VPR student as a FINN MVAU: MW = {mw} input channels,",
        f"MH = {mh} output channels, M = {tokens} tokens per image (the model input is [{tokens}, {mw}]),",
        "2-bit narrow-range (ternary) weights, int8 input and output.",
        f"Design point: PE = {folding['PE']}, SIMD = {folding['SIMD']}, {point.clock_mhz:g} MHz "
        f"(synth_clk_period_ns {point.clk_period_ns:.4g}), from {point.source}"
        + (f"; {folding['note']}" if folding["adjusted"] else "") + ".",
        f"MVAU cycles per image: M * MW/SIMD * MH/PE = {cycles} "
        f"({cycles / point.clock_mhz:.4g} us at {point.clock_mhz:g} MHz).",
        "",
        "The int8 output requantisation is a standalone RTL thresholding layer",
        "(`standalone_thresholds`, `Thresholding_0` -> rtl): the MVAU emits the integer",
        "accumulator, so the `folded_hls_cppsim` verify step compiles only the MVAU.",
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
        f"max |err| {check['max_abs_err']:.3g} (bound {check['bound_max_abs']:.3g}); "
        f"{check.get('finn_verify_mismatches', 0)} of {check.get('samples_values', '?')} output values "
        f"differ by more than FINN's verify tolerance ({FINN_VERIFY_ATOL:g}).",
    ]
    return "\n".join(lines) + "\n"


def write_finn_folder(out_dir: str | Path, *, qonnx_model_path: Path, layer_name: str,
                      mw: int, mh: int, tokens: int, board: FinnBoard, point: FinnPoint,
                      strict: bool, input_npy: np.ndarray, expected_npy: np.ndarray,
                      check: dict[str, Any]) -> dict[str, Any]:
    """Write the FINN folder around an already verified QONNX model; return its summary."""
    out_dir = Path(out_dir)
    folding = fold(mw, mh, point.pe, point.simd, strict=strict)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    if Path(qonnx_model_path) != model_path:
        from tatvpr_hw.io import write_bytes

        write_bytes(model_path, Path(qonnx_model_path).read_bytes())
    write_json(out_dir / "dataflow_build_config.json", build_config(board, point))
    write_json(out_dir / "folding_config.json", folding_config(folding))
    write_json(out_dir / "specialize_layers.json", specialize_config())
    from tatvpr_hw.io import atomic_path

    for name, arr in (("input.npy", input_npy), ("expected_output.npy", expected_npy)):
        with atomic_path(out_dir / name) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(arr, dtype=np.float32))
    write_text(out_dir / "README.md", _readme(board, point, layer_name, mw, mh, tokens, folding, check))
    return {"dir": str(out_dir), "board": board.name, "finn_board": board.finn_name,
            "part": board.part, "layer": layer_name, "mw": mw, "mh": mh, "tokens": tokens,
            "clock_mhz": point.clock_mhz, "synth_clk_period_ns": round(point.clk_period_ns, 6),
            "point_source": point.source, "folding": folding,
            "command": FINN_DOCKER_CMD.format(path=out_dir.resolve())}
