"""Bit-exact integer model of the ternary student's whole query (trunk, head, L2-normalised
descriptor): the arithmetic the accelerator does.

numpy only (it runs on the board's ARM cores as the golden model of the fabric). Every op
takes and returns integers; scales are fixed at export time (``tatvpr_hw.integer``) and
appear here only as integer multipliers and shifts. The rules (docs/integer.md):

- int8 requantisation ``sat((v * mult + 2**(shift-1)) >> shift)`` (arithmetic shift, round half
  up), ``mult < 2**31`` (the ternary IP's rule, :func:`tatvpr_pynq.formats.requantize`).
- residual stream: int16 at one scale ``s_res`` for the whole trunk, saturating adds.
- LayerNorm (vector unit): integer mean (floor), variance ``sum(d^2) // D + eps_q``, standard
  deviation in Q8 by an integer square root, one reciprocal per token ``2**47 // sd``, the
  normalised value in Q16, then per-channel ``(n * g + b + 2**(F+G-1)) >> (F+G)`` to int8.
- top-k (per token): the ``ceil((1 - s) * K)`` entries of largest ``|x|``, ties to the lower
  channel index.
- attention: ``q . k`` int32; softmax (vector unit) as ``2**(-u)`` with ``u`` in Q8 from one
  multiplier, a 256-entry ``2**(-f/256)`` table in Q15, one reciprocal per row, probabilities
  uint8 in units of 1/255; ``P . V`` int32 requantised to int8.
- GELU (vector unit): a 256-entry int8 -> int8 table (exact erf GELU, rounded once).
- the head (:class:`HeadQ`: BoQ, MixVPR, CLS; SALAD's MLPs): int8-unit GEMMs, the vector unit's
  ops above plus a ReLU table, an int16 -> int8 requantisation and the descriptor's L2 norm in Q15
  (:func:`l2norm_int`); SALAD's Sinkhorn part is host work in float (``Units.host``).
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .formats import quantize_multiplier, requantize

LN_F = 16          # fraction bits of the normalised value
LN_G = 10          # fraction bits of the per-channel LayerNorm gain
LN_SD_BITS = 8     # fraction bits of the standard deviation
SOFTMAX_U_BITS = 8  # fraction bits of the base-2 exponent
EXP2_Q = 15        # fraction bits of the 2**(-f/256) table
RES_MIN, RES_MAX = -32768, 32767


class IntegerModelError(ValueError):
    """Parameters or inputs the integer model cannot run (wrong shapes, ranges)."""


# ------------------------------------------------------------------------------ primitives
def sat(v: np.ndarray, lo: int, hi: int, dtype) -> np.ndarray:
    return np.clip(v, lo, hi).astype(dtype)


def requant_channels(v: np.ndarray, mult: np.ndarray, shift: np.ndarray, lo: int, hi: int,
                     dtype) -> np.ndarray:
    """Per-channel (last axis) ``sat((v * mult[c] + 2**(shift[c]-1)) >> shift[c])``."""
    v = np.asarray(v, np.int64)
    mult = np.asarray(mult, np.int64)
    shift = np.asarray(shift, np.int64)
    return sat((v * mult + (np.int64(1) << (shift - 1))) >> shift, lo, hi, dtype)


def isqrt(n: np.ndarray) -> np.ndarray:
    """Elementwise ``floor(sqrt(n))`` of non-negative int64 (exact: float guess, integer fix-up)."""
    n = np.asarray(n, np.int64)
    if (n < 0).any():
        raise IntegerModelError("isqrt of a negative number")
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > n, r - 1, r)
    r = np.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


@dataclass
class LayerNormQ:
    """Integer LayerNorm: residual int16 in, int8 out at the next layer's input scale."""

    gain: np.ndarray      # int64 [D]  round(gamma / s_out * 2**G)
    bias: np.ndarray      # int64 [D]  round(beta / s_out * 2**(F+G))
    eps_q: int            # round(eps / s_res**2)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.int64)
        d_ch = x.shape[-1]
        mu = x.sum(-1, keepdims=True) // d_ch
        d = x - mu
        var = (d * d).sum(-1, keepdims=True) // d_ch + self.eps_q
        sd = np.maximum(isqrt(var << (2 * LN_SD_BITS)), 1)
        inv = (np.int64(1) << np.int64(31 + LN_F)) // sd
        shift = 31 - LN_SD_BITS  # d * 2**(31+F) / (std * 2**SD) -> d / std * 2**F
        n = (d * inv + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
        fg = LN_F + LN_G
        y = (n * self.gain + self.bias + (np.int64(1) << np.int64(fg - 1))) >> np.int64(fg)
        return sat(y, -128, 127, np.int8)


def layernorm_params(gamma: np.ndarray, beta: np.ndarray, eps: float, s_res: float, s_out: float) -> LayerNormQ:
    gamma = np.asarray(gamma, np.float64)
    beta = np.asarray(beta, np.float64)
    return LayerNormQ(gain=np.rint(gamma / s_out * 2.0 ** LN_G).astype(np.int64),
                      bias=np.rint(beta / s_out * 2.0 ** (LN_F + LN_G)).astype(np.int64),
                      eps_q=int(round(eps / s_res ** 2)))


def topk_keep(k: int, sparsity: float) -> int:
    """Channels a row of ``k`` keeps at sparsity ``s``: ``ceil((1 - s) * K)`` (the vector unit's ``keep``)."""
    return math.ceil((1.0 - sparsity) * k - 1e-9)


def topk_int(x: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the ``ceil((1 - s) * K)`` largest ``|x|`` of every row, ties to the lower index."""
    x = np.asarray(x)
    k = x.shape[-1]
    keep = topk_keep(k, sparsity)
    if keep >= k:
        return x.copy()
    # stable sort on -|x|: equal magnitudes keep channel order, so ties go to the lower index
    order = np.argsort(-np.abs(x.astype(np.int64)), axis=-1, kind="stable")[..., :keep]
    out = np.zeros_like(x)
    np.put_along_axis(out, order, np.take_along_axis(x, order, axis=-1), axis=-1)
    return out


L2NORM_MAX_N = 65535
"""The longest vector the vector unit L2-normalises (``TATVPR_L2NORM_MAX_N``, hls/include/tatvpr_vector.h):
an int16 vector this long has ``sum(x^2) < 2**46``, so the Q8 square root's radicand stays below 2**62."""


def l2norm_int(x: np.ndarray) -> np.ndarray:
    """Integer vector ``x`` -> int16 ``x / ||x||`` in Q15 (the descriptor): ``n2 = sum(x^2)``,
    ``sd = max(1, isqrt(n2 * 2**16))`` (the norm in Q8), one reciprocal ``inv = 2**47 // sd``,
    ``y = sat16((x * inv + 2**23) >> 24)``; an all-zero ``x`` gives zeros. At most
    :data:`L2NORM_MAX_N` elements, as the vector unit."""
    x = np.asarray(x, np.int64).reshape(-1)
    if x.size > L2NORM_MAX_N:
        raise IntegerModelError(f"l2norm: {x.size} elements; the vector unit normalises at most {L2NORM_MAX_N}")
    n2 = int((x * x).sum())
    if n2 >= 2 ** 46:
        raise IntegerModelError(f"l2norm: sum of squares {n2} >= 2^46 (the Q8 square root would overflow)")
    sd = max(int(isqrt(np.array([n2 << 16]))[0]), 1)
    inv = np.int64((1 << 47) // sd)
    return sat((x * inv + (np.int64(1) << np.int64(23))) >> np.int64(24), RES_MIN, RES_MAX, np.int16)


L2_Q = 15  # fraction bits of the descriptor


EXP2_TABLE = np.array([round(2.0 ** EXP2_Q * 2.0 ** (-f / 2 ** SOFTMAX_U_BITS))
                       for f in range(2 ** SOFTMAX_U_BITS)], dtype=np.int64)


def softmax_int(scores: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """int32 scores (last axis) -> uint8 probabilities in units of 1/255.

    ``mult / 2**shift`` = ``s_score * log2(e) * 2**8``: ``u = (max - s) * that`` is the base-2
    exponent in Q8; ``e = table[u & 255] >> (u >> 8)``; ``p = (e * 255 * (2**32 // sum(e)) + 2**31) >> 32``.
    """
    s = np.asarray(scores, np.int64)
    z = s.max(-1, keepdims=True) - s
    u = (z * np.int64(mult) + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    whole = np.minimum(u >> SOFTMAX_U_BITS, 31)
    e = EXP2_TABLE[u & (2 ** SOFTMAX_U_BITS - 1)] >> whole
    r = (np.int64(1) << np.int64(32)) // e.sum(-1, keepdims=True)
    p = (e * 255 * r + (np.int64(1) << np.int64(31))) >> np.int64(32)
    return sat(p, 0, 255, np.uint8)


def gelu_table(s_in: float, s_out: float) -> np.ndarray:
    """int8 [256]: entry ``i + 128`` = ``sat8(round(gelu(i * s_in) / s_out))`` (exact erf GELU)."""
    vals = [0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in (np.arange(-128, 128) * s_in)]
    return sat(np.rint(np.array(vals) / s_out), -128, 127, np.int8)


def imatmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer ``a @ b`` (int64) through float64 BLAS: every partial sum is an integer below
    2**53 (2**24 for float32; checked), so the float result is exact and ~50x faster than numpy's int64 matmul."""
    a = np.asarray(a)
    b = np.asarray(b)
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * a.shape[-1]
    if bound >= 2.0 ** 53:
        return a.astype(np.int64) @ b.astype(np.int64)
    ft = np.float32 if bound < 2.0 ** 24 else np.float64
    return (a.astype(ft) @ b.astype(ft)).astype(np.int64)


def ternary_linear(x: np.ndarray, codes: np.ndarray, bias: np.ndarray | None, mult: int, shift: int) -> np.ndarray:
    """The ternary IP: int8 ``x[T, K]`` . ternary ``codes[N, K]`` + int32 bias -> int8 (its requant)."""
    acc = imatmul(x, np.asarray(codes).T)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    return requantize(acc, mult, shift)


# ------------------------------------------------------------------------------ the trunk
@dataclass
class LinearQ:
    """A ternary linear with its integer requantisation (bias in accumulator units)."""

    codes: np.ndarray     # int8 [N, K]
    bias: np.ndarray | None
    mult: int
    shift: int

    def __call__(self, x: np.ndarray, sparsity: float) -> np.ndarray:
        return ternary_linear(topk_int(x, sparsity), self.codes, self.bias, self.mult, self.shift)


@dataclass
class BlockQ:
    """One pre-norm ViT block in integers."""

    num_heads: int
    ln1: LayerNormQ
    qkv: LinearQ
    softmax_mult: int
    softmax_shift: int
    av_mult: int              # P . V (units 1/255 * s_qkv) -> proj's input scale
    av_shift: int
    proj: LinearQ
    res1_mult: np.ndarray     # per channel: ls1 * s_proj_out / s_res
    res1_shift: np.ndarray
    ln2: LayerNormQ
    fc1: LinearQ
    gelu: np.ndarray          # int8 [256]
    fc2: LinearQ
    res2_mult: np.ndarray
    res2_shift: np.ndarray

    def __call__(self, x: np.ndarray, sparsity: float, units: "Units | None" = None, name: str = "") -> np.ndarray:
        u = units or NUMPY_UNITS
        t, d = x.shape
        h = self.num_heads
        qkv = u.ternary(name + "qkv", self.qkv, u.layernorm(name + "norm1", self.ln1, x), sparsity)
        a = u.attention(name + "attn", qkv, h, self.softmax_mult, self.softmax_shift, self.av_mult, self.av_shift)
        y = u.ternary(name + "proj", self.proj, a, sparsity)
        x = u.add(name + "add1", x, y, self.res1_mult, self.res1_shift)
        y = u.ternary(name + "fc1", self.fc1, u.layernorm(name + "norm2", self.ln2, x), sparsity)
        y = u.ternary(name + "fc2", self.fc2, u.gelu(name + "gelu", self.gelu, y), sparsity)
        return u.add(name + "add2", x, y, self.res2_mult, self.res2_shift)


class Units:
    """The machine's units as the integer model calls them. This class computes them in numpy (the
    golden model); a subclass may run them elsewhere (the C simulation, the board's IP) and must
    return the same integers. ``name`` labels the op (e.g. ``blocks.3.fc1``)."""

    def layernorm(self, name: str, ln: LayerNormQ, x: np.ndarray) -> np.ndarray:
        return ln(x)

    def ternary(self, name: str, lin: LinearQ, x: np.ndarray, sparsity: float) -> np.ndarray:
        return lin(x, sparsity)

    def gemm(self, name: str, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *, out: str = "int32",
             mult: int = 0, shift: int = 0) -> np.ndarray:
        """The int8 unit: ``a[..., m, k] @ b[..., k, n]`` (+ bias), out int32 or requantised int8 / int16."""
        acc = imatmul(a, b)
        if bias is not None:
            acc = acc + np.asarray(bias, np.int64)
        if out == "int32":
            return acc
        lo, hi, dt = (-128, 127, np.int8) if out == "int8" else (RES_MIN, RES_MAX, np.int16)
        return sat((acc * np.int64(mult) + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift), lo, hi, dt)

    def softmax(self, name: str, scores: np.ndarray, mult: int, shift: int) -> np.ndarray:
        return softmax_int(scores, mult, shift)

    def attention(self, name: str, qkv: np.ndarray, heads: int, sm_mult: int, sm_shift: int, av_mult: int,
                  av_shift: int) -> np.ndarray:
        """A block's self-attention from the qkv projection's int8 output ``qkv[T, 3 D]`` (Q, K, V, each
        head-major) to the projection's int8 input ``[T, D]``: per head ``S = Q K^T`` (int32, the int8
        unit, op ``<name>.qk``), the softmax (the vector unit, ``<name>.softmax``), ``P V`` requantised to
        int8 (``<name>.av``). A backend may run it as one call (the int8 IP's fused attention,
        ``tatvpr_attention``, schedule.attention: fused) and must return the same integers."""
        t, d3 = qkv.shape
        d = d3 // 3
        q, k, v = (np.asarray(qkv).reshape(t, 3, heads, d // heads)[:, i].transpose(1, 0, 2) for i in range(3))
        scores = self.gemm(name + ".qk", q, k.transpose(0, 2, 1))
        p = self.softmax(name + ".softmax", scores.reshape(heads * t, t), sm_mult, sm_shift).reshape(heads, t, t)
        a = self.gemm(name + ".av", p, v, out="int8", mult=av_mult, shift=av_shift)
        return a.transpose(1, 0, 2).reshape(t, d)

    def gelu(self, name: str, table: np.ndarray, x: np.ndarray) -> np.ndarray:
        return table[np.asarray(x, np.int64) + 128]

    def add(self, name: str, x: np.ndarray, y: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
        return sat(np.asarray(x, np.int64) + requant_channels(y, mult, shift, RES_MIN, RES_MAX, np.int64),
                   RES_MIN, RES_MAX, np.int16)

    def requant(self, name: str, x: np.ndarray, mult: int, shift: int) -> np.ndarray:
        """Vector unit: per-tensor ``sat8((x * mult + 2**(shift-1)) >> shift)`` of int16 ``x``
        (the head's int8 input from the int16 residual stream; ``tatvpr_requant`` in HLS)."""
        return requantize(x, mult, shift)

    def l2norm(self, name: str, x: np.ndarray) -> np.ndarray:
        """Vector unit: the L2-normalised descriptor in Q15 (:func:`l2norm_int`; ``tatvpr_l2norm`` in HLS)."""
        return l2norm_int(x)

    def host(self, name: str, fn, *arrays):
        """Work on the host in float (SALAD's Sinkhorn): ``fn(*arrays)``; on every backend the ARM cores."""
        return fn(*arrays)

    def topk_schedule(self, name: str, x: np.ndarray, sparsity: float, simd: int,
                      banks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A ternary linear's input as the act stream of a ternary IP of ``simd`` lanes and ``banks``
        banks: ``schedule_activations(topk_int(x, s), simd, banks)`` (``tok_chunks``, ``pairs``); the
        vector unit's ``tatvpr_topk_schedule`` in HLS (docs/engine.md section 5)."""
        from .formats import schedule_activations

        return schedule_activations(topk_int(x, sparsity), simd, banks)

    def vector_chain(self, name: str, *, x16: np.ndarray | None = None, x8: np.ndarray | None = None,
                     add: tuple | None = None, ln: LayerNormQ | None = None, gelu_table: np.ndarray | None = None,
                     sparsity: float | None = None, simd: int | None = None,
                     banks: int | None = None) -> tuple[np.ndarray | None, object]:
        """A run of a token row's vector ops as one call (schedule.vector_chain: fused; the vector IP's
        ``tatvpr_chain``): ``add = (mult, shift)``: ``x16 + requant(x8)`` (the residual stream, returned),
        then ``ln`` of it (or of ``x16``) or ``gelu_table`` of ``x8``, then with ``sparsity`` the next
        linear's top-k: the act stream ``(tok_chunks, pairs)`` of a ``simd`` / ``banks`` IP, or with
        ``simd`` None the kept values in place. Returns ``(residual int16 | None, out)``; the integers are
        the split ops' (:meth:`add`, :meth:`layernorm` / :meth:`gelu`, :func:`topk_int`)."""
        res = None
        if add is not None:
            res = self.add(name + ".add", x16, x8, add[0], add[1])
        y = self.layernorm(name + ".norm", ln, res if res is not None else x16) if ln is not None else \
            self.gelu(name + ".gelu", gelu_table, x8)
        if sparsity is None:
            return res, y
        if simd is None:
            return res, topk_int(y, sparsity)
        return res, self.topk_schedule(name + ".topk", y, sparsity, simd, banks)


NUMPY_UNITS = Units()


def op_shape(op: str, *args) -> dict:
    """What the simulator charges for one ``Units`` call: ``unit`` and, for the int8 unit, ``m, k, n,
    batch``; for the vector unit, ``kind`` (``layernorm``, ``softmax``, ``add``, ``lut`` = GELU / ReLU
    table, ``requant``, ``l2norm``), ``elements`` and ``row`` (elements per row; 0: none; the L2 norm
    is one row: the whole vector, one square root and one reciprocal)."""
    if op == "gemm":
        a, b = np.asarray(args[0]), np.asarray(args[1])
        return {"unit": "int8", "m": int(a.shape[-2]), "k": int(a.shape[-1]), "n": int(b.shape[-1]),
                "batch": int(a.shape[0]) if a.ndim == 3 else 1}
    if op == "ternary":
        x, lin = np.asarray(args[0]), args[1]
        return {"unit": "ternary", "m": int(x.shape[0]), "k": int(x.shape[-1]), "n": int(lin.codes.shape[0])}
    if op == "topk":  # a ternary linear's input top-k'd and bank-scheduled: M rows of K
        x = np.asarray(args[0])
        return {"unit": "vector", "kind": "topk", "elements": int(x.size), "row": int(x.shape[-1])}
    x = np.asarray(args[0])
    row = int(x.shape[-1]) if op in ("layernorm", "softmax") else int(x.size) if op == "l2norm" else 0
    return {"unit": "vector", "kind": {"gelu": "lut"}.get(op, op), "elements": int(x.size), "row": row}


class RecordingUnits(Units):
    """The numpy units, listing every call in ``ops`` ({name, unit, shape fields}, :func:`op_shape`)."""

    def __init__(self) -> None:
        self.ops: list[dict] = []

    def _rec(self, name, op, *args):
        self.ops.append({"name": name, **op_shape(op, *args)})

    def layernorm(self, name, ln, x):
        self._rec(name, "layernorm", x)
        return super().layernorm(name, ln, x)

    def ternary(self, name, lin, x, sparsity):
        self._rec(name, "ternary", x, lin)
        return super().ternary(name, lin, x, sparsity)

    def gemm(self, name, a, b, bias=None, *, out="int32", mult=0, shift=0):
        self._rec(name, "gemm", a, b)
        return super().gemm(name, a, b, bias, out=out, mult=mult, shift=shift)

    def softmax(self, name, scores, mult, shift):
        self._rec(name, "softmax", scores)
        return super().softmax(name, scores, mult, shift)

    def gelu(self, name, table, x):
        self._rec(name, "gelu", x)
        return super().gelu(name, table, x)

    def add(self, name, x, y, mult, shift):
        self._rec(name, "add", x)
        return super().add(name, x, y, mult, shift)

    def requant(self, name, x, mult, shift):
        self._rec(name, "requant", x)
        return super().requant(name, x, mult, shift)

    def l2norm(self, name, x):
        self._rec(name, "l2norm", x)
        return super().l2norm(name, x)

    def host(self, name, fn, *arrays):
        self.ops.append({"name": name, "unit": "host"})
        return super().host(name, fn, *arrays)


@dataclass
class TrunkQ:
    """Patch embedding (int8 unit), position embedding, blocks, optional final LayerNorm."""

    patch: int
    img_scale: float              # float image -> int8: x / img_scale
    embed_w: np.ndarray           # int8 [D, 3 * patch * patch] (channel, row, column order)
    embed_bias: np.ndarray        # int64 [D], accumulator units
    embed_mult: int               # acc -> residual int16
    embed_shift: int
    prefix: np.ndarray            # int16 [P, D]: class/register tokens + their position embedding
    pos: np.ndarray               # int16 [h*w, D]: patch position embedding
    blocks: list[BlockQ]
    res_scale: float              # s_res (float; only to hand tokens to a float head)
    norm: LayerNormQ | None = None
    norm_scale: float = 1.0       # int8 step of the final norm's output
    meta: dict = field(default_factory=dict)

    def quantize_image(self, img: np.ndarray) -> np.ndarray:
        """Normalised float image [3, H, W] -> int8 (the sensor interface's quantiser)."""
        return sat(np.rint(np.asarray(img, np.float64) / self.img_scale), -128, 127, np.int8)

    def patches(self, img_q: np.ndarray) -> np.ndarray:
        c, hgt, wid = img_q.shape
        p = self.patch
        if c != 3 or hgt % p or wid % p:
            raise IntegerModelError(f"image must be [3, H, W] with H, W multiples of {p}, got {img_q.shape}")
        g = img_q.reshape(3, hgt // p, p, wid // p, p).transpose(1, 3, 0, 2, 4)
        return g.reshape((hgt // p) * (wid // p), 3 * p * p)

    def tokens(self, img_q: np.ndarray, sparsity: float, units: Units | None = None) -> np.ndarray:
        """int8 image [3, H, W] -> residual int16 tokens [P + h*w, D] after the last block
        (``units``: where each op runs; default numpy)."""
        u = units or NUMPY_UNITS
        pt = self.patches(img_q)
        if pt.shape[0] != self.pos.shape[0]:
            raise IntegerModelError(f"image gives {pt.shape[0]} patches; the model was exported for "
                                    f"{self.pos.shape[0]}")
        e = u.gemm("patch_embed", pt, self.embed_w.T, self.embed_bias, out="int16", mult=self.embed_mult,
                   shift=self.embed_shift)
        # position embedding (host): saturating int16 add
        x = sat(np.concatenate([self.prefix.astype(np.int64), e.astype(np.int64) + self.pos], axis=0),
                RES_MIN, RES_MAX, np.int16)
        for i, blk in enumerate(self.blocks):
            x = blk(x, sparsity, u, f"blocks.{i}.")
        return x

    def features(self, img: np.ndarray, sparsity: float) -> np.ndarray:
        """Float image -> the float tokens the head consumes (dequantised at the trunk's output)."""
        x = self.tokens(self.quantize_image(img), sparsity)
        if self.norm is not None:
            return self.norm(x).astype(np.float64) * self.norm_scale
        return x.astype(np.float64) * self.res_scale


# ------------------------------------------------------------------------------ files
def _mult_shift(real: float) -> tuple[int, int]:
    return quantize_multiplier(real)


def save_trunk(path, trunk: TrunkQ) -> None:
    """Write ``trunk`` as one ``.npz`` of plain integer arrays (``allow_pickle=False`` to load)."""
    a: dict[str, np.ndarray] = {
        "patch": np.array(trunk.patch), "img_scale": np.array(trunk.img_scale),
        "embed_w": trunk.embed_w, "embed_bias": trunk.embed_bias,
        "embed_ms": np.array([trunk.embed_mult, trunk.embed_shift]), "prefix": trunk.prefix, "pos": trunk.pos,
        "res_scale": np.array(trunk.res_scale), "num_blocks": np.array(len(trunk.blocks)),
        "norm_scale": np.array(trunk.norm_scale)}
    if trunk.norm is not None:
        a.update(norm_gain=trunk.norm.gain, norm_bias=trunk.norm.bias, norm_eps=np.array(trunk.norm.eps_q))
    for i, b in enumerate(trunk.blocks):
        p = f"b{i}_"
        a[p + "scalars"] = np.array([b.num_heads, b.softmax_mult, b.softmax_shift, b.av_mult, b.av_shift])
        for name in ("ln1", "ln2"):
            ln: LayerNormQ = getattr(b, name)
            a[p + name + "_gain"], a[p + name + "_bias"] = ln.gain, ln.bias
            a[p + name + "_eps"] = np.array(ln.eps_q)
        for name in ("qkv", "proj", "fc1", "fc2"):
            lin: LinearQ = getattr(b, name)
            a[p + name + "_codes"] = lin.codes.astype(np.int8)
            a[p + name + "_ms"] = np.array([lin.mult, lin.shift])
            if lin.bias is not None:
                a[p + name + "_bias"] = lin.bias
        for name in ("res1", "res2"):
            a[p + name + "_mult"] = getattr(b, name + "_mult")
            a[p + name + "_shift"] = getattr(b, name + "_shift")
        a[p + "gelu"] = b.gelu
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **a)
    os.replace(tmp, path)


def load_trunk(path) -> TrunkQ:
    """Inverse of :func:`save_trunk`; a missing or foreign array raises :class:`IntegerModelError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            z = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise IntegerModelError(f"{path}: not an integer-model file ({exc})") from exc
    try:
        blocks = []
        for i in range(int(z["num_blocks"])):
            p = f"b{i}_"
            nh, sm, ss, am, ash = (int(v) for v in z[p + "scalars"])

            def ln(name, p=p):
                return LayerNormQ(z[p + name + "_gain"], z[p + name + "_bias"], int(z[p + name + "_eps"]))

            def lin(name, p=p):
                m, s = (int(v) for v in z[p + name + "_ms"])
                return LinearQ(z[p + name + "_codes"], z.get(p + name + "_bias"), m, s)

            blocks.append(BlockQ(nh, ln("ln1"), lin("qkv"), sm, ss, am, ash, lin("proj"),
                                 z[p + "res1_mult"], z[p + "res1_shift"], ln("ln2"), lin("fc1"), z[p + "gelu"],
                                 lin("fc2"), z[p + "res2_mult"], z[p + "res2_shift"]))
        norm = (LayerNormQ(z["norm_gain"], z["norm_bias"], int(z["norm_eps"])) if "norm_gain" in z else None)
        em, es = (int(v) for v in z["embed_ms"])
        return TrunkQ(patch=int(z["patch"]), img_scale=float(z["img_scale"]), embed_w=z["embed_w"],
                      embed_bias=z["embed_bias"], embed_mult=em, embed_shift=es, prefix=z["prefix"], pos=z["pos"],
                      blocks=blocks, res_scale=float(z["res_scale"]), norm=norm, norm_scale=float(z["norm_scale"]))
    except KeyError as exc:
        raise IntegerModelError(f"{path}: integer-model file lacks the array {exc.args[0]!r}") from exc


# ------------------------------------------------------------------------------ the head
# The aggregation head in integers (issue 15 item 1). Every linear, convolution (as im2col) and
# attention product runs on the int8 unit (``Units.gemm``: int8 weights per tensor, bias in
# accumulator units, int8 / int16 out), LayerNorm / softmax / residual adds on the vector unit as
# in the trunk, ReLU on the vector unit's activation table (``Units.gelu`` with a ReLU table), the
# head's int8 input from the int16 residual stream (BoQ, MixVPR) by ``Units.requant``, and the
# descriptor by ``Units.l2norm`` (Q15). A head is a flat dict of integer arrays keyed by op name
# (``head.boqs.0.encoder.linear1.w`` ...), saved with ``save_head_q``. docs/integer.md.
HEAD_Q_KINDS = ("boq", "cls", "mixvpr", "salad")


def im2col3x3(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Tokens ``x [h*w, C]`` (row-major grid) -> ``[h*w, C*9]`` 3x3 patches, zero padding 1, in the
    order of a ``[O, C, 3, 3]`` convolution weight flattened to ``[O, C*9]`` (host / data mover)."""
    c = x.shape[1]
    xp = np.zeros((h + 2, w + 2, c), x.dtype)
    xp[1:-1, 1:-1] = x.reshape(h, w, c)
    cols = np.stack([xp[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)  # [h, w, C, 9]
    return cols.reshape(h * w, c * 9)


def _ms(p: dict, key: str) -> tuple[int, int]:
    m, s = (int(v) for v in p[key])
    return m, s


def _lin(u: Units, p: dict, name: str, x: np.ndarray) -> np.ndarray:
    """An int8-unit linear: ``x [M, K] . w [K, N] + b`` requantised to ``p[name.out]`` (int8 / int16)."""
    m, s = _ms(p, name + ".ms")
    return u.gemm(name, x, p[name + ".w"], p.get(name + ".b"), out=str(p[name + ".out"]), mult=m, shift=s)


def _lnq(p: dict, name: str) -> LayerNormQ:
    return LayerNormQ(p[name + ".gain"], p[name + ".bias"], int(p[name + ".eps"]))


def _mha_q(u: Units, p: dict, pre: str, q_in: np.ndarray, kv_in: np.ndarray | None, heads: int) -> np.ndarray:
    """``nn.MultiheadAttention`` (one sample) on int8 inputs; ``kv_in`` None: self-attention with one
    ``in_proj`` GEMM, else ``q_proj`` and ``kv_proj``. Returns ``out_proj``'s output (int16)."""
    e = q_in.shape[-1]
    hd = e // heads
    if kv_in is None:
        qkv = _lin(u, p, pre + "in_proj", q_in)
        q, k, v = qkv[:, :e], qkv[:, e:2 * e], qkv[:, 2 * e:]
    else:
        q = _lin(u, p, pre + "q_proj", q_in)
        kv = _lin(u, p, pre + "kv_proj", kv_in)
        k, v = kv[:, :e], kv[:, e:]

    def split(t):
        return np.ascontiguousarray(t.reshape(t.shape[0], heads, hd).transpose(1, 0, 2))

    sc = u.gemm(pre + "qk", split(q), split(k).transpose(0, 2, 1))                       # int32 [h, L, S]
    m, s = _ms(p, pre + "softmax.ms")
    pr = u.softmax(pre + "softmax", sc.reshape(-1, sc.shape[-1]), m, s).reshape(sc.shape)
    m, s = _ms(p, pre + "av.ms")
    a = u.gemm(pre + "av", pr, split(v), out="int8", mult=m, shift=s)                     # [h, L, hd]
    return _lin(u, p, pre + "out_proj", a.transpose(1, 0, 2).reshape(q_in.shape[0], e))


def _add_ln(u: Units, p: dict, add: str, ln: str, y16: np.ndarray, x8: np.ndarray) -> np.ndarray:
    """Post-norm residual: ``LN(y + x)`` with ``y`` int16 (a GEMM's int16 output) and ``x`` int8."""
    r = u.add(add, y16, x8, p[add + ".mult"], p[add + ".shift"])
    return u.layernorm(ln, _lnq(p, ln), r)


def _boq_q(u: Units, p: dict, tokens: np.ndarray) -> np.ndarray:
    n_pre = int(p["num_prefix_tokens"])
    gh, gw = (int(v) for v in p["grid_hw"])
    heads = int(p["num_heads"])
    m, s = _ms(p, "head.input.ms")
    x = u.requant("head.input", tokens[n_pre:], m, s)                                     # int8 [hw, D]
    x = _lin(u, p, "head.proj_c", im2col3x3(x, gh, gw))                                    # int16 [hw, P]
    x = u.layernorm("head.norm_input", _lnq(p, "head.norm_input"), x)
    outs = []
    for i in range(int(p["num_layers"])):
        pre = f"head.boqs.{i}."
        e = pre + "encoder."
        x1 = _add_ln(u, p, e + "add1", e + "norm1", _mha_q(u, p, e + "self_attn.", x, None, heads), x)
        f = u.gelu(e + "relu", p[e + "relu.table"], _lin(u, p, e + "linear1", x1))
        x = _add_ln(u, p, e + "add2", e + "norm2", _lin(u, p, e + "linear2", f), x1)
        q0 = p[pre + "queries"]
        q = _add_ln(u, p, pre + "add", pre + "norm_q", _mha_q(u, p, pre + "self_attn.", q0, None, heads), q0)
        o = _mha_q(u, p, pre + "cross_attn.", q, x, heads)
        outs.append(u.layernorm(pre + "norm_out", _lnq(p, pre + "norm_out"), o))
    q = np.concatenate(outs, axis=0)                                                      # int8 [L*Q, P]
    return _lin(u, p, "head.fc", np.ascontiguousarray(q.T)).reshape(-1)                   # int16 [P * row]


def _mixvpr_q(u: Units, p: dict, tokens: np.ndarray) -> np.ndarray:
    n_pre = int(p["num_prefix_tokens"])
    x = np.ascontiguousarray(tokens[n_pre:].T).astype(np.int16)   # final norm's int8 as int16, [D, hw]
    for i in range(int(p["mix_depth"])):
        pre = f"head.mix.{i}."
        f = u.layernorm(pre + "mix.0", _lnq(p, pre + "mix.0"), x)
        f = u.gelu(pre + "mix.2", p[pre + "mix.2.table"], _lin(u, p, pre + "mix.1", f))
        x = u.add(pre + "add", x, _lin(u, p, pre + "mix.3", f), p[pre + "add.mult"], p[pre + "add.shift"])
    m, s = _ms(p, "head.mix_out.ms")
    x = u.requant("head.mix_out", x, m, s)                                                # int8 [D, hw]
    c = _lin(u, p, "head.channel_proj", np.ascontiguousarray(x.T))                        # int8 [hw, out_c]
    return _lin(u, p, "head.row_proj", np.ascontiguousarray(c.T)).reshape(-1)             # int16 [out_c * rows]


def _cls_q(u: Units, p: dict, tokens: np.ndarray) -> np.ndarray:
    if int(p["num_prefix_tokens"]) < 1:
        raise IntegerModelError("the CLS head needs a class token (num_prefix_tokens >= 1)")
    return tokens[0]


def _salad_q(u: Units, p: dict, tokens: np.ndarray) -> np.ndarray:
    """SALAD: the three MLPs on the int8 unit (1x1 convolutions as linears over the patch tokens,
    ReLU tables), their int16 outputs dequantised, then the Sinkhorn assignment, aggregation and
    normalisation on the host in float64 (``tatvpr_pynq.heads.salad_aggregate``): no fixed-point
    ``logsumexp`` exists on the vector unit. Returns the L2-normalised float64 descriptor."""
    from .heads import l2_normalize, salad_aggregate

    n_pre = int(p["num_prefix_tokens"])
    if n_pre < 1:
        raise IntegerModelError("the SALAD head needs a class token (num_prefix_tokens >= 1)")
    x = tokens[n_pre:]                                                                     # int8 [n, D]

    def mlp(pre, a, mid, last):
        h = u.gelu(pre + mid, p[pre + mid + ".table"], _lin(u, p, pre + "0", a))
        return _lin(u, p, pre + last, h)

    f = mlp("head.cluster_features.", x, "2", "3")                                         # int16 [n, l]
    sc = mlp("head.score.", x, "2", "3")                                                   # int16 [n, m]
    g = mlp("head.token_features.", tokens[:1], "1", "2")[0]                               # int16 [g]
    sf, ss, sg = (float(p[k]) for k in ("head.cluster_features.3.step", "head.score.3.step",
                                        "head.token_features.2.step"))

    def tail(f, sc, g):
        return l2_normalize(salad_aggregate(f.T * sf, sc.T * ss, g * sg, float(p["dust_bin"]),
                                            int(p["sinkhorn_iters"])))

    return u.host("head.sinkhorn", tail, np.asarray(f, np.float64), np.asarray(sc, np.float64),
                  np.asarray(g, np.float64))


_HEAD_Q = {"boq": _boq_q, "cls": _cls_q, "mixvpr": _mixvpr_q, "salad": _salad_q}


@dataclass
class HeadQ:
    """An integer aggregation head: ``p`` holds its integer arrays and shape scalars."""

    p: dict

    @property
    def kind(self) -> str:
        return str(self.p["kind"])

    @property
    def uses_final_norm(self) -> bool:
        return bool(int(self.p["uses_final_norm"]))

    def __call__(self, tokens: np.ndarray, units: Units | None = None) -> np.ndarray:
        """The trunk's tokens (int16 residual stream, or the final norm's int8 when the head uses it)
        -> the int16 descriptor in Q15 (``/ 2**15`` is the L2-normalised float descriptor); SALAD:
        the float64 descriptor its host part computes."""
        u = units or NUMPY_UNITS
        if self.kind not in _HEAD_Q:
            raise IntegerModelError(f"integer head kind {self.kind!r}; implemented: {', '.join(HEAD_Q_KINDS)}")
        gh, gw = (int(v) for v in self.p["grid_hw"])
        n_pre = int(self.p["num_prefix_tokens"])
        if tokens.ndim != 2 or tokens.shape[0] != n_pre + gh * gw:
            raise IntegerModelError(f"head input must be [{n_pre} + {gh}*{gw}, D] tokens, got {tokens.shape}")
        d = _HEAD_Q[self.kind](u, self.p, tokens)
        return d if self.kind == "salad" else u.l2norm("head.l2norm", d)


def query_descriptor(trunk: TrunkQ, head: HeadQ, img_q: np.ndarray, sparsity: float,
                     units: Units | None = None) -> np.ndarray:
    """The whole query in integers: int8 image -> trunk -> final LayerNorm (heads that use it) ->
    integer head -> int16 descriptor in Q15."""
    u = units or NUMPY_UNITS
    # units that schedule the trunk themselves (PynqUnits: the design point's pipelined issue) do so
    x = u.trunk_tokens(trunk, img_q, sparsity) if hasattr(u, "trunk_tokens") else trunk.tokens(img_q, sparsity, u)
    if head.uses_final_norm:
        if trunk.norm is None:
            raise IntegerModelError(f"the {head.kind} head uses the final LayerNorm; the trunk has none")
        x = u.layernorm("norm", trunk.norm, x)
    return head(x, u)


def descriptor_float(desc_q: np.ndarray) -> np.ndarray:
    """The Q15 descriptor as float64 (unit L2 norm up to the Q15 rounding); a float descriptor (SALAD's
    host part) as it is."""
    d = np.asarray(desc_q)
    return d.astype(np.float64) if d.dtype.kind == "f" else d.astype(np.float64) / 2.0 ** L2_Q


def save_head_q(path, head: HeadQ) -> None:
    """Write ``head`` as one ``.npz`` of plain arrays (``allow_pickle=False`` to load)."""
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in head.p.items()})
    os.replace(tmp, path)


def load_head_q(path) -> HeadQ:
    try:
        with np.load(path, allow_pickle=False) as z:
            p = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise IntegerModelError(f"{path}: not an integer-head file ({exc})") from exc
    for key in ("kind", "num_prefix_tokens", "grid_hw", "uses_final_norm"):
        if key not in p:
            raise IntegerModelError(f"{path}: integer-head file lacks the array {key!r}")
    if str(p["kind"]) not in _HEAD_Q:
        raise IntegerModelError(f"{path}: integer head kind {str(p['kind'])!r}; implemented: "
                                f"{', '.join(HEAD_Q_KINDS)}")
    return HeadQ(p)
