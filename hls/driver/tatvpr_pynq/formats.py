"""The IP's data formats: one implementation for the host flow, the C testbench and the board.

Numpy only (this file runs on the board's ARM cores). Layouts are those documented at the top
of ``hls/include/tatvpr_gemm.h``:

* weights: ``N`` rows of packed ternary codes, ``sim.packing`` formats ``ternary2`` (4 per byte)
  and ``ternary1.6`` (5 trits per byte), each row padded to whole bytes;
* activations, compressed as the simulator's ``act`` skip mode: ``tok_nnz`` (uint16 per token)
  and ``pairs`` (uint32 words ``value | index << 8``), ``max(1, ceil(nnz / SIMD))`` chunks of
  ``SIMD`` words per token, the last chunk padded with zero words;
* requantisation: ``y = sat8((v * mult + 2**(shift-1)) >> shift)`` with ``v = acc + bias``.

Small example (SIMD = 2, one token, K = 5)::

    >>> nnz, pairs = compress_activations(np.array([[0, 3, 0, -2, 7]], np.int8), simd=2)
    >>> nnz.tolist(), [hex(p) for p in pairs]
    ([3], ['0x103', '0x3fe', '0x407', '0x0'])
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # in the repository: the one implementation of the packed formats
    from sim.packing import FORMATS, pack, row_bytes, unpack
except ImportError:  # on the board: the deploy folder bundles sim/packing.py as _packing.py
    from ._packing import FORMATS, pack, row_bytes, unpack  # type: ignore[no-redef]

FMT_CODE = {"ternary2": 0, "ternary1.6": 1}
"""Value of the IP's ``fmt`` register for each weight format."""

STATUS_TEXT = {
    0: "ok",
    1: "bad shape (M, K or N zero or above the IP's compiled maxima)",
    2: "bad weight format register",
    3: "bad packed weight (2-bit code 0b10 or base-3 byte > 242)",
    4: "bad activation stream (nnz > K, index >= K, or more chunks than the on-chip buffer)",
    5: "bad requantisation registers (shift outside [1, 62] or negative multiplier)",
}
INDEX_BITS_BUS = 16
MAX_K = 1 << INDEX_BITS_BUS
MAX_BIAS_ABS = 1 << 30
LAYER_MAGIC = b"TVPRLYR1"
RESULT_MAGIC = b"TVPRRES1"


class FormatError(ValueError):
    """Data that cannot be expressed in the IP's formats; the message says what is allowed."""


# --------------------------------------------------------------------------- activations
def chunks_per_token(tok_nnz: np.ndarray, simd: int) -> np.ndarray:
    """Chunks (= CHUNK loop iterations = cycles) of each token: ``max(1, ceil(nnz / SIMD))``."""
    tok_nnz = np.asarray(tok_nnz, dtype=np.int64)
    return np.maximum(1, -(-tok_nnz // simd))


def compress_activations(x: np.ndarray, simd: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 ``x[M, K]`` -> (``tok_nnz`` uint16 [M], ``pairs`` uint32 [sum chunks * SIMD])."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise FormatError(f"activations must be a 2-D [tokens, channels] array, got shape {x.shape}")
    if x.dtype != np.int8:
        raise FormatError(f"activations must be int8, got {x.dtype}")
    if simd < 1:
        raise FormatError(f"SIMD must be >= 1, got {simd}")
    m, k = x.shape
    if k > MAX_K:
        raise FormatError(f"K = {k} channels exceeds the {INDEX_BITS_BUS}-bit index of the stream (max {MAX_K})")
    nz = x != 0
    tok_nnz = nz.sum(axis=1)
    chunks = chunks_per_token(tok_nnz, simd)
    slots = chunks * simd
    start = np.concatenate([[0], np.cumsum(slots)[:-1]])
    pairs = np.zeros(int(slots.sum()), dtype=np.uint32)
    rows, cols = np.nonzero(nz)  # row-major: ascending channel inside each token
    rank = np.arange(rows.size) - np.concatenate([[0], np.cumsum(tok_nnz)[:-1]])[rows]
    vals = x[rows, cols].astype(np.uint8).astype(np.uint32)
    pairs[start[rows] + rank] = vals | (cols.astype(np.uint32) << 8)
    return tok_nnz.astype(np.uint16), pairs


def decompress_activations(tok_nnz: np.ndarray, pairs: np.ndarray, k: int, simd: int) -> np.ndarray:
    """Inverse of :func:`compress_activations`; returns int8 ``[M, K]``."""
    tok_nnz = np.asarray(tok_nnz, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.uint32)
    chunks = chunks_per_token(tok_nnz, simd)
    if pairs.size != int(chunks.sum()) * simd:
        raise FormatError(f"stream has {pairs.size} pair words; the token counts need {int(chunks.sum()) * simd}")
    x = np.zeros((tok_nnz.size, k), dtype=np.int8)
    start = np.concatenate([[0], np.cumsum(chunks * simd)[:-1]])
    for m, (s, nnz) in enumerate(zip(start, tok_nnz)):
        words = pairs[s:s + nnz]
        idx = (words >> 8) & 0xFFFF
        if np.any(idx >= k):
            raise FormatError(f"token {m}: channel index {int(idx.max())} >= K = {k}")
        x[m, idx] = (words & 0xFF).astype(np.uint8).view(np.int8)
    return x


# --------------------------------------------------------------------------- weights / scales
def pack_weights(w: np.ndarray, fmt: str) -> np.ndarray:
    """Ternary ``w[N, K]`` -> flat uint8 DDR image (``N`` rows of ``row_bytes(K, fmt)``)."""
    if fmt not in FMT_CODE:
        raise FormatError(f"unknown weight format {fmt!r}; allowed: {', '.join(FORMATS)}")
    w = np.asarray(w)
    if w.ndim != 2:
        raise FormatError(f"weights must be a 2-D [N, K] array, got shape {w.shape}")
    try:
        return np.ascontiguousarray(pack(w, fmt)).reshape(-1)
    except ValueError as err:
        raise FormatError(str(err)) from None


def unpack_weights(flat: np.ndarray, n: int, k: int, fmt: str) -> np.ndarray:
    """Inverse of :func:`pack_weights`; returns int8 ``[N, K]``."""
    return unpack(np.asarray(flat, dtype=np.uint8).reshape(n, row_bytes(k, fmt)), k, fmt)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Real multiplier ``r > 0`` -> ``(mult, shift)`` with ``mult / 2**shift ~= r``, ``mult < 2**31``."""
    if not (math.isfinite(real) and real > 0):
        raise FormatError(f"requantisation multiplier must be a finite positive number, got {real}")
    frac, exp = math.frexp(real)  # real = frac * 2**exp, frac in [0.5, 1)
    mult = round(frac * (1 << 31))
    shift = 31 - exp
    if mult == 1 << 31:
        mult //= 2
        shift -= 1
    if shift > 62:  # tiny multiplier: lose precision rather than fail
        mult >>= shift - 62
        shift = 62
    if shift < 1 or mult <= 0:
        raise FormatError(f"requantisation multiplier {real} is outside what (mult < 2^31, shift in [1, 62]) can express")
    return int(mult), int(shift)


def requantize(v: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """``sat8((v * mult + 2**(shift-1)) >> shift)`` in exact integer arithmetic (int64 or Python int)."""
    v = np.asarray(v, dtype=np.int64)
    if not 1 <= shift <= 62 or mult < 0:
        raise FormatError(f"shift must be in [1, 62] and mult >= 0, got shift={shift} mult={mult}")
    # |v| < 2**31 and mult < 2**31: the product fits int64, as in the kernel's ap_int<64>.
    p = (v * np.int64(mult) + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    return np.clip(p, -128, 127).astype(np.int8)


def reference_gemm(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None,
                   mult: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer reference: ``(y int8 [M, N], acc int64 [M, N])`` of the IP's layer."""
    acc = np.asarray(x, dtype=np.int64) @ np.asarray(w, dtype=np.int64).T
    v = acc if bias is None else acc + np.asarray(bias, dtype=np.int64)[None, :]
    return requantize(v, mult, shift), acc


# --------------------------------------------------------------------------- one layer
@dataclass
class IPLayer:
    """One ternary layer in the IP's DDR formats plus its registers."""

    pe: int
    simd: int
    m: int
    k: int
    n: int
    fmt: str
    mult: int
    shift: int
    tok_nnz: np.ndarray   # uint16 [m]
    pairs: np.ndarray     # uint32 [sum chunks * simd]
    weights: np.ndarray   # uint8 flat
    bias: np.ndarray      # int32 [n]
    expected: np.ndarray | None = None  # int8 [m, n]

    @property
    def chunk_cycles_per_fold(self) -> int:
        """CHUNK iterations of every fold (``sum_m max(1, ceil(nnz[m] / SIMD))``)."""
        return int(chunks_per_token(self.tok_nnz, self.simd).sum())

    @property
    def folds(self) -> int:
        return -(-self.n // self.pe)


def prepare_layer(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, mult: int, shift: int,
                  *, pe: int, simd: int, fmt: str = "ternary2", with_expected: bool = True) -> IPLayer:
    """int8 ``x[M,K]``, ternary ``w[N,K]``, int32 ``bias[N]`` -> an :class:`IPLayer` (+ reference)."""
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise FormatError(f"shapes do not chain: x {x.shape} and w {w.shape} must be [M, K] and [N, K]")
    m, k = x.shape
    n = w.shape[0]
    if pe < 1:
        raise FormatError(f"PE must be >= 1, got {pe}")
    b = np.zeros(n, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    if b.shape != (n,):
        raise FormatError(f"bias must have shape ({n},), got {b.shape}")
    if b.size and np.abs(b).max() >= MAX_BIAS_ABS:
        raise FormatError(f"bias must satisfy |bias| < 2^30 accumulator units, got {int(np.abs(b).max())}")
    tok_nnz, pairs = compress_activations(x, simd)
    expected = reference_gemm(x, w, b, mult, shift)[0] if with_expected else None
    return IPLayer(pe=pe, simd=simd, m=m, k=k, n=n, fmt=fmt, mult=int(mult), shift=int(shift),
                   tok_nnz=tok_nnz, pairs=pairs, weights=pack_weights(w, fmt),
                   bias=b.astype(np.int32), expected=expected)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def layer_file_bytes(layer: IPLayer) -> bytes:
    """The ``TVPRLYR1`` file of a layer (layout: ``hls/tb/tb_ternary_gemm.cpp``)."""
    head = struct.pack("<8s8i", LAYER_MAGIC, layer.pe, layer.simd, layer.m, layer.k, layer.n,
                       FMT_CODE[layer.fmt], layer.mult, layer.shift)
    sections = [np.asarray(layer.tok_nnz, "<u2"), np.asarray(layer.pairs, "<u4"),
                np.asarray(layer.weights, np.uint8), np.asarray(layer.bias, "<i4"),
                np.zeros(0, np.int8) if layer.expected is None else np.asarray(layer.expected, np.int8)]
    body = b"".join(struct.pack("<I", a.nbytes) + a.tobytes() for a in sections)
    return head + body


def write_layer_file(path: str | os.PathLike, layer: IPLayer) -> Path:
    path = Path(path)
    _atomic_write(path, layer_file_bytes(layer))
    return path


@dataclass
class CsimResult:
    status: int
    out: np.ndarray            # int8 [m, n]
    chunk_cycles: np.ndarray   # int64 [folds]: CHUNK iterations counted in each fold
    mismatches: int


def read_result_file(path: str | os.PathLike) -> CsimResult:
    raw = Path(path).read_bytes()
    if raw[:8] != RESULT_MAGIC or len(raw) < 28:
        raise FormatError(f"{path}: not a TVPRRES1 result file")
    status, m, n, folds, mism = struct.unpack_from("<5i", raw, 8)
    off = 28
    out = np.frombuffer(raw, np.int8, m * n, off).reshape(m, n).copy()
    cyc = np.frombuffer(raw, "<i8", folds, off + m * n).copy()
    return CsimResult(status=status, out=out, chunk_cycles=cyc, mismatches=mism)
