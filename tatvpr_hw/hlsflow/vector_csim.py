"""C simulation of the vector-unit kernels (``hls/src/tatvpr_vector.cpp``) against the integer model.

    >>> exe = build_vector_csim(build_dir, lanes=16)
    >>> res = run_vector_ops(exe, [VectorCall("layernorm", ...)], work_dir)

Each call writes one ``TVPRVEC1`` file, the testbench runs the real kernel and writes its
output and its counted element-loop iterations (the simulator's vector-unit cycles without the
pipeline depth) and per-row operations (square roots, reciprocals).
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.hlsflow.csim import compiler
from tatvpr_hw.hlsflow.paths import ap_types_dir, hls_dir

_SOURCES = ("include/tatvpr_vector.h", "include/tatvpr_exp2_table.inc", "src/tatvpr_vector.cpp", "tb/tb_vector.cpp")
OPS = {"layernorm": 1, "softmax": 2, "gelu": 3, "add": 4}
_OUT_DTYPE = {"layernorm": np.int8, "softmax": np.uint8, "gelu": np.int8, "add": np.int16}


@dataclass
class VectorCall:
    """One kernel call: ``op`` name, int64 ``params`` and the input arrays in the file's order."""

    op: str
    params: list[int]
    arrays: list[np.ndarray] = field(default_factory=list)
    shape: tuple[int, ...] = ()


@dataclass
class VectorResult:
    out: np.ndarray
    element_cycles: int
    row_ops: int


def layernorm_call(ln, x: np.ndarray) -> VectorCall:
    """``tatvpr_pynq.integer.LayerNormQ`` on int16 ``x[T, D]``."""
    t, d = x.shape
    return VectorCall("layernorm", [t, d, int(ln.eps_q)],
                      [np.asarray(ln.gain, "<i8"), np.asarray(ln.bias, "<i8"), np.asarray(x, "<i2")], (t, d))


def softmax_call(scores: np.ndarray, mult: int, shift: int) -> VectorCall:
    rows, n = scores.shape
    return VectorCall("softmax", [rows, n, mult, shift], [np.asarray(scores, "<i4")], (rows, n))


def gelu_call(table: np.ndarray, x: np.ndarray) -> VectorCall:
    return VectorCall("gelu", [x.size], [np.asarray(table, "i1"), np.asarray(x, "i1").ravel()], x.shape)


def add_call(x: np.ndarray, y: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> VectorCall:
    t, d = x.shape
    return VectorCall("add", [t, d], [np.asarray(mult, "<i4"), np.asarray(shift, "<i4"), np.asarray(x, "<i2"),
                                      np.asarray(y, "i1")], (t, d))


def build_vector_csim(build_dir: str | os.PathLike, lanes: int = 16) -> Path:
    """Compile the vector-unit testbench (reused while the sources are unchanged)."""
    if not isinstance(lanes, int) or lanes < 1:
        raise UserError(f"vector lanes must be a positive integer, got {lanes!r}")
    root = hls_dir()
    h = hashlib.sha256(str(lanes).encode())
    for rel in _SOURCES:
        h.update((root / rel).read_bytes())
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    exe = build_dir / f"tb_vector_l{lanes}_{h.hexdigest()[:12]}"
    if exe.is_file():
        return exe
    tmp = exe.with_name(exe.name + f".tmp{os.getpid()}")
    cmd = [compiler(), "-O2", "-std=c++14", "-Wno-unknown-pragmas", "-Wno-unused-label", "-DTATVPR_COUNT_CYCLES",
           f"-DTATVPR_VLANES={lanes}", f"-I{root / 'include'}", f"-I{ap_types_dir()}",
           str(root / "src" / "tatvpr_vector.cpp"), str(root / "tb" / "tb_vector.cpp"), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"vector-unit C simulation failed to compile ({cmd[0]} exit {proc.returncode}):\n"
                        + proc.stderr[-4000:])
    os.replace(tmp, exe)
    return exe


def _write_call(path: Path, call: VectorCall) -> None:
    parts = [b"TVPRVEC1", struct.pack("<ii", OPS[call.op], len(call.params)),
             struct.pack(f"<{len(call.params)}q", *[int(p) for p in call.params])]
    for a in call.arrays:
        data = np.ascontiguousarray(a).tobytes()
        parts += [struct.pack("<I", len(data)), data]
    path.write_bytes(b"".join(parts))


def _read_result(path: Path, call: VectorCall) -> VectorResult:
    raw = path.read_bytes()
    if raw[:8] != b"TVPRVRS1":
        raise UserError(f"{path}: not a vector-unit result file")
    op, cycles, rows, nbytes = struct.unpack_from("<iqqI", raw, 8)
    if op != OPS[call.op]:
        raise UserError(f"{path}: result of op {op}, expected {OPS[call.op]}")
    out = np.frombuffer(raw[32:32 + nbytes], dtype=_OUT_DTYPE[call.op]).reshape(call.shape)
    return VectorResult(out.copy(), int(cycles), int(rows))


def run_vector_ops(exe: str | os.PathLike, calls: list[VectorCall], work_dir: str | os.PathLike) -> list[VectorResult]:
    """Run the testbench on ``calls`` (one process); their outputs and counted cycles, in order."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    args = []
    for i, call in enumerate(calls):
        _write_call(work / f"v{i:04d}.in.bin", call)
        args += [str(work / f"v{i:04d}.in.bin"), str(work / f"v{i:04d}.out.bin")]
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"vector-unit C simulation failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return [_read_result(work / f"v{i:04d}.out.bin", call) for i, call in enumerate(calls)]
