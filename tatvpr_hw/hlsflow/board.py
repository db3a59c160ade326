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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tatvpr_hw.errors import UserError
from tatvpr_hw.hlsflow.csim import KernelParams, build_csim, run_csim
from tatvpr_hw.hlsflow.formats import prepare_layer, quantize_multiplier
from tatvpr_hw.hlsflow.paths import REPO_ROOT, hls_dir
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
    """The boards of ``hls/boards.yaml``."""
    path = hls_dir() / "boards.yaml"
    data = yaml.safe_load(path.read_text())
    return {name: Board(id=name, **fields) for name, fields in data.items()}


def get_board(name: str) -> Board:
    boards = load_boards()
    key = name.strip().lower().replace("_", "-")
    if key not in boards:
        raise UserError(f"unknown board {name!r}; allowed: {', '.join(boards)}")
    return boards[key]


@dataclass(frozen=True)
class DesignPoint:
    """The knobs of one accelerator design: PE x SIMD lanes, clock, weight format."""

    pe: int
    simd: int
    clock_mhz: float
    weight_format: str = "ternary2"
    source: str = "default"


def default_design_point(board: Board) -> DesignPoint:
    """The simulator's default accelerator for the board (``sim/arch/<board>.yaml``: compute.pe,
    compute.simd, clock_mhz, compute.weight_format); PE = SIMD = 8 at the board's default clock
    when that file is absent."""
    path = REPO_ROOT / "sim" / "arch" / f"{board.sim_board}.yaml"
    if path.is_file():
        arch = yaml.safe_load(path.read_text()) or {}
        comp = arch.get("compute", {})
        if isinstance(comp.get("pe"), int) and isinstance(comp.get("simd"), int) and arch.get("clock_mhz"):
            clock = min(float(arch["clock_mhz"]), board.max_clock_mhz)
            fmt = comp.get("weight_format", "ternary2")
            return DesignPoint(pe=comp["pe"], simd=comp["simd"], clock_mhz=clock,
                               weight_format=fmt if fmt in ("ternary2", "ternary1.6") else "ternary2",
                               source=str(path.relative_to(REPO_ROOT)))
    return DesignPoint(pe=8, simd=8, clock_mhz=board.default_clock_mhz, source="default")


def _int_knob(d: dict, key: str, where: str, hi: int) -> int:
    v = d[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
        raise UserError(f"{where}: {key} = {v!r}: must be an integer in [1, {hi}]")
    return v


def read_design_point(path: str | os.PathLike, board: Board) -> DesignPoint:
    """Read ``best_point.json`` of ``tatvpr dse`` (keys pe, simd, clock_mhz; optional
    weight_format, skip_mode, board) and check it fits the IP and ``board``."""
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
    if skip != "act":
        raise UserError(f"{path}: skip_mode = {skip!r}: the HLS IP implements activation skipping only "
                        "(skip_mode 'act'); pick a design point of the 'act' mode")
    pb = d.get("board")
    if pb is not None and str(pb).lower().replace("_", "-") != board.id:
        raise UserError(f"{path}: the design point is for board {pb!r}, not {board.id!r}")
    return DesignPoint(pe=pe, simd=simd, clock_mhz=float(clock), weight_format=fmt, source=str(path))


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


def kernel_params(point: DesignPoint, kmax: int, mmax: int) -> KernelParams:
    """Buffer sizes for layers up to ``kmax`` channels and ``mmax`` tokens (dense worst case)."""
    return KernelParams(pe=point.pe, simd=point.simd, kmax=kmax, mmax=mmax,
                        chunks_max=mmax * math.ceil(kmax / point.simd))


def onchip_bits(kp: KernelParams) -> dict[str, int]:
    """On-chip memory of the kernel's buffers, in bits (what HLS maps to BRAM/URAM/LUTRAM)."""
    return {"weights_bits": 2 * kp.simd * kp.pe * kp.kmax * 2,      # ping-pong codes, one copy per SIMD lane
            "activations_bits": kp.chunks_max * kp.simd * (16 + 8),  # (index, value) pairs
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
    return prepare_layer(x, w, bias, mult, shift, pe=kp.pe, simd=kp.simd, fmt=fmt)


def write_project(board: Board, point: DesignPoint, out_dir: str | os.PathLike, *, kmax: int, mmax: int,
                  jobs: int = 4, seed: int = 0, check_csim: bool = True,
                  csim_cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the board project folder; returns the manifest (also written as project.json).

    ``csim_cache``: folder of compiled C simulations to reuse (default ``$TATVPR_CSIM_CACHE``,
    else ``out_dir/csim/build``).
    """
    if point.clock_mhz > board.max_clock_mhz:
        raise UserError(f"clock {point.clock_mhz:g} MHz exceeds {board.max_clock_mhz:g} MHz allowed for {board.id}")
    kp = kernel_params(point, kmax, mmax)
    mem = onchip_bits(kp)
    avail = board_memory_bits(board)
    if avail is not None and sum(mem.values()) > avail:
        raise UserError(
            f"the IP's buffers need {sum(mem.values()) / 1e6:.1f} Mbit on chip (PE={kp.pe} SIMD={kp.simd}, "
            f"K<={kmax}, M<={mmax}) but {board.id} has {avail / 1e6:.1f} Mbit of BRAM+URAM; "
            "choose a smaller design point or smaller --kmax/--tokens")
    out = Path(out_dir).resolve()
    src = hls_dir()
    for sub in ("include", "src", "tb"):
        shutil.copytree(src / sub, out / sub, dirs_exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "reports").mkdir(parents=True, exist_ok=True)

    params = {
        "board": board.id, "board_id": board.id.replace("-", "_"), "part": board.part,
        "board_part_glob": board.board_part_glob, "ps": board.ps, "ps_vlnv": board.ps_vlnv,
        "pe": kp.pe, "simd": kp.simd, "kmax": kp.kmax, "mmax": kp.mmax,
        "clock_mhz": f"{point.clock_mhz:g}", "period_ns": f"{1000.0 / point.clock_mhz:.3f}",
        "defines": " ".join(kp.defines()), "ip_name": IP_NAME, "ip_vendor": IP_VENDOR,
        "ip_library": IP_LIBRARY, "ip_version": IP_VERSION, "ip_instance": IP_INSTANCE,
        "s_axi_port": S_AXI_PORT, "m_axi_ports": list(M_AXI_PORTS), "bd_name": BD_NAME,
        "overlay_name": OVERLAY_NAME, "jobs": int(jobs), "project_dir_name": out.name,
        "pynq_image": board.pynq_image, "weight_format": point.weight_format,
    }
    write_text(out / "vitis_hls.tcl", render("vitis_hls.tcl.j2", params))
    write_text(out / "vivado.tcl", render("vivado.tcl.j2", params))
    write_text(out / "build.sh", render("build.sh.j2", params))
    (out / "build.sh").chmod(0o755)

    deploy = out / "deploy"
    shutil.copytree(src / "driver" / "tatvpr_pynq", deploy / "tatvpr_pynq", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    # the board has no `sim` package: bundle the one implementation of the packed formats
    shutil.copyfile(REPO_ROOT / "sim" / "packing.py", deploy / "tatvpr_pynq" / "_packing.py")
    write_text(deploy / "README.txt", render("deploy_README.txt.j2", params))
    write_json(deploy / "design_point.json", {**asdict(point), "kmax": kp.kmax, "mmax": kp.mmax,
                                              "chunks_max": kp.chunks_max, "board": board.id})

    sample = _sample_layer(kp, point.weight_format, seed)
    from tatvpr_hw.hlsflow.formats import write_layer_file
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
        "design_point": asdict(point), "kernel": asdict(kp), "onchip_bits": mem,
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
    tools = tools_on_path()
    missing = [t for t, p in tools.items() if p is None]
    if missing or not run:
        manifest["tools"] = {"ran": False, "missing": missing}
    else:
        manifest["tools"] = run_tools(out_dir)
    write_json(Path(out_dir) / "project.json", manifest)
    return manifest
