"""The IP's data formats: one implementation for the host flow, the C testbench and the board.

Numpy only (this file runs on the board's ARM cores). Layouts are those documented at the top
of ``hls/include/tatvpr_gemm.h``:

* weights: ``N`` rows of packed ternary codes, :mod:`ternary_format`'s ``ternary2`` (4 per byte)
  and ``ternary1.6`` (5 trits per byte), each row padded to whole bytes;
* activations, bank-scheduled as the simulator's ``act`` skip mode with ``B`` banks
  (docs/engine.md section 3): ``tok_chunks`` (uint16 per token: ``max(1, max_b ceil(nnz_b / q))``,
  ``q = SIMD / B``) and ``pairs`` (uint32 words ``value | index << 8``, or 0 for a pad),
  ``tok_chunks[m]`` chunks of ``SIMD`` slots per token; slot ``s`` only holds channels of bank
  ``s mod B``;
* requantisation: ``y = sat8((v * mult + 2**(shift-1)) >> shift)`` with ``v = acc + bias``.

Small example (SIMD = 2, B = 2 banks so q = 1, one token, K = 5): channels 1 and 3 are both in
bank 1, so the token takes two chunks although two lanes could hold both (a bank conflict)::

    >>> chunks, pairs = schedule_activations(np.array([[0, 3, 0, -2, 0]], np.int8), simd=2, banks=2)
    >>> chunks.tolist(), [hex(p) for p in pairs]
    ([2], ['0x0', '0x103', '0x0', '0x3fe'])
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # the one implementation of the packed formats (numpy only)
    from ternary_format import FORMATS, pack, row_bytes, unpack
except ImportError as _err:  # pragma: no cover - exercised by tests/hls/test_driver.py in a subprocess
    raise ImportError(
        "tatvpr_pynq needs the numpy-only package `ternary_format` (the packed weight formats) importable "
        "beside it: `tatvpr export bitstream` copies it into deploy/ next to tatvpr_pynq/; when copying the "
        "driver by hand, copy the repository's ternary_format/ folder alongside tatvpr_pynq/") from _err

FMT_CODE = {"ternary2": 0, "ternary1.6": 1}
"""Value of the IP's ``fmt`` register for each weight format."""

STATUS_TEXT = {
    0: "ok",
    1: "bad shape (M, K or N zero, or K above the IP's compiled K_max)",
    2: "bad weight format register",
    3: "bad packed weight (2-bit code 0b10 or base-3 byte > 242)",
    4: "bad activation stream (a pair in another bank's lane, index >= K, a non-minimal chunk count, "
       "a token over a block's chunks, or a resident stream over the on-chip buffer)",
    5: "bad requantisation registers (shift outside [1, 62] or negative multiplier)",
    6: "bad schedule registers (order not 0 or 1, or resident not 0 or 1)",
}
INDEX_BITS_BUS = 16
MAX_K = 1 << INDEX_BITS_BUS
MAX_BIAS_ABS = 1 << 30
LAYER_MAGIC = b"TVPRLYR3"
RESULT_MAGIC = b"TVPRRES2"
LOOP_ORDER_CODE = {"fold_outer": 0, "token_outer": 1}
"""Value of the IP's ``order`` register for each loop order (``ternary_format.tiling.LOOP_ORDERS``)."""


class FormatError(ValueError):
    """Data that cannot be expressed in the IP's formats; the message says what is allowed."""


# --------------------------------------------------------------------------- activations
def _check_gather(simd: int, banks: int | None, ports: int = 1) -> int:
    """``B`` (``banks=None`` is ``SIMD``) after checking docs/engine.md section 3's rules."""
    if not isinstance(simd, (int, np.integer)) or simd < 1:
        raise FormatError(f"SIMD must be an integer >= 1, got {simd!r}")
    b = simd if banks is None else banks
    if not isinstance(b, (int, np.integer)) or b < 1 or simd % b:
        raise FormatError(f"banks = {banks!r} must be a divisor of SIMD = {simd}")
    if ports not in (1, 2) or simd % (b * ports):
        raise FormatError(f"ports = {ports!r} must be 1 or 2 with banks x ports dividing SIMD = {simd}")
    return int(b)


def bank_counts(act_mask: np.ndarray, banks: int) -> np.ndarray:
    """Nonzero channels of each token in each bank (channel k in bank k mod B): int64 ``[M, B]``."""
    act_mask = np.asarray(act_mask, dtype=bool)
    m, k = act_mask.shape
    pad = -k % banks
    padded = np.concatenate([act_mask, np.zeros((m, pad), bool)], axis=1)
    return padded.reshape(m, -1, banks).sum(axis=1, dtype=np.int64)


def chunks_per_token(act_mask: np.ndarray, simd: int, banks: int | None = None) -> np.ndarray:
    """Chunks (= CHUNK loop iterations = cycles) of each token of a bool ``[M, K]`` mask:
    ``max(1, max_b ceil(nnz_b / q))``, ``q = SIMD / B`` (docs/engine.md section 3)."""
    b = _check_gather(simd, banks)
    q = simd // b
    return np.maximum(1, (-(-bank_counts(act_mask, b) // q)).max(axis=1, initial=0))


def schedule_activations(x: np.ndarray, simd: int, banks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """int8 ``x[M, K]`` -> the bank-scheduled stream (``tok_chunks`` uint16 [M], ``pairs`` uint32
    [sum chunks * SIMD]): bank b's nonzero channels of a token in ascending order, the i-th in
    chunk ``i // q`` at slot ``(i % q) * B + b``; every other slot a zero pad word."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise FormatError(f"activations must be a 2-D [tokens, channels] array, got shape {x.shape}")
    if x.dtype != np.int8:
        raise FormatError(f"activations must be int8, got {x.dtype}")
    b = _check_gather(simd, banks)
    q = simd // b
    m, k = x.shape
    if k > MAX_K:
        raise FormatError(f"K = {k} channels exceeds the {INDEX_BITS_BUS}-bit index of the stream (max {MAX_K})")
    nz = x != 0
    chunks = chunks_per_token(nz, simd, b)
    if chunks.size and chunks.max() > 0xFFFF:
        raise FormatError(f"a token needs {int(chunks.max())} chunks; the stream's count is 16-bit (max 65535)")
    start = np.concatenate([[0], np.cumsum(chunks * simd)[:-1]]).astype(np.int64)
    pairs = np.zeros(int(chunks.sum()) * simd, dtype=np.uint32)
    rows, cols = np.nonzero(nz)  # row-major: ascending channel inside each token
    bank = cols % b
    group = rows.astype(np.int64) * b + bank
    order = np.argsort(group, kind="stable")  # by (token, bank), ascending channel inside
    g_sorted = group[order]
    first = np.searchsorted(g_sorted, g_sorted, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size) - first
    slot = start[rows] + (rank // q) * simd + (rank % q) * b + bank
    vals = x[rows, cols].astype(np.uint8).astype(np.uint32)
    pairs[slot] = vals | (cols.astype(np.uint32) << 8)
    return chunks.astype(np.uint16), pairs


def unschedule_activations(tok_chunks: np.ndarray, pairs: np.ndarray, k: int, simd: int,
                           banks: int | None = None) -> np.ndarray:
    """Inverse of :func:`schedule_activations` (checking the bank rule); returns int8 ``[M, K]``."""
    b = _check_gather(simd, banks)
    tok_chunks = np.asarray(tok_chunks, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.uint32)
    if pairs.size != int(tok_chunks.sum()) * simd:
        raise FormatError(f"stream has {pairs.size} pair words; the chunk counts need {int(tok_chunks.sum()) * simd}")
    x = np.zeros((tok_chunks.size, k), dtype=np.int8)
    token = np.repeat(np.arange(tok_chunks.size), tok_chunks * simd)
    lane = np.arange(pairs.size) % simd
    val = (pairs & 0xFF).astype(np.uint8).view(np.int8)
    idx = ((pairs >> 8) & 0xFFFF).astype(np.int64)
    live = val != 0
    if np.any(idx[live] >= k):
        raise FormatError(f"channel index {int(idx[live].max())} >= K = {k}")
    wrong = live & (idx % b != lane % b)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise FormatError(f"word {i}: channel {int(idx[i])} is in bank {int(idx[i]) % b}, "
                          f"but slot {int(lane[i])} reads bank {int(lane[i]) % b}")
    x[token[live], idx[live]] = val[live]
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
    banks: int
    ports: int
    m: int
    k: int
    n: int
    fmt: str
    mult: int
    shift: int
    tok_chunks: np.ndarray  # uint16 [m]
    pairs: np.ndarray       # uint32 [sum chunks * simd]
    weights: np.ndarray   # uint8 flat
    bias: np.ndarray      # int32 [n]
    expected: np.ndarray | None = None  # int8 [m, n]
    skip_mode: str = "act"      # "act": pairs = the bank-scheduled slot words; "none": pairs = dense int8 x[m, k]
    order: str = "fold_outer"   # the IP's loop order (register ``order``, LOOP_ORDER_CODE)
    resident: bool = True       # register ``resident``: a block may use the whole activation buffer

    @property
    def chunk_cycles_per_fold(self) -> int:
        """CHUNK iterations of every fold (``sum_m c(m)``, bank conflicts included)."""
        return int(np.asarray(self.tok_chunks, np.int64).sum())

    @property
    def folds(self) -> int:
        return -(-self.n // self.pe)


def prepare_layer(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, mult: int, shift: int,
                  *, pe: int, simd: int, banks: int | None = None, ports: int = 1, fmt: str = "ternary2",
                  with_expected: bool = True, skip_mode: str = "act") -> IPLayer:
    """int8 ``x[M,K]``, ternary ``w[N,K]``, int32 ``bias[N]`` -> an :class:`IPLayer` (+ reference).

    ``banks`` / ``ports``: the IP's ``compute.gather`` (``banks=None`` is ``SIMD``). ``skip_mode``:
    ``act`` (the bank-scheduled stream) or ``none`` (the IP built with ``TATVPR_SKIP_NONE`` reads the
    dense int8 tokens; ``tok_chunks`` then holds every token's ``ceil(K / SIMD)`` words, for reference)."""
    if skip_mode not in ("act", "none"):
        raise FormatError(f"skip_mode {skip_mode!r}: the IP builds 'act' or 'none'")
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise FormatError(f"shapes do not chain: x {x.shape} and w {w.shape} must be [M, K] and [N, K]")
    m, k = x.shape
    n = w.shape[0]
    b = _checked_bias(bias, n, pe)
    nb = _check_gather(simd, banks, ports)
    if skip_mode == "none":
        if x.dtype != np.int8:
            raise FormatError(f"activations must be int8, got {x.dtype}")
        tok_chunks = np.full(m, max(1, -(-k // simd)), np.uint16)
        pairs = np.ascontiguousarray(x, dtype=np.int8).reshape(-1)
    else:
        tok_chunks, pairs = schedule_activations(x, simd, nb)
    expected = reference_gemm(x, w, b, mult, shift)[0] if with_expected else None
    return IPLayer(pe=pe, simd=simd, banks=nb, ports=int(ports), m=m, k=k, n=n, fmt=fmt, mult=int(mult),
                   shift=int(shift),
                   tok_chunks=tok_chunks, pairs=pairs, weights=pack_weights(w, fmt),
                   bias=b.astype(np.int32), expected=expected, skip_mode=skip_mode)


def _checked_bias(bias, n: int, pe: int) -> np.ndarray:
    """PE >= 1 and the bias as int64 [n] (zeros when None) within the accumulator's range."""
    if pe < 1:
        raise FormatError(f"PE must be >= 1, got {pe}")
    b = np.zeros(n, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    if b.shape != (n,):
        raise FormatError(f"bias must have shape ({n},), got {b.shape}")
    if b.size and np.abs(b).max() >= MAX_BIAS_ABS:
        raise FormatError(f"bias must satisfy |bias| < 2^30 accumulator units, got {int(np.abs(b).max())}")
    return b


def layer_from_stream(tok_chunks: np.ndarray, pairs: np.ndarray, k: int, w: np.ndarray, bias: np.ndarray | None,
                      mult: int, shift: int, *, pe: int, simd: int, banks: int | None = None, ports: int = 1,
                      fmt: str = "ternary2") -> IPLayer:
    """An ``act`` :class:`IPLayer` whose input is an act stream already made (by the vector unit's
    ``tatvpr_topk_schedule``, or :func:`schedule_activations`): ``tok_chunks`` uint16 [M] and ``pairs``
    uint32 [sum chunks * SIMD] for ``K`` channels; the same checks as :func:`prepare_layer` on the
    weights and bias, and the stream's length against its chunk counts (no expected output)."""
    tok_chunks = np.asarray(tok_chunks)
    pairs = np.asarray(pairs)
    nb = _check_gather(simd, banks, ports)
    if tok_chunks.ndim != 1 or tok_chunks.size == 0 or (tok_chunks < 1).any():
        raise FormatError(f"tok_chunks must be a non-empty 1-D array of counts >= 1, got shape {tok_chunks.shape}")
    if pairs.ndim != 1 or pairs.size != int(tok_chunks.astype(np.int64).sum()) * simd:
        raise FormatError(f"stream has {pairs.size} pair words; the chunk counts need "
                          f"{int(tok_chunks.astype(np.int64).sum()) * simd}")
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[1] != k:
        raise FormatError(f"weights must be [N, K = {k}], got shape {w.shape}")
    n = w.shape[0]
    b = _checked_bias(bias, n, pe)
    return IPLayer(pe=pe, simd=simd, banks=nb, ports=int(ports), m=int(tok_chunks.size), k=int(k), n=n, fmt=fmt,
                   mult=int(mult), shift=int(shift), tok_chunks=tok_chunks.astype(np.uint16),
                   pairs=pairs.astype(np.uint32), weights=pack_weights(w, fmt), bias=b.astype(np.int32))


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
    """The ``TVPRLYR3`` file of a layer (layout: ``hls/tb/tb_ternary_gemm.cpp``)."""
    head = struct.pack("<8s12i", LAYER_MAGIC, layer.pe, layer.simd, layer.banks, layer.ports, layer.m, layer.k,
                       layer.n, FMT_CODE[layer.fmt], layer.mult, layer.shift, LOOP_ORDER_CODE[layer.order],
                       int(bool(layer.resident)))
    sections = [np.asarray(layer.tok_chunks, "<u2"),
                np.asarray(layer.pairs, np.int8 if layer.skip_mode == "none" else "<u4"),
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
    chunk_cycles: np.ndarray   # int64 [folds]: CHUNK iterations of each fold, over all its steps
    mismatches: int
    steps: list = None         # per step, in the order run: dict fold, block, chunk_cycles,
    #                            weight_loads, act_loads, weight_bytes, act_bytes (the loads made for it)


_STEP = np.dtype([("fold", "<i4"), ("block", "<i4"), ("weight_loads", "<i4"), ("act_loads", "<i4"),
                  ("chunk_cycles", "<i8"), ("weight_bytes", "<i8"), ("act_bytes", "<i8")])


def read_result_file(path: str | os.PathLike) -> CsimResult:
    raw = Path(path).read_bytes()
    if raw[:8] != RESULT_MAGIC or len(raw) < 32:
        raise FormatError(f"{path}: not a {RESULT_MAGIC.decode()} result file")
    status, m, n, folds, mism, nsteps = struct.unpack_from("<6i", raw, 8)
    off = 32
    out = np.frombuffer(raw, np.int8, m * n, off).reshape(m, n).copy()
    rec = np.frombuffer(raw, _STEP, nsteps, off + m * n)
    steps = [{name: int(r[name]) for name in _STEP.names} for r in rec]
    cyc = np.zeros(folds, np.int64)
    for st in steps:
        cyc[st["fold"]] += st["chunk_cycles"]
    return CsimResult(status=status, out=out, chunk_cycles=cyc, mismatches=mism, steps=steps)
