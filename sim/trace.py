"""Workload trace: the operations of one query, as the simulator consumes them.

A trace is what one forward pass of the model does, in order, written by the model side
(``tatvpr trace``, :mod:`tatvpr_hw.tracing`) or by :func:`synthetic_vit_trace`, and read by
the simulator. It never holds float weights or activations: only shapes, the packed ternary
weights and the real activation nonzero masks (after top-k), so it can come from anywhere.

On disk: one ``.npz`` file (``numpy.savez_compressed``, read with ``allow_pickle=False``).

``__header__``
    uint8 array: the UTF-8 bytes of a JSON object
    ``{"format": "tatvpr-trace", "version": 1, "meta": {...}, "ops": [...]}``.
    ``meta`` is free-form JSON (the writer records e.g. ``model``, ``sparsity``, ``img_size``,
    ``tokens``, ``source``). ``ops`` lists the operations of one query in execution order;
    each entry has ``"type"`` and the fields below.
``ops/<i>/weights_packed``
    for op ``i`` of type ``ternary_linear`` only: uint8 ``[n, ceil(k/4)]``, the ternary
    weights ``W~[n, k]`` in the ``ternary2`` format of :mod:`sim.packing` (2-bit codes
    ``00`` = 0, ``01`` = +1, ``11`` = -1, 4 per byte, each row padded to whole bytes).
``ops/<i>/act_mask``
    for ``ternary_linear`` only: bool ``[m, k]``, True where the int8 input activation of
    token ``m``, channel ``k`` is nonzero after the top-k (and after int8 rounding).

Operation types (header fields; all counts are plain integers >= 1):

``ternary_linear`` (:class:`TernaryLinearOp`) -- ``Y[m,n] = requant(X[m,k] . W~[n,k]^T)``
    on the packed-ternary MAC array. ``m`` tokens, ``k`` input channels, ``n`` output
    channels; ``act_scale`` (float > 0, the int8 activation step: real = int8 * act_scale);
    ``weight_scale`` (float > 0, the absmean gamma: real weight = gamma * W~; or a list of
    ``n`` floats for per-output-channel scales).
``dense`` (:class:`DenseOp`) -- ``batch`` independent int8 x int8 GEMMs ``[m,k] x [k,n]`` on
    the DSP-based int8 unit: attention ``Q K^T`` (m = tokens, k = head dim, n = tokens,
    batch = heads) and ``A V`` (m = tokens, k = tokens, n = head dim), and linears that are
    not ternary (head, patch embedding). ``batch`` defaults to 1.
``vector`` (:class:`VectorOp`) -- ``elements`` element-wise operations of ``kind`` in
    ``softmax | layernorm | gelu | add | other | requant | l2norm`` on the vector unit
    (``elements`` = number of int8/fixed-point values produced, e.g. heads * tokens * tokens for a
    softmax; ``requant`` = the head's int16 -> int8 requantisation, ``l2norm`` = the descriptor's
    L2 normalisation, one row of ``elements``); ``row`` (optional, default 0): elements per row.

``dense`` and ``vector`` ops may carry ``"host": true`` (default false; written only when true,
so traces without it read as before): the op runs on the host CPU, not on the fabric (SALAD's
Sinkhorn part, docs/integer.md), and the simulator charges it with the host-vector formula
(``vector_unit.host_call_overhead_us`` + elements x ``host_ns_per_element[kind]``; a dense op's
elements are its MACs, kind ``other``). ``ternary_linear`` ops cannot be host ops.

The version is bumped on any incompatible change; :func:`read_trace` rejects other versions.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from sim.atomic import atomic_write
from sim.errors import SimInputError
from sim.packing import pack_ternary2, row_bytes, unpack_ternary2

FORMAT = "tatvpr-trace"
VERSION = 1
# topk: the top-k and bank scheduling of a ternary linear's input on the vector unit (schedule.topk:
# fabric, charged by sim.schedule; the tracer records no topk ops)
VECTOR_KINDS = ("softmax", "layernorm", "gelu", "add", "other", "requant", "l2norm", "topk")
# Sane bounds of a trace's counts: one dimension (tokens, channels, heads) at most 2^31 - 1, one
# op's work (batch * m * k * n MACs, or elements) at most 2^50 (a ViT-B/14 query is ~1.7e10 MACs).
MAX_DIM = 2**31 - 1
MAX_OP_WORK = 2**50
# meta keys with a fixed meaning (the others are free-form): key -> what they must be
META_INT_KEYS = ("tokens", "depth", "dim", "heads", "img_size", "patch_size", "images")
META_STR_KEYS = ("model", "source")

# Per byte of ternary2 data: whether it holds the invalid code 0b10.
_BAD_BYTE = np.array([any(((b >> s) & 3) == 2 for s in (0, 2, 4, 6)) for b in range(256)], dtype=bool)


# Elements of one [M, block] tile of :func:`intersection_counts` (its uint64 AND result, 256 KiB,
# stays in the L2 cache through the AND, popcount and add passes).
_TILE_ELEMS = 1 << 15


def ternary2_nz_bytes(packed: np.ndarray) -> np.ndarray:
    """Packed ternary2 weights ``[N, ceil(K/4)]`` -> their nonzero mask packed 8 channels per byte
    ``[N, ceil(K/8)]`` in ``np.packbits(..., bitorder="little")`` order, without unpacking."""
    x = packed & np.uint8(0x55)  # a nonzero code (01, 11) has its low bit set: bits 0, 2, 4, 6
    x = (x | (x >> 1)) & np.uint8(0x33)  # -> bits 0, 1, 4, 5
    nib = (x | (x >> 2)) & np.uint8(0x0F)  # -> bits 0..3: code j -> bit j
    if nib.shape[1] % 2:
        nib = np.pad(nib, ((0, 0), (0, 1)))
    return nib[:, 0::2] | (nib[:, 1::2] << 4)


def _words(packed: np.ndarray, words: int) -> np.ndarray:
    """Little-order packed mask bytes ``[R, B]`` -> uint64 ``[words, R]`` (zero padded), word-major."""
    r, nbytes = packed.shape
    buf = np.zeros((r, words * 8), np.uint8)
    buf[:, :nbytes] = packed
    return np.ascontiguousarray(buf.view(np.uint64).T)


def intersection_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|nz(a_m) ∩ nz(b_n)|`` for bool ``a [M,K]``, ``b [N,K]`` -> int32 ``[M,N]`` (exact)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if b.shape[1] != a.shape[1]:
        raise SimInputError(f"intersection_counts: K = {a.shape[1]} and {b.shape[1]} differ")
    return packed_intersection_counts(np.packbits(a, axis=1, bitorder="little"),
                                      np.packbits(b, axis=1, bitorder="little"), a.shape[1])


def packed_intersection_counts(pa: np.ndarray, pb: np.ndarray, k: int) -> np.ndarray:
    """:func:`intersection_counts` of two masks packed 8 channels per byte (little bit order),
    ``pa [M, >= ceil(K/8)]``, ``pb [N, >= ceil(K/8)]`` -> int32 ``[M, N]``.

    The bytes are viewed as 64-channel words; for each tile of ``[M, nb]`` outputs
    (``M * nb <= _TILE_ELEMS``, so the temporaries stay in cache) and each word: AND,
    ``np.bitwise_count`` (uint8), add into a uint16 accumulator (uint32 when K > 65535).
    No BLAS: measured steadier here than a float32 GEMM, whose default OpenBLAS threads
    slow it down 4x on a loaded 2-core machine (docs/simulator.md).
    """
    m, n = pa.shape[0], pb.shape[0]
    nbytes = -(-k // 8)
    words = max(1, -(-k // 64))
    wa, wb = _words(pa[:, :nbytes], words), _words(pb[:, :nbytes], words)
    out = np.empty((m, n), np.int32)
    nb = max(1, min(n, _TILE_ELEMS // max(1, m)))
    tmp = np.empty((m, nb), np.uint64)
    cnt = np.empty((m, nb), np.uint8)
    acc = np.empty((m, nb), np.uint16 if k <= 0xFFFF else np.uint32)
    for c0 in range(0, n, nb):
        c1 = min(n, c0 + nb)
        t, c, s = tmp[:, :c1 - c0], cnt[:, :c1 - c0], acc[:, :c1 - c0]
        s.fill(0)
        for j in range(words):
            np.bitwise_and(wa[j][:, None], wb[j, c0:c1][None, :], out=t)
            np.bitwise_count(t, out=c)
            np.add(s, c, out=s)
        out[:, c0:c1] = s
    return out


# ------------------------------------------------------------ per-bank intersection counts
# docs/engine.md section 3: channel k lives in bank k mod B at address k // B; `both` needs, per
# token m and output channel p, the busiest bank's |nz(x_m) ∩ nz(w_p) ∩ bank b|.

# Bytes of one [B, cols / 8, rows] count tile of :func:`bank_max_tiles` (the 256 KiB of the
# uint64 tile above); its three work arrays stay in the L2 cache.
_BANK_TILE_BYTES = 8 * _TILE_ELEMS
_BYTE_SPLAT = np.uint64(0x0101010101010101)
_T8_MASKS = ((np.uint64(7), np.uint64(0x00AA00AA00AA00AA)), (np.uint64(14), np.uint64(0x0000CCCC0000CCCC)),
             (np.uint64(28), np.uint64(0x00000000F0F0F0F0)))


def _transpose8(x: np.ndarray) -> np.ndarray:
    """Transpose the 8 x 8 bit matrix in each uint64 (byte j, bit i -> byte i, bit j)."""
    for sh, mask in _T8_MASKS:
        t = (x ^ (x >> sh)) & mask
        x = x ^ t ^ (t << sh)
    return x


def bank_bytes(mask: np.ndarray, banks: int) -> np.ndarray:
    """A bool mask ``[R, K]`` in the *bank-byte layout*: uint8 ``[ceil(ceil(K/B)/8), B, R]`` whose
    element ``[r, b, i]`` has bit j set iff ``mask[i, (8 r + j) B + b]`` (channel k is in bank
    ``k mod B`` at address ``k // B``; byte r of a bank holds its addresses 8r..8r+7; channels past
    K are 0). A bank's count is then a sum of whole-byte popcounts (numpy's uint8 popcount is
    vectorised, its uint64 one is not)."""
    mask = np.asarray(mask, dtype=bool)
    rows, k = mask.shape
    nbytes = max(1, -(-(-(-k // banks)) // 8))
    full = np.zeros((rows, nbytes * 8 * banks), np.uint8)
    full[:, :k] = mask
    cube = np.ascontiguousarray(full.reshape(rows, nbytes, 8, banks).transpose(1, 3, 0, 2))  # [r, b, i, j]
    return np.packbits(cube, axis=-1, bitorder="little")[..., 0]


def packed_bank_bytes(packed: np.ndarray, k: int, banks: int) -> np.ndarray:
    """:func:`bank_bytes` of a mask packed 8 channels per byte (little bit order), ``[R, >= ceil(K/8)]``.
    With ``B`` a multiple of 8 the bytes are regrouped and bit-transposed 8 x 8 in uint64 words,
    never unpacked (a ViT-B fc1's weights: ~1 ms instead of ~9 ms)."""
    rows = packed.shape[0]
    kb = -(-k // 8)
    if banks % 8:
        bits = np.unpackbits(packed[:, :kb], axis=1, bitorder="little")[:, :k]
        return bank_bytes(bits.view(bool), banks)
    g = banks // 8
    nbytes = max(1, -(-(-(-k // banks)) // 8))
    src = np.zeros((rows, nbytes * 8 * g), np.uint8)
    src[:, :kb] = packed[:, :kb]
    if k % 8:
        src[:, kb - 1] &= np.uint8((1 << (k % 8)) - 1)
    # channel (8 r + j) B + 8 h + i is bit i of source byte (8 r + j) g + h: gather the 8 bytes
    # j = 0..7 of each (r, h) into a word, transpose -> byte i holds bank 8 h + i's bits j
    words = np.ascontiguousarray(src.reshape(rows, nbytes, 8, g).transpose(0, 1, 3, 2)).view(np.uint64)
    out = _transpose8(words[..., 0]).view(np.uint8).reshape(rows, nbytes, banks)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def bank_max_tiles(a_bytes: np.ndarray, b_bytes: np.ndarray, k: int):
    """Tiles of ``max over banks b of |nz(a_m) ∩ nz(b_n) ∩ bank b|`` from two masks of ``K = k``
    channels in the bank-byte layout (:func:`bank_bytes`, the same ``B``): yields ``(r0, r1, c0,
    best)`` with ``best`` unsigned ``[cols / 8, r1 - r0, 8]``: ``best[j, i, l]`` is token ``r0 + i``
    and output ``c0 + 8 j + l`` (a view, valid until the next tile). The outputs are padded to a
    multiple of 8 with empty masks: an output ``>= N`` counts 0.

    Per tile of ``[B, cols / 8, rows]`` uint64 (``<= _BANK_TILE_BYTES``) and per byte r of the
    banks: AND (a token's byte splatted over 8 lanes against 8 consecutive outputs' bytes),
    popcount of the 8 uint8 lanes, add; then the max over the bank axis. Exact: a bank holds at
    most ``ceil(K / B)`` channels and the accumulator is uint8, uint16 or uint32 by that bound.
    """
    nbytes, banks, m = a_bytes.shape
    n = b_bytes.shape[2]
    if b_bytes.shape[:2] != (nbytes, banks):
        raise SimInputError(f"bank_max_tiles: bank-byte shapes {a_bytes.shape} and {b_bytes.shape} differ")
    per_bank = -(-k // banks)
    acc_t = np.uint8 if per_bank <= 0xFF else np.uint16 if per_bank <= 0xFFFF else np.uint32
    n8 = -(-n // 8)
    wb = np.zeros((nbytes, banks, n8 * 8), np.uint8)
    wb[:, :, :n] = b_bytes
    w64 = wb.view(np.uint64)  # [r, b, n8]: outputs 8 j .. 8 j + 7 in one word
    a64 = a_bytes.astype(np.uint64) * _BYTE_SPLAT  # [r, b, m]: each byte in all 8 lanes
    if banks * m * 8 <= _BANK_TILE_BYTES:
        mt, nt8 = m, max(1, min(n8, _BANK_TILE_BYTES // (banks * m * 8)))
    else:
        mt, nt8 = max(1, _BANK_TILE_BYTES // (banks * 8)), 1
    t64 = np.empty((banks, nt8, mt), np.uint64)  # the rows axis innermost: long contiguous loops
    acc = np.empty((banks, nt8, mt, 8), acc_t)
    best = np.empty((nt8, mt, 8), acc_t)
    rep = np.empty((nbytes, banks, nt8, mt), np.uint64)
    for r0 in range(0, m, mt):
        r1 = min(m, r0 + mt)
        # the tokens' words repeated over the tile's columns: the AND below then has two
        # contiguous operands (numpy's AND against a broadcast operand is ~1.6x slower)
        rep[:, :, :, :r1 - r0] = a64[:, :, None, r0:r1]
        for j0 in range(0, n8, nt8):
            j1 = min(n8, j0 + nt8)
            t = t64[:, :j1 - j0, :r1 - r0]
            cnt = t.view(np.uint8).reshape(banks, j1 - j0, r1 - r0, 8)
            s = acc[:, :j1 - j0, :r1 - r0]
            for r in range(nbytes):
                np.copyto(t, w64[r, :, j0:j1, None])
                np.bitwise_and(t, rep[r, :, :j1 - j0, :r1 - r0], out=t)
                if r == 0 and acc_t is np.uint8:
                    np.bitwise_count(cnt, out=s)
                else:
                    np.bitwise_count(cnt, out=cnt)
                    if r == 0:
                        s[...] = cnt
                    else:
                        np.add(s, cnt, out=s)
            bst = best[:j1 - j0, :r1 - r0]
            np.max(s, axis=0, out=bst)
            yield r0, r1, j0 * 8, bst


def bank_max_intersections(a: np.ndarray, b: np.ndarray, banks: int) -> np.ndarray:
    """``max over banks of |nz(a_m) ∩ nz(b_n) ∩ bank|`` (channel k in bank ``k mod banks``) for
    bool ``a [M,K]``, ``b [N,K]`` -> int32 ``[M,N]`` (exact)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if b.shape[1] != a.shape[1]:
        raise SimInputError(f"bank_max_intersections: K = {a.shape[1]} and {b.shape[1]} differ")
    if isinstance(banks, bool) or not isinstance(banks, (int, np.integer)) or banks < 1:
        raise SimInputError(f"bank_max_intersections: banks = {banks!r}; allowed: an integer >= 1")
    (m, k), n = a.shape, b.shape[0]
    out = np.empty((m, -(-n // 8) * 8), np.int32)
    pa = np.packbits(a, axis=1, bitorder="little")
    pb = np.packbits(b, axis=1, bitorder="little")
    for r0, r1, c0, best in bank_max_tiles(packed_bank_bytes(pa, k, banks), packed_bank_bytes(pb, k, banks), k):
        out[r0:r1, c0:c0 + best.shape[0] * 8] = best.transpose(1, 0, 2).reshape(r1 - r0, -1)
    return np.ascontiguousarray(out[:, :n])


@dataclass(eq=False)
class TernaryLinearOp:
    """A ternary linear layer (see the module docstring for every field and its units)."""

    name: str
    m: int
    k: int
    n: int
    weights_packed: np.ndarray  # uint8 [n, ceil(k/4)], ternary2
    act_mask: np.ndarray  # bool [m, k]
    act_scale: float = 1.0
    weight_scale: float | list[float] = 1.0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    type = "ternary_linear"

    def weights(self) -> np.ndarray:
        """The ternary weights as int8 ``[n, k]`` in {-1, 0, +1} (unpacked once, cached)."""
        if "w" not in self._cache:
            self._cache["w"] = unpack_ternary2(self.weights_packed, self.k)
        return self._cache["w"]

    def weight_nz_mask(self) -> np.ndarray:
        """bool ``[n, k]``: True where the weight is nonzero (codes 01 and 11 have the low bit set)."""
        bits = np.unpackbits(self.weights_packed, axis=1, bitorder="little")
        return bits[:, 0::2][:, :self.k].astype(bool)

    def weight_nnz_per_row(self) -> np.ndarray:
        """Nonzero weights of each output channel, int64 ``[n]`` (from the packed bytes)."""
        if "nnzw" not in self._cache:
            # a nonzero code (01, 11) has its low bit set: popcount of the bytes' low bits
            self._cache["nnzw"] = np.bitwise_count(self.weights_packed & 0x55).sum(axis=1, dtype=np.int64)
        return self._cache["nnzw"]

    def act_nnz_per_row(self) -> np.ndarray:
        """Nonzero activations of each token, int64 ``[m]``."""
        if "nnza" not in self._cache:
            self._cache["nnza"] = self.act_mask.sum(axis=1, dtype=np.int64)
        return self._cache["nnza"]

    def intersections(self) -> np.ndarray:
        """``|nz(x_m) ∩ nz(w_n)|`` for every token and output channel, int32 ``[m, n]`` (cached)."""
        if "inter" not in self._cache:
            pa = np.packbits(self.act_mask, axis=1, bitorder="little")
            self._cache["inter"] = packed_intersection_counts(pa, ternary2_nz_bytes(self.weights_packed), self.k)
        return self._cache["inter"]

    def act_bank_bytes(self, banks: int) -> np.ndarray:
        """The activation mask in the bank-byte layout of ``banks`` banks (:func:`bank_bytes`; cached)."""
        key = ("abank", int(banks))
        if key not in self._cache:
            pa = np.packbits(self.act_mask, axis=1, bitorder="little")
            self._cache[key] = packed_bank_bytes(pa, self.k, int(banks))
        return self._cache[key]

    def weight_nz_bytes(self) -> np.ndarray:
        """The weights' nonzero mask packed 8 channels per byte, uint8 ``[n, ceil(k/8)]`` (cached)."""
        if "nzb" not in self._cache:
            self._cache["nzb"] = ternary2_nz_bytes(self.weights_packed)
        return self._cache["nzb"]

    def weight_bank_bytes(self, banks: int) -> np.ndarray:
        """The weights' nonzero mask in the bank-byte layout of ``banks`` banks (cached)."""
        key = ("wbank", int(banks))
        if key not in self._cache:
            self._cache[key] = packed_bank_bytes(self.weight_nz_bytes(), self.k, int(banks))
        return self._cache[key]

    def intersection_total(self) -> int:
        """``sum over m, n of |nz(x_m) ∩ nz(w_n)|`` = ``sum_k nnz_x(k) nnz_w(k)`` (exact, no M x N
        work): with ``nnz_x(k) = sum_t 2^t bit_t(k)`` it is ``sum_t 2^t sum_n |nz(w_n) ∩ plane_t|``,
        an AND + popcount of each weight row against the ~log2(M) bit planes."""
        if "inter_total" not in self._cache:
            act_k = self.act_mask.sum(axis=0, dtype=np.int64)
            words = max(1, -(-self.k // 64))
            wz = self.weight_nz_bytes()
            w64 = np.zeros((self.n, words * 8), np.uint8)
            w64[:, :wz.shape[1]] = wz
            w64 = w64.view(np.uint64)
            total = 0
            for t in range(int(act_k.max(initial=0)).bit_length()):
                plane = np.zeros(words * 8, np.uint8)
                bits = np.packbits((act_k >> t) & 1 == 1, bitorder="little")
                plane[:bits.size] = bits
                total += int(np.bitwise_count(w64 & plane.view(np.uint64)).sum(dtype=np.int64)) << t
            self._cache["inter_total"] = total
        return self._cache["inter_total"]


@dataclass(eq=False)
class DenseOp:
    """``batch`` int8 x int8 GEMMs ``[m,k] x [k,n]`` on the DSP unit."""

    name: str
    m: int
    k: int
    n: int
    batch: int = 1
    weights: bool = False  # second operand = the layer's int8 weights (streamed from DRAM)
    host: bool = False     # runs on the host CPU (charged as host work, not on the int8 unit)

    type = "dense"

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.k * self.n

    def as_host_vector(self) -> "VectorOp":
        """A host dense op as the simulator charges it: host work of ``macs`` elements, kind ``other``."""
        return VectorOp(self.name, "other", self.macs, host=True)


@dataclass(eq=False)
class VectorOp:
    """``elements`` element-wise operations of ``kind`` on the vector unit, in rows of ``row``
    elements (a LayerNorm token, a softmax row: the unit's lane groups do not span rows);
    ``row = 0``: no row structure (element-wise ops)."""

    name: str
    kind: str
    elements: int
    row: int = 0
    host: bool = False  # runs on the host CPU (the host-vector charge whatever vector_unit.mode)

    type = "vector"


Op = Union[TernaryLinearOp, DenseOp, VectorOp]


@dataclass
class Trace:
    """One query's operations in order, with free-form ``meta`` and the format ``version``."""

    version: int
    meta: dict
    ops: list

    def ternary_ops(self) -> list[TernaryLinearOp]:
        return [op for op in self.ops if isinstance(op, TernaryLinearOp)]


# ----------------------------------------------------------------------------------- validation

def _where(source: str, i: int, name: Any) -> str:
    return f"{source}: op {i} ({name!r})"


def _int_field(d: dict, key: str, where: str, minimum: int = 1, maximum: int = MAX_DIM) -> int:
    if key not in d:
        raise SimInputError(f"{where}: missing field '{key}'")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not minimum <= v <= maximum:
        raise SimInputError(f"{where}: field '{key}' = {v!r}: must be an integer in [{minimum}, {maximum}]")
    return int(v)


def _check_work(work: int, what: str, where: str) -> None:
    if work > MAX_OP_WORK:
        raise SimInputError(f"{where}: {what} = {work:.3g}: at most 2^50 = {MAX_OP_WORK:.3g} per op "
                            "(the trace of one query)")


def _finite_json(v: Any, path: str, source: str) -> None:
    """Every number inside the JSON value ``v`` must be finite (NaN / Infinity are refused)."""
    if isinstance(v, float) and not math.isfinite(v):
        raise SimInputError(f"{source}: {path} = {v!r}: must be a finite number")
    if isinstance(v, dict):
        for k, x in v.items():
            _finite_json(x, f"{path}.{k}", source)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _finite_json(x, f"{path}[{i}]", source)


def validate_meta(meta: Any, source: str = "<trace>") -> dict:
    """Check the trace's ``meta``: a JSON object, finite numbers; ``sparsity`` (null or a number in
    [0, 1)), the counts in :data:`META_INT_KEYS` (null or integers >= 1) and the names in
    :data:`META_STR_KEYS` (strings) when present. Other keys are free-form."""
    if not isinstance(meta, dict):
        raise SimInputError(f"{source}: 'meta' must be a JSON object, got {type(meta).__name__}")
    _finite_json(meta, "meta", source)
    s = meta.get("sparsity")
    if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1):
        raise SimInputError(f"{source}: meta.sparsity = {s!r}: must be a number in [0, 1) (or absent)")
    for key in META_INT_KEYS:
        v = meta.get(key)
        if v is not None:
            _int_field(meta, key, f"{source}: meta")
    for key in META_STR_KEYS:
        v = meta.get(key)
        if v is not None and not isinstance(v, str):
            raise SimInputError(f"{source}: meta.{key} = {v!r}: must be a string")
    return meta


def _bool_field(d: dict, key: str, where: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, (bool, np.bool_)):
        raise SimInputError(f"{where}: field '{key}' = {v!r}: must be true or false")
    return bool(v)


def _scale_field(d: dict, key: str, where: str, n: int) -> float | list[float]:
    v = d.get(key, 1.0)
    vals = v if isinstance(v, list) else [v]
    if isinstance(v, list) and len(v) != n:
        raise SimInputError(f"{where}: field '{key}' has {len(v)} per-channel values; n = {n}")
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
            raise SimInputError(f"{where}: field '{key}' = {x!r}: must be a finite number > 0")
    return [float(x) for x in v] if isinstance(v, list) else float(v)


def validate_op(op: Op, i: int = 0, source: str = "<trace>") -> None:
    """Check one op's fields, array shapes and dtypes; raise :class:`SimInputError` naming them."""
    where = _where(source, i, getattr(op, "name", "?"))
    if not isinstance(op.name, str) or not op.name:
        raise SimInputError(f"{where}: field 'name' must be a non-empty string")
    if isinstance(op, TernaryLinearOp):
        for key in ("m", "k", "n"):
            _int_field({key: getattr(op, key)}, key, where)
        op.weight_scale = _scale_field({"weight_scale": op.weight_scale}, "weight_scale", where, op.n)
        op.act_scale = _scale_field({"act_scale": op.act_scale}, "act_scale", where, op.n)
        w = op.weights_packed
        want = (op.n, row_bytes(op.k, "ternary2"))
        if not isinstance(w, np.ndarray) or w.dtype != np.uint8:
            raise SimInputError(f"{where}: 'weights_packed' must be a uint8 array, got "
                                f"{getattr(w, 'dtype', type(w).__name__)}")
        if w.shape != want:
            raise SimInputError(f"{where}: 'weights_packed' has shape {w.shape}; n={op.n}, k={op.k} "
                                f"need {want} (ternary2, ceil(k/4) bytes per row)")
        if w.size and _BAD_BYTE[w].any():
            raise SimInputError(f"{where}: 'weights_packed' holds the invalid 2-bit code 0b10 "
                                "(allowed: 00 = 0, 01 = +1, 11 = -1)")
        if op.k % 4 and w.size and (w[:, -1] >> (2 * (op.k % 4))).any():
            raise SimInputError(f"{where}: 'weights_packed' padding bits beyond k={op.k} are not zero")
        a = op.act_mask
        if not isinstance(a, np.ndarray) or a.dtype != np.bool_:
            raise SimInputError(f"{where}: 'act_mask' must be a bool array, got "
                                f"{getattr(a, 'dtype', type(a).__name__)}")
        if a.shape != (op.m, op.k):
            raise SimInputError(f"{where}: 'act_mask' has shape {a.shape}; need (m, k) = ({op.m}, {op.k})")
    elif isinstance(op, DenseOp):
        for key in ("m", "k", "n", "batch"):
            _int_field({key: getattr(op, key)}, key, where)
        _check_work(op.batch * op.m * op.k * op.n, "batch * m * k * n", where)
        _bool_field({"weights": op.weights}, "weights", where)
        _bool_field({"host": op.host}, "host", where)
    elif isinstance(op, VectorOp):
        if op.kind not in VECTOR_KINDS:
            raise SimInputError(f"{where}: field 'kind' = {op.kind!r}; allowed: {', '.join(VECTOR_KINDS)}")
        _int_field({"elements": op.elements}, "elements", where, maximum=MAX_OP_WORK)
        _int_field({"row": op.row}, "row", where, minimum=0, maximum=MAX_DIM)
        if op.row and op.elements % op.row:
            raise SimInputError(f"{where}: field 'row' = {op.row} does not divide elements = {op.elements}")
        _bool_field({"host": op.host}, "host", where)
    else:
        raise SimInputError(f"{source}: op {i} is a {type(op).__name__}; allowed: "
                            "TernaryLinearOp, DenseOp, VectorOp")


def validate_trace(trace: Trace, source: str = "<trace>") -> Trace:
    """Validate every op of ``trace`` (in place); return it."""
    if trace.version != VERSION:
        raise SimInputError(f"{source}: trace version {trace.version!r}; this simulator reads version {VERSION}")
    validate_meta(trace.meta, source)
    if not trace.ops:
        raise SimInputError(f"{source}: the trace has no operations")
    for i, op in enumerate(trace.ops):
        validate_op(op, i, source)
    return trace


# ---------------------------------------------------------------------------------------- I/O

def _header(trace: Trace) -> dict:
    ops = []
    for op in trace.ops:
        if isinstance(op, TernaryLinearOp):
            ops.append({"type": op.type, "name": op.name, "m": op.m, "k": op.k, "n": op.n,
                        "act_scale": op.act_scale, "weight_scale": op.weight_scale})
        elif isinstance(op, DenseOp):
            ops.append({"type": op.type, "name": op.name, "m": op.m, "k": op.k, "n": op.n,
                        "batch": op.batch, "weights": bool(op.weights), **({"host": True} if op.host else {})})
        else:
            ops.append({"type": op.type, "name": op.name, "kind": op.kind, "elements": op.elements,
                        **({"row": op.row} if op.row else {}), **({"host": True} if op.host else {})})
    return {"format": FORMAT, "version": trace.version, "meta": trace.meta, "ops": ops}


def write_trace(path: str | os.PathLike, trace: Trace) -> Path:
    """Validate ``trace`` and write it atomically to ``path`` (.npz)."""
    path = Path(path)
    validate_trace(trace, str(path))
    try:
        header = json.dumps(_header(trace))
    except (TypeError, ValueError) as err:
        raise SimInputError(f"{path}: trace meta is not JSON-serialisable: {err}") from None
    arrays = {"__header__": np.frombuffer(header.encode("utf-8"), dtype=np.uint8)}
    for i, op in enumerate(trace.ops):
        if isinstance(op, TernaryLinearOp):
            arrays[f"ops/{i}/weights_packed"] = op.weights_packed
            arrays[f"ops/{i}/act_mask"] = op.act_mask

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: savez would append .npz to a name
            np.savez_compressed(fh, **arrays)
    return atomic_write(path, write, "trace file")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a trace may hold (allowed: finite numbers)")


def read_trace(path: str | os.PathLike) -> Trace:
    """Read and validate a trace file; raise :class:`SimInputError` for anything malformed."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise SimInputError(f"trace file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError ...
        raise SimInputError(f"{src}: not a trace file (expected a .npz written by write_trace): {err}") from None
    with npz:
        files = set(npz.files)
        if "__header__" not in files:
            raise SimInputError(f"{src}: no '__header__' entry; not a {FORMAT} file")
        try:
            header = json.loads(npz["__header__"].tobytes().decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
            raise SimInputError(f"{src}: '__header__' is not valid JSON: {err}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise SimInputError(f"{src}: header 'format' is {header.get('format') if isinstance(header, dict) else None!r}; "
                                f"expected {FORMAT!r}")
        version = header.get("version")
        if version != VERSION:
            raise SimInputError(f"{src}: trace version {version!r}; this simulator reads version {VERSION}")
        raw_ops = header.get("ops")
        if not isinstance(raw_ops, list):
            raise SimInputError(f"{src}: header 'ops' must be a list")
        ops: list = []
        for i, d in enumerate(raw_ops):
            if not isinstance(d, dict):
                raise SimInputError(f"{src}: op {i} must be a JSON object")
            where = _where(src, i, d.get("name"))
            name = d.get("name")
            if not isinstance(name, str) or not name:
                raise SimInputError(f"{where}: field 'name' must be a non-empty string")
            kind = d.get("type")
            if kind == "ternary_linear" and "host" in d:
                raise SimInputError(f"{where}: field 'host' is for dense and vector ops; a ternary_linear op "
                                    "runs on the MAC array")
            if kind == "ternary_linear":
                m, k, n = (_int_field(d, key, where) for key in ("m", "k", "n"))
                arrs = {}
                for key in ("weights_packed", "act_mask"):
                    entry = f"ops/{i}/{key}"
                    if entry not in files:
                        raise SimInputError(f"{where}: array '{entry}' is missing")
                    try:
                        arrs[key] = npz[entry]
                    except Exception as err:
                        raise SimInputError(f"{where}: array '{entry}' is unreadable: {err}") from None
                ops.append(TernaryLinearOp(name, m, k, n, arrs["weights_packed"], arrs["act_mask"],
                                           act_scale=_scale_field(d, "act_scale", where, n),
                                           weight_scale=_scale_field(d, "weight_scale", where, n)))
            elif kind == "dense":
                ops.append(DenseOp(name, *(_int_field(d, key, where) for key in ("m", "k", "n")),
                                   batch=_int_field({"batch": d.get("batch", 1)}, "batch", where),
                                   weights=_bool_field(d, "weights", where), host=_bool_field(d, "host", where)))
            elif kind == "vector":
                ops.append(VectorOp(name, d.get("kind"), _int_field(d, "elements", where, maximum=MAX_OP_WORK),
                                    _int_field({"row": d.get("row", 0)}, "row", where, minimum=0),
                                    host=_bool_field(d, "host", where)))
            else:
                raise SimInputError(f"{where}: field 'type' = {kind!r}; allowed: ternary_linear, dense, vector")
        meta = header.get("meta", {})
    return validate_trace(Trace(version, meta, ops), src)


# ---------------------------------------------------------------------------- synthetic traces

def random_ternary(n: int, k: int, zero_frac: float, rng: np.random.Generator) -> np.ndarray:
    """int8 ``[n, k]`` with about ``zero_frac`` zeros and +1/-1 equally likely otherwise."""
    u = rng.random((n, k), dtype=np.float32)
    w = np.where(u < zero_frac, 0, np.where(u < zero_frac + (1 - zero_frac) / 2, 1, -1))
    return w.astype(np.int8)


def topk_mask(m: int, k: int, sparsity: float, rng: np.random.Generator,
              natural_zero_frac: float = 0.0, banks: int | None = None) -> np.ndarray:
    """bool ``[m, k]``: per token keep ``ceil((1-s) k)`` channels (top-k of random magnitudes),
    then drop a further ``natural_zero_frac`` of the kept ones (values that round to int8 zero).

    With ``banks`` (top-k granularity ``bank``, docs/engine.md section 3) the top-k is taken in
    each bank's channel group ``{c : c mod banks = b}`` separately: ``ceil((1-s) * group size)``
    kept per group, from the same random magnitudes."""
    mags = rng.random((m, k), dtype=np.float32)
    mask = np.zeros((m, k), dtype=bool)
    if banks is None:
        keep = max(1, math.ceil((1.0 - sparsity) * k - 1e-9))
        idx = np.argpartition(-mags, keep - 1, axis=1)[:, :keep]
        np.put_along_axis(mask, idx, True, axis=1)
    else:
        if not 1 <= banks <= k:
            raise SimInputError(f"synthetic trace: banks = {banks}; allowed: 1 .. K = {k}")
        for b in range(banks):
            cols = np.arange(b, k, banks)
            keep = max(1, math.ceil((1.0 - sparsity) * len(cols) - 1e-9))
            idx = np.argpartition(-mags[:, cols], keep - 1, axis=1)[:, :keep]
            sub = np.zeros((m, len(cols)), dtype=bool)
            np.put_along_axis(sub, idx, True, axis=1)
            mask[:, cols] = sub
    if natural_zero_frac > 0:
        mask &= rng.random((m, k), dtype=np.float32) >= natural_zero_frac
    return mask


def ternary_linear_op(name: str, m: int, k: int, n: int, *, sparsity: float = 0.0,
                      weight_zero_frac: float = 1 / 3, rng: np.random.Generator,
                      natural_zero_frac: float = 0.0, banks: int | None = None) -> TernaryLinearOp:
    """A random ternary linear op (random weights, top-k activation mask; per bank with ``banks``)."""
    w = random_ternary(n, k, weight_zero_frac, rng)
    return TernaryLinearOp(name, m, k, n, pack_ternary2(w), topk_mask(m, k, sparsity, rng, natural_zero_frac, banks),
                           act_scale=0.05, weight_scale=0.02)


def synthetic_vit_trace(*, depth: int = 12, dim: int = 768, tokens: int = 257, heads: int = 12,
                        mlp_ratio: float = 4.0, sparsity: float = 0.0, weight_zero_frac: float = 1 / 3,
                        natural_zero_frac: float = 0.0, seed: int = 0, patch_size: int = 14,
                        in_chans: int = 3, granularity: str = "token", banks: int = 32) -> Trace:
    """A ViT query trace from random numbers (numpy only): the patch embedding (an int8-unit
    linear of ``tokens - 1`` patches x ``in_chans * patch_size**2`` -> D, ``weights: true``), then
    per pre-norm block:

    LN -> qkv (ternary) -> QK^T (dense) -> softmax -> AV (dense) -> proj (ternary) -> add ->
    LN -> fc1 (ternary) -> GELU -> fc2 (ternary) -> add; then the final LN.
    Defaults are ViT-B/14 at 224 px (12 blocks, D = 768, 16 x 16 patches + the class token =
    257 tokens, 12 heads, MLP 3072). No aggregation head. ``granularity`` ``token`` (top-k per
    token) or ``bank`` (per token within each of ``banks`` channel groups).
    """
    if granularity not in ("token", "bank"):
        raise SimInputError(f"synthetic trace: granularity {granularity!r}; allowed: token, bank")
    group_banks = banks if granularity == "bank" else None
    if dim % heads:
        raise SimInputError(f"synthetic trace: dim {dim} must be a multiple of heads {heads}")
    if not 0.0 <= sparsity < 1.0:
        raise SimInputError(f"synthetic trace: sparsity {sparsity} must be in [0, 1)")
    if not 0.0 <= weight_zero_frac <= 1.0:
        raise SimInputError(f"synthetic trace: weight_zero_frac {weight_zero_frac} must be in [0, 1]")
    rng = np.random.default_rng(seed)
    t, d, hd = tokens, dim, dim // heads
    hidden = int(round(dim * mlp_ratio))
    if patch_size < 1 or in_chans < 1:
        raise SimInputError(f"synthetic trace: patch_size {patch_size} and in_chans {in_chans} must be >= 1")
    ops: list = [DenseOp("patch_embed", max(1, t - 1), in_chans * patch_size ** 2, d, weights=True)]

    def lin(name: str, k: int, n: int) -> TernaryLinearOp:
        return ternary_linear_op(name, t, k, n, sparsity=sparsity, weight_zero_frac=weight_zero_frac,
                                 rng=rng, natural_zero_frac=natural_zero_frac, banks=group_banks)

    for b in range(depth):
        p = f"blocks.{b}."
        ops += [VectorOp(p + "norm1", "layernorm", t * d, d), lin(p + "attn.qkv", d, 3 * d),
                DenseOp(p + "attn.qk", t, hd, t, batch=heads),
                VectorOp(p + "attn.softmax", "softmax", heads * t * t, t),
                DenseOp(p + "attn.av", t, t, hd, batch=heads), lin(p + "attn.proj", d, d),
                VectorOp(p + "add1", "add", t * d), VectorOp(p + "norm2", "layernorm", t * d, d),
                lin(p + "mlp.fc1", d, hidden), VectorOp(p + "mlp.gelu", "gelu", t * hidden),
                lin(p + "mlp.fc2", hidden, d), VectorOp(p + "add2", "add", t * d)]
    ops.append(VectorOp("norm", "layernorm", t * d, d))
    meta = {"source": "synthetic", "model": f"synthetic-vit-d{dim}-L{depth}", "depth": depth, "dim": dim,
            "tokens": tokens, "heads": heads, "mlp_ratio": mlp_ratio, "patch_size": patch_size, "sparsity": sparsity,
            "weight_zero_frac": weight_zero_frac, "natural_zero_frac": natural_zero_frac, "seed": seed, "granularity": granularity,
            **({"banks": banks} if granularity == "bank" else {})}
    return Trace(VERSION, meta, ops)
