"""Board projects for the HLS IP: Vitis HLS + Vivado Tcl filled from a design point.

``export_bitstream(board, out_dir, dse_point=...)`` writes a self-contained project folder::

    out_dir/
      include/ src/ tb/        the kernel and testbench sources (copied from hls/)
      csim/sample.layer.bin    a layer at this design point, checked by the C simulation here
      vitis_hls.tcl            C simulation, C synthesis, IP export   (hls/tcl/vitis_hls.tcl.j2)
      vivado.tcl               block design, bitstream, .hwh          (hls/tcl/vivado.tcl.j2)
      build.sh                 runs both tools in order
      deploy/                  PYNQ driver (+ .bit/.hwh after the build), design_point.json
      project.json             board, part, design point, buffer sizes, commands, C-sim check

and runs the tools when ``vitis_hls`` and ``vivado`` are on PATH; otherwise it says so and
returns the exact commands. Templates are real ``.j2`` files rendered with jinja2 using
``@{ }@`` / ``@% %@`` delimiters so that Tcl's braces stay untouched.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls.csim import KernelParams, build_csim, run_csim
from tatvpr_hw.lower.hls.formats import prepare_layer, quantize_multiplier
from tatvpr_hw.lower.hls.paths import REPO_ROOT, hls_dir
from tatvpr_hw.io import write_json, write_text

log = logging.getLogger(__name__)

IP_NAME = "tatvpr_ternary_gemm"
IP_VENDOR = "tatvpr.org"
IP_LIBRARY = "hls"
IP_VERSION = "1.0"
IP_INSTANCE = "tatvpr_gemm_0"
S_AXI_PORT = "s_axi_control"
M_AXI_PORTS = ("m_axi_gmem_act", "m_axi_gmem_w")
OVERLAY_NAME = "tatvpr_gemm"
# The int8 unit and the vector unit: one HLS IP each (hls/src/tatvpr_units_top.cpp), in the same
# block design as the ternary IP (generated Tcl; the kernels' C simulation is the flow's own).
UNIT_IPS = (
    {"unit": "int8", "top": "tatvpr_int8_top", "ip_name": "tatvpr_int8_unit", "instance": "tatvpr_int8_0",
     "project": "hls_int8", "sources": ["tatvpr_units_top.cpp", "tatvpr_int8.cpp", "tatvpr_vector.cpp",
                                                "tatvpr_attention.cpp", "tatvpr_chain.cpp"],
     "m_axi_ports": ["m_axi_gmem_in", "m_axi_gmem_out"]},
    {"unit": "vector", "top": "tatvpr_vector_top", "ip_name": "tatvpr_vector_unit", "instance": "tatvpr_vector_0",
     "project": "hls_vector", "sources": ["tatvpr_units_top.cpp", "tatvpr_int8.cpp", "tatvpr_vector.cpp",
                                                "tatvpr_attention.cpp", "tatvpr_chain.cpp"],
     "m_axi_ports": ["m_axi_gmem_in", "m_axi_gmem_out"]},
)
BD_NAME = "tatvpr_bd"

# Backbone widths (embed dim; the MLP is 4x) for sizing the on-chip buffers from a run config.
_BACKBONE_DIMS = {"vit_tiny": 192, "vit_small": 384, "vit_base": 768, "vit_large": 1024}
_PATCH_PX = 14


@dataclass(frozen=True)
class Board:
    id: str
    part: str
    board_part_glob: str
    ps: str
    ps_vlnv: str
    default_clock_mhz: float
    max_clock_mhz: float
    sim_board: str
    pynq_image: str


def load_boards() -> dict[str, Board]:
    """The boards of ``hls/boards.yaml``; each one's highest clock is its simulator board file's
    ``fabric_fmax_mhz`` (``sim/boards/<sim_board>.yaml``), the one number the simulator and the
    bitstream flow both hold a design point to."""
    from sim.arch import load_board

    path = hls_dir() / "boards.yaml"
    data = yaml.safe_load(path.read_text())
    return {name: Board(id=name, max_clock_mhz=float(load_board(fields["sim_board"]).fabric_fmax_mhz.value),
                        **fields) for name, fields in data.items()}


def get_board(name: str) -> Board:
    boards = load_boards()
    key = name.strip().lower().replace("_", "-")
    if key not in boards:
        raise UserError(f"unknown board {name!r}; allowed: {', '.join(boards)}")
    return boards[key]


IP_SKIP_MODES = ("act", "none")
"""Skip modes the HLS IP builds: ``act`` (default) and ``none`` (``-DTATVPR_SKIP_NONE``)."""


@dataclass(frozen=True)
class DesignPoint:
    """The knobs of one accelerator design (a ``sim.arch`` description, act skip mode): PE x SIMD
    lanes, the gather's banks and ports, clock, weight format and the buffer sizes."""

    pe: int
    simd: int
    clock_mhz: float
    weight_format: str = "ternary2"
    source: str = "default"
    banks: int | None = None          # compute.gather.banks (None = simd)
    ports: int = 1                    # compute.gather.ports
    double_buffering: bool = True
    weights_kb: float = 64.0
    k_max: int | None = None          # buffers.k_max (None = what weights_kb holds)
    activations_kb: float = 768.0
    outputs_kb: float = 768.0
    vector_lanes: int = 16            # vector_unit.lanes
    int8_rows: int = 16               # int8_unit.rows x cols
    int8_cols: int = 16
    overlap: str = "none"             # schedule.overlap: how the host issues the units (tatvpr_pynq.pipeline)
    tile_tokens: int = 16             # schedule.tile_tokens: a row segment's tile
    handoffs: str = "dram"            # schedule.handoffs: the IPs are AXI masters to DDR, so tiles go through it
    loop_order: str = "auto"          # buffers.loop_order: the driver passes choose_loop_order's pick to the IP
    skip_mode: str = "act"            # compute.skip_mode: "act" (bank-scheduled stream) or "none" (dense int8)
    topk: str = "host"                # schedule.topk: the driver's numpy top-k, or the vector IP's (fabric)
    attention: str = "split"          # schedule.attention: QK^T / softmax / P.V as three calls, or the int8 IP's fused one
    attention_rows: int = 32          # schedule.attention_rows: the fused attention's query rows per block
    max_tokens: int = 257             # schedule.max_tokens / max_head_dim: the fused attention's K, V buffers
    max_head_dim: int = 64
    attention_lanes: int | None = None  # schedule.attention_lanes: the fused attention's softmax lanes (None: vector_lanes)
    vector_chain: str = "split"       # schedule.vector_chain: a row's vector ops one call each, or one chained call
    max_dim: int = 768                # schedule.max_dim: the chain's int16 row (TATVPR_CHAIN_MAX_DIM)


def _arch_error(where: str, err: Exception) -> UserError:
    return UserError(f"{where}: {err}")


def design_point_from_arch(arch, source: str) -> DesignPoint:
    """The IP's knobs of a ``sim.arch.Arch`` (skip mode ``act``, or ``none``: the IP built with
    ``TATVPR_SKIP_NONE``)."""
    s = arch.spec
    c, b = s.compute, s.buffers
    if c.skip_mode not in IP_SKIP_MODES:
        raise UserError(f"{source}: skip_mode = {c.skip_mode!r}: the HLS IP builds activation skipping ('act') or "
                        "no skipping ('none'); pick a design point of one of those modes")
    if c.mode != "mvau":
        raise UserError(f"{source}: compute.mode = {c.mode!r}: the HLS IP is the mvau machine")
    if s.schedule.overlap == "pipelined" and s.schedule.handoffs != "dram":
        raise UserError(f"{source}: schedule.handoffs = {s.schedule.handoffs!r} with overlap 'pipelined': the "
                        "bitstream's unit IPs hand tiles to each other through DDR (AXI masters, no on-chip "
                        "hand-off buffers); set schedule.handoffs: dram so the simulator charges that machine")
    fmt = c.weight_format if c.weight_format in ("ternary2", "ternary1.6") else "ternary2"
    return DesignPoint(pe=c.pe, simd=c.simd, clock_mhz=float(s.clock_mhz), weight_format=fmt, source=source,
                       banks=c.banks, ports=c.ports, double_buffering=bool(s.double_buffering),
                       weights_kb=float(b.weights_kb), k_max=b.k_max, activations_kb=float(b.activations_kb),
                       outputs_kb=float(b.outputs_kb), vector_lanes=int(s.vector_unit.lanes),
                       int8_rows=int(s.int8_unit.rows), int8_cols=int(s.int8_unit.cols),
                       overlap=str(s.schedule.overlap), tile_tokens=int(s.schedule.tile_tokens),
                       handoffs=str(s.schedule.handoffs), loop_order=str(b.loop_order),
                       skip_mode=str(c.skip_mode), topk=str(s.schedule.topk),
                       attention=str(s.schedule.attention), attention_rows=int(s.schedule.attention_rows),
                       max_tokens=int(s.schedule.max_tokens), max_head_dim=int(s.schedule.max_head_dim),
                       attention_lanes=getattr(s.schedule, "attention_lanes", None),
                       vector_chain=str(getattr(s.schedule, "vector_chain", "split")), max_dim=int(s.schedule.max_dim))


def _load_arch(ref, overrides: dict[str, Any], where: str):
    from sim.arch import load_arch, with_overrides
    from sim.errors import SimInputError

    try:
        arch = load_arch(ref)
        return with_overrides(arch, overrides) if overrides else arch
    except SimInputError as err:
        raise _arch_error(where, err) from None


def default_design_point(board: Board) -> DesignPoint:
    """The simulator's default accelerator for the board (``sim/arch/<board>.yaml``), its clock
    capped at the board's ``max_clock_mhz``."""
    path = REPO_ROOT / "sim" / "arch" / f"{board.sim_board}.yaml"
    if not path.is_file():
        raise UserError(f"no simulator arch for board {board.id}: {path} is missing")
    arch = _load_arch(path, {}, str(path))
    point = design_point_from_arch(arch, str(path.relative_to(REPO_ROOT)))
    return replace(point, clock_mhz=min(point.clock_mhz, board.max_clock_mhz))


def _int_knob(d: dict, key: str, where: str, hi: int) -> int:
    v = d[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
        raise UserError(f"{where}: {key} = {v!r}: must be an integer in [1, {hi}]")
    return v


def _point_arch_ref(d: dict, board: Board):
    """The arch file a design point was simulated on (its ``arch`` key), else the board's."""
    ref = d.get("arch")
    if isinstance(ref, str) and ref:
        for cand in (Path(ref), REPO_ROOT / ref):
            if cand.is_file():
                return cand
        if (REPO_ROOT / "sim" / "arch" / f"{ref}.yaml").is_file():
            return ref
        raise UserError(f"design point: arch {ref!r} not found (as a file or a name under sim/arch/)")
    return REPO_ROOT / "sim" / "arch" / f"{board.sim_board}.yaml"


def read_design_point(path: str | os.PathLike, board: Board) -> DesignPoint:
    """Read ``best_point.json`` of ``tatvpr dse`` (keys pe, simd, clock_mhz; optional
    weight_format, skip_mode, board, banks, ports, and the ``arch`` + ``overrides`` it was
    simulated with) and check it fits the IP and ``board``. The buffer sizes, banks and ports
    come from that arch (default: the board's ``sim/arch/<board>.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"design point file not found: {path}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not JSON: {err}") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: a design point must be a JSON object with pe, simd, clock_mhz")
    missing = [k for k in ("pe", "simd", "clock_mhz") if k not in d]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}; a design point needs pe, simd, clock_mhz")
    pe = _int_knob(d, "pe", str(path), 256)
    simd = _int_knob(d, "simd", str(path), 128)
    clock = d["clock_mhz"]
    if not isinstance(clock, (int, float)) or isinstance(clock, bool) or not 0 < clock <= board.max_clock_mhz:
        raise UserError(f"{path}: clock_mhz = {clock!r}: must be a number in (0, {board.max_clock_mhz:g}] "
                        f"for {board.id}")
    fmt = d.get("weight_format", "ternary2")
    if fmt not in ("ternary2", "ternary1.6"):
        raise UserError(f"{path}: weight_format = {fmt!r}: allowed 'ternary2', 'ternary1.6'")
    skip = d.get("skip_mode", "act")
    if skip not in IP_SKIP_MODES:
        raise UserError(f"{path}: skip_mode = {skip!r}: the HLS IP builds activation skipping ('act') or no "
                        "skipping ('none'); pick a design point of one of those modes")
    pb = d.get("board")
    if pb is not None and str(pb).lower().replace("_", "-") != board.id:
        raise UserError(f"{path}: the design point is for board {pb!r}, not {board.id!r}")
    overrides = d.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise UserError(f"{path}: overrides must be a mapping of dotted arch keys, got {type(overrides).__name__}")
    overrides = {**overrides, "compute.pe": pe, "compute.simd": simd, "clock_mhz": clock,
                 "compute.weight_format": fmt, "compute.skip_mode": skip}
    for key in ("banks", "ports"):
        if key in d:
            overrides[f"compute.gather.{key}"] = d[key]
    arch = _load_arch(_point_arch_ref(d, board), overrides, str(path))
    return design_point_from_arch(arch, str(path))


def sizes_from_config(cfg) -> tuple[int, int]:
    """``(kmax, mmax)`` of a run config's student: the MLP width and the token count."""
    name = cfg.model.backbone
    dim = next((d for prefix, d in _BACKBONE_DIMS.items() if name.startswith(prefix)), None)
    if dim is None:
        raise UserError(f"cannot size the IP for backbone {name!r}; known: "
                        f"{', '.join(p + '_*' for p in _BACKBONE_DIMS)} (or give --kmax/--tokens)")
    side = cfg.model.student_img_size // _PATCH_PX
    tokens = side * side + 1 + (4 if "reg4" in name else 0)
    return 4 * dim, tokens


def kernel_params(point: DesignPoint) -> KernelParams:
    """The kernel's ``-D`` values from the design point's buffer sizes (docs/engine.md section 6):
    ``K_max = floor(8192 * weights_kb / (h * PE * 2))`` rounded down to a multiple of B,
    ``CHUNKS_MAX = ceil(8192 * activations_kb / (SIMD * (8 + I)))``, ``I = ceil(log2 K_max)``,
    ``MMAX = ceil(8192 * outputs_kb / (PE * 8))``."""
    h = 2 if point.double_buffering else 1
    banks = point.banks or point.simd
    kmax = math.floor(8192 * point.weights_kb / (h * point.pe * 2))
    kmax -= kmax % banks
    if point.k_max is not None and kmax >= banks:
        kmax = min(kmax, point.k_max + (-point.k_max % banks))
    if kmax < banks:
        raise UserError(f"{point.source}: buffers.weights_kb = {point.weights_kb:g} holds no fold of {point.pe} PE "
                        f"rows x {banks} banks; allowed: weights_kb >= {h * point.pe * 2 * banks / 8192:g}")
    idx = (kmax - 1).bit_length() if point.skip_mode == "act" else 0  # none: a word is SIMD int8, no index
    return KernelParams(pe=point.pe, simd=point.simd, banks=banks, ports=point.ports, halves=h, kmax=kmax,
                        chunks_max=math.ceil(8192 * point.activations_kb / (point.simd * (8 + idx))),
                        mmax=math.ceil(8192 * point.outputs_kb / (point.pe * 8)), skip_mode=point.skip_mode)


def check_layer_sizes(point: DesignPoint, kp: KernelParams, k: int, m: int) -> None:
    """Layers of up to ``k`` channels and ``m`` tokens must fit the design point's buffers."""
    h = kp.halves
    if k > kp.kmax:
        cap = f", buffers.k_max = {point.k_max}" if point.k_max is not None else ""
        raise UserError(f"layers with K = {k} do not fit the weight buffer: K_max = {kp.kmax} at "
                        f"buffers.weights_kb = {point.weights_kb:g}{cap} (PE={kp.pe}); allowed: K <= {kp.kmax}, or "
                        f"weights_kb >= {h * kp.pe * 2 * (k + (-k % kp.banks)) / 8192:g}"
                        + (f" and buffers.k_max >= {k}" if point.k_max is not None else ""))
    # any M: the IP cuts the layer's tokens into blocks of at most MMAX tokens (one call per layer)
    q = kp.simd // kp.banks
    dense_token = -(-(-(-k // kp.banks)) // q) if kp.skip_mode == "act" else -(-k // kp.simd)
    if dense_token > kp.chunks_max:
        raise UserError(f"one dense token of K = {k} takes {dense_token} chunks; the activation buffer holds "
                        f"{kp.chunks_max} (buffers.activations_kb = {point.activations_kb:g})")


def onchip_bits(kp: KernelParams) -> dict[str, int]:
    """Bits of the kernel's on-chip buffers (docs/engine.md section 6, act mode)."""
    idx = kp.index_bits if kp.skip_mode == "act" else 0
    return {"weights_bits": kp.halves * kp.replicas * kp.banks * (2 * kp.pe) * (kp.kmax // kp.banks),
            "activations_bits": kp.chunks_max * kp.simd * (8 + idx),
            "outputs_bits": kp.mmax * kp.pe * 8}


def board_memory_bits(board: Board) -> int | None:
    """BRAM + URAM bits of the board, from the simulator's board file (None if unavailable)."""
    path = REPO_ROOT / "sim" / "boards" / f"{board.sim_board}.yaml"
    if not path.is_file():
        return None
    res = (yaml.safe_load(path.read_text()) or {}).get("resources", {})
    return int(res.get("bram36", 0)) * 36 * 1024 + int(res.get("uram", 0)) * 288 * 1024


def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(hls_dir() / "tcl")), undefined=jinja2.StrictUndefined,
        variable_start_string="@{", variable_end_string="}@", block_start_string="@%",
        block_end_string="%@", comment_start_string="@#", comment_end_string="#@",
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render(template: str, params: dict[str, Any]) -> str:
    """Fill ``hls/tcl/<template>`` with ``params`` (a missing parameter is an error)."""
    return _env().get_template(template).render(**params)


def tool_commands(project_dir: Path) -> list[str]:
    return [f"cd {project_dir}", "vitis_hls -f vitis_hls.tcl -l logs/vitis_hls.log",
            "vivado -mode batch -source vivado.tcl -log logs/vivado.log -journal logs/vivado.jou"]


def _sample_layer(kp: KernelParams, fmt: str, seed: int):
    rng = np.random.default_rng(seed)
    m, k, n = min(kp.mmax, 16), min(kp.kmax, 96), 2 * kp.pe + 1
    x = rng.integers(-127, 128, size=(m, k)).astype(np.int8)
    x[rng.random((m, k)) < 0.4] = 0                                  # 40% activation sparsity
    w = rng.choice(np.array([-1, 0, 1], np.int8), size=(n, k))
    bias = rng.integers(-2000, 2000, size=n).astype(np.int32)
    mult, shift = quantize_multiplier(1.0 / (30.0 * math.sqrt(k)))
    return prepare_layer(x, w, bias, mult, shift, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports, fmt=fmt,
                         skip_mode=kp.skip_mode)


def write_project(board: Board, point: DesignPoint, out_dir: str | os.PathLike, *, kmax: int, mmax: int,
                  jobs: int = 4, seed: int = 0, check_csim: bool = True,
                  csim_cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the board project folder; returns the manifest (also written as project.json).

    The kernel's buffers come from the design point (:func:`kernel_params`); ``kmax`` / ``mmax``
    are the largest layer the project must run, checked against them.
    ``csim_cache``: folder of compiled C simulations to reuse (default ``$TATVPR_CSIM_CACHE``,
    else ``out_dir/csim/build``).
    """
    if point.clock_mhz > board.max_clock_mhz:
        raise UserError(f"clock {point.clock_mhz:g} MHz exceeds {board.max_clock_mhz:g} MHz allowed for {board.id}")
    kp = kernel_params(point)
    check_layer_sizes(point, kp, kmax, mmax)
    mem = onchip_bits(kp)
    avail = board_memory_bits(board)
    if avail is not None and sum(mem.values()) > avail:
        raise UserError(
            f"the IP's buffers need {sum(mem.values()) / 1e6:.1f} Mbit on chip (PE={kp.pe} SIMD={kp.simd}, "
            f"K_max={kp.kmax}, {kp.chunks_max} chunks, M<={kp.mmax}) but {board.id} has {avail / 1e6:.1f} Mbit of "
            "BRAM+URAM; choose a design point with smaller buffers (buffers.*_kb)")
    out = Path(out_dir).resolve()
    src = hls_dir()
    for sub in ("include", "src", "tb"):
        shutil.copytree(src / sub, out / sub, dirs_exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "reports").mkdir(parents=True, exist_ok=True)

    params = {
        "board": board.id, "board_id": board.id.replace("-", "_"), "part": board.part,
        "board_part_glob": board.board_part_glob, "ps": board.ps, "ps_vlnv": board.ps_vlnv,
        "pe": kp.pe, "simd": kp.simd, "banks": kp.banks, "ports": kp.ports, "kmax": kp.kmax, "mmax": kp.mmax,
        "clock_mhz": f"{point.clock_mhz:g}", "period_ns": f"{1000.0 / point.clock_mhz:.3f}",
        "defines": " ".join(kp.defines()), "ip_name": IP_NAME, "ip_vendor": IP_VENDOR,
        "ip_library": IP_LIBRARY, "ip_version": IP_VERSION, "ip_instance": IP_INSTANCE,
        "s_axi_port": S_AXI_PORT, "m_axi_ports": list(M_AXI_PORTS), "bd_name": BD_NAME,
        "overlay_name": OVERLAY_NAME, "jobs": int(jobs), "project_dir_name": out.name,
        "pynq_image": board.pynq_image, "weight_format": point.weight_format,
        "overlap": point.overlap, "tile_tokens": point.tile_tokens, "handoffs": point.handoffs,
        "units": [{**u, "defines": f"-DTATVPR_VLANES={point.vector_lanes} -DTATVPR_I8_ROWS={point.int8_rows} "
                                   f"-DTATVPR_I8_COLS={point.int8_cols} -DTATVPR_TOPK_SIMD={kp.simd} "
                                   f"-DTATVPR_TOPK_BANKS={kp.banks} -DTATVPR_TOPK_KMAX={kp.kmax} "
                                   f"-DTATVPR_ATT_ROWS={point.attention_rows} "
                                   f"-DTATVPR_ATT_MAX_TOKENS={point.max_tokens} "
                                   f"-DTATVPR_ATT_MAX_HEAD_DIM={point.max_head_dim} "
                                   f"-DTATVPR_ATT_LANES={point.attention_lanes or point.vector_lanes} "
                                   f"-DTATVPR_CHAIN_MAX_DIM={point.max_dim}"}
                  for u in UNIT_IPS],  # the vector unit's top-k schedules for this ternary IP
        "ctrl_slaves": [f"{IP_INSTANCE}/{S_AXI_PORT}"] + [f"{u['instance']}/{S_AXI_PORT}" for u in UNIT_IPS],
        "ddr_masters": [f"{IP_INSTANCE}/{p}" for p in M_AXI_PORTS]
                       + [f"{u['instance']}/{p}" for u in UNIT_IPS for p in u["m_axi_ports"]],
    }
    write_text(out / "vitis_hls.tcl", render("vitis_hls.tcl.j2", params))
    write_text(out / "vivado.tcl", render("vivado.tcl.j2", params))
    write_text(out / "build.sh", render("build.sh.j2", params))
    (out / "build.sh").chmod(0o755)

    deploy = out / "deploy"
    shutil.copytree(src / "driver" / "tatvpr_pynq", deploy / "tatvpr_pynq", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    # the driver's one dependency besides numpy: the packed-format package, shipped beside it
    import ternary_format
    shutil.copytree(Path(ternary_format.__file__).parent, deploy / "ternary_format", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    write_text(deploy / "README.txt", render("deploy_README.txt.j2", params))
    write_json(deploy / "design_point.json", {**asdict(point), "banks": kp.banks, "ports": kp.ports,
                                              "kmax": kp.kmax, "mmax": kp.mmax,
                                              "chunks_max": kp.chunks_max, "board": board.id})

    sample = _sample_layer(kp, point.weight_format, seed)
    from tatvpr_hw.lower.hls.formats import write_layer_file
    write_layer_file(out / "csim" / "sample.layer.bin", sample)
    csim = {"checked": False}
    if check_csim:
        try:
            # TATVPR_CSIM_CACHE: a folder of compiled C simulations shared between projects
            exe = build_csim(kp, csim_cache or os.environ.get("TATVPR_CSIM_CACHE") or out / "csim" / "build")
            (res,) = run_csim(exe, [sample], out / "csim" / "run", names=["sample"])
            csim = {"checked": True, "status": res.status, "mismatches": res.mismatches,
                    "bit_exact": res.status == 0 and res.mismatches == 0,
                    "chunk_cycles_per_fold": int(res.chunk_cycles[0]),
                    "expected_chunk_cycles_per_fold": sample.chunk_cycles_per_fold,
                    "layer": {"m": sample.m, "k": sample.k, "n": sample.n, "fmt": sample.fmt}}
        except UserError as err:
            log.warning("C simulation of the sample layer skipped: %s", err)
            csim = {"checked": False, "reason": str(err)}

    manifest = {
        "board": board.id, "part": board.part, "ps": board.ps, "ip": f"{IP_VENDOR}:{IP_LIBRARY}:{IP_NAME}:{IP_VERSION}",
        "unit_ips": {u["unit"]: f"{IP_VENDOR}:{IP_LIBRARY}:{u['ip_name']}:{IP_VERSION}" for u in UNIT_IPS},
        "design_point": asdict(point), "kernel": asdict(kp), "layers": {"kmax": kmax, "mmax": mmax},
        "onchip_bits": mem,
        "board_onchip_bits": avail, "ports": {"s_axilite": S_AXI_PORT, "m_axi": list(M_AXI_PORTS)},
        "files": ["vitis_hls.tcl", "vivado.tcl", "build.sh", "csim/sample.layer.bin", "deploy/"],
        "commands": tool_commands(out), "csim_sample": csim,
        "bitstream": str(deploy / f"{OVERLAY_NAME}.bit"), "hwh": str(deploy / f"{OVERLAY_NAME}.hwh"),
    }
    write_json(out / "project.json", manifest)
    return manifest


def tools_on_path() -> dict[str, str | None]:
    return {t: shutil.which(t) for t in ("vitis_hls", "vivado")}


def run_tools(project_dir: str | os.PathLike) -> dict[str, Any]:
    """Run Vitis HLS then Vivado in the project folder (each log under logs/)."""
    project_dir = Path(project_dir)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    steps = [("vitis_hls", ["vitis_hls", "-f", "vitis_hls.tcl", "-l", "logs/vitis_hls.log"]),
             ("vivado", ["vivado", "-mode", "batch", "-source", "vivado.tcl", "-log", "logs/vivado.log",
                         "-journal", "logs/vivado.jou"])]
    times = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as bar:
        for name, cmd in steps:
            task = bar.add_task(f"{name} ({project_dir.name})", total=None)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=project_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            times[f"{name}_s"] = round(time.perf_counter() - t0, 1)
            bar.remove_task(task)
            if proc.returncode != 0:
                raise UserError(f"{name} failed (exit {proc.returncode}); see {project_dir / 'logs' / (name + '.log')}")
    return {"ran": True, **times}


def export_bitstream(board_name: str, out_dir: str | os.PathLike, *, dse_point: str | os.PathLike | None = None,
                     kmax: int = 768, mmax: int = 50, jobs: int = 4, run: bool = True,
                     seed: int = 0, csim_cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """``tatvpr export bitstream``: write the project; run the tools when they are on PATH."""
    board = get_board(board_name)
    point = read_design_point(dse_point, board) if dse_point else default_design_point(board)
    manifest = write_project(board, point, out_dir, kmax=kmax, mmax=mmax, jobs=jobs, seed=seed,
                             csim_cache=csim_cache)
    if point.handoffs != "dram":
        # overlap none with on-chip hand-offs (pipelined + onchip is refused above): the simulator's
        # default machine, not this bitstream's, whose IPs are AXI masters to the PS DDR
        note = (f"{point.source}: simulated with schedule.handoffs = {point.handoffs!r}; this bitstream's IPs hand "
                "every op's output over through DDR, so its cost per query is the simulator's with "
                "--set schedule.handoffs=dram (docs/engine.md section 5a)")
        log.warning(note)
        manifest["simulated_machine_differs"] = note
    tools = tools_on_path()
    missing = [t for t, p in tools.items() if p is None]
    if missing or not run:
        manifest["tools"] = {"ran": False, "missing": missing}
    else:
        manifest["tools"] = run_tools(out_dir)
    write_json(Path(out_dir) / "project.json", manifest)
    return manifest
