"""C simulation of the vector-unit and int8-unit kernels (``hls/src/tatvpr_vector.cpp``,
``hls/src/tatvpr_int8.cpp``, the int8 IP's fused attention ``hls/src/tatvpr_attention.cpp``) against the
integer model.

    >>> exe = build_unit_csim(build_dir, lanes=16)
    >>> res = run_unit_ops(exe, [UnitCall("layernorm", ...)], work_dir)

Each call writes one ``TVPRVEC1`` file, the testbench runs the real kernel and writes its
output and its counted element-loop iterations, the rows it ran per-row steps for and those
steps' cycles (square root and reciprocal steps, one cycle each): ``cycles = element_cycles +
row_cycles`` is the simulator's vector-unit cycles without the pipeline depth.
"""

from __future__ import annotations

import os
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls.csim import cached_build, compiler
from tatvpr_hw.lower.hls.paths import ap_types_dir, driver_package, hls_dir

_SOURCES = ("include/tatvpr_vector.h", "include/tatvpr_exp2_table.inc", "src/tatvpr_vector.cpp",
            "include/tatvpr_int8.h", "src/tatvpr_int8.cpp", "include/tatvpr_attention.h", "src/tatvpr_attention.cpp",
            "include/tatvpr_chain.h", "src/tatvpr_chain.cpp", "tb/tb_units.cpp")
OPS = {"layernorm": 1, "softmax": 2, "gelu": 3, "add": 4, "gemm": 5, "requant": 6, "l2norm": 7, "topk": 8,
       "topk_dense": 9, "attention": 10, "chain": 11}
# the chain's steps (hls/include/tatvpr_chain.h TATVPR_CHAIN_*)
CHAIN_FLAGS = {"add": 1, "layernorm": 2, "gelu": 4, "topk": 8, "topk_dense": 16, "write_res": 32}
_OUT_DTYPE = {"layernorm": np.int8, "softmax": np.uint8, "gelu": np.int8, "add": np.int16, "requant": np.int8,
              "l2norm": np.int16, "topk_dense": np.int8}
GEMM_OUT = {"int32": (0, np.int32), "int8": (1, np.int8), "int16": (2, np.int16)}


@dataclass
class UnitCall:
    """One kernel call: ``op`` name, int64 ``params`` and the input arrays in the file's order."""

    op: str
    params: list[int]
    arrays: list[np.ndarray] = field(default_factory=list)
    shape: tuple[int, ...] = ()
    out_dtype: object = None


@dataclass
class UnitResult:
    out: np.ndarray  # topk: the act stream (tok_chunks uint16 [M], pairs uint32)
    element_cycles: int
    row_ops: int
    row_cycles: int = 0
    int8_cycles: int = 0  # attention: the array's counted cycles (QK^T + P.V); the others: its softmax lanes'

    @property
    def cycles(self) -> int:
        """Every counted cycle of the unit: element-loop iterations and per-row steps."""
        return self.element_cycles + self.row_cycles


def layernorm_call(ln, x: np.ndarray) -> UnitCall:
    """``tatvpr_pynq.integer.LayerNormQ`` on int16 ``x[T, D]``."""
    t, d = x.shape
    return UnitCall("layernorm", [t, d, int(ln.eps_q)],
                      [np.asarray(ln.gain, "<i8"), np.asarray(ln.bias, "<i8"), np.asarray(x, "<i2")], (t, d))


def softmax_call(scores: np.ndarray, mult: int, shift: int) -> UnitCall:
    rows, n = scores.shape
    return UnitCall("softmax", [rows, n, mult, shift], [np.asarray(scores, "<i4")], (rows, n))


def gelu_call(table: np.ndarray, x: np.ndarray) -> UnitCall:
    return UnitCall("gelu", [x.size], [np.asarray(table, "i1"), np.asarray(x, "i1").ravel()], x.shape)


def add_call(x: np.ndarray, y: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> UnitCall:
    t, d = x.shape
    return UnitCall("add", [t, d], [np.asarray(mult, "<i4"), np.asarray(shift, "<i4"), np.asarray(x, "<i2"),
                                      np.asarray(y, "i1")], (t, d))


def _int16(x: np.ndarray, op: str) -> None:
    if x.size and (int(x.min()) < -32768 or int(x.max()) > 32767):
        raise UserError(f"{op}: the vector unit's input is int16; values span [{x.min()}, {x.max()}]")


def requant_call(x: np.ndarray, mult: int, shift: int) -> UnitCall:
    """The head's per-tensor int16 -> int8 requantisation (``tatvpr_pynq.integer.Units.requant``)."""
    x = np.asarray(x)
    if not (0 <= int(mult) < 2 ** 31 and 1 <= int(shift) <= 62):
        raise UserError(f"requant: mult must be in [0, 2^31) and shift in [1, 62], got {mult}, {shift}")
    _int16(x, "requant")
    return UnitCall("requant", [x.size, int(mult), int(shift)], [np.asarray(x, "<i2").ravel()], x.shape)


def l2norm_call(x: np.ndarray) -> UnitCall:
    """The descriptor's L2 normalisation in Q15 (``tatvpr_pynq.integer.l2norm_int``) of int16 ``x``."""
    driver_package()
    from tatvpr_pynq.integer import L2NORM_MAX_N

    x = np.asarray(x)
    if not 1 <= x.size <= L2NORM_MAX_N:
        raise UserError(f"l2norm: {x.size} elements; the vector unit normalises 1 to {L2NORM_MAX_N}")
    _int16(x, "l2norm")
    return UnitCall("l2norm", [x.size], [np.asarray(x, "<i2").ravel()], (x.size,))


def topk_keep(k: int, sparsity: float) -> int:
    """Channels a row keeps: ``ceil((1 - s) K)`` (``tatvpr_pynq.integer.topk_keep``, ``topk_int``'s count)."""
    driver_package()
    from tatvpr_pynq.integer import topk_keep as keep

    return keep(k, sparsity)


def topk_call(x: np.ndarray, keep: int, *, stream: bool = True) -> UnitCall:
    """The vector unit's top-k of int8 ``x[M, K]`` (``keep`` channels a row, ties to the lower index) and,
    with ``stream``, the bank scheduling of the ternary IP it serves (the build's ``simd`` / ``banks``):
    the act stream of ``tatvpr_pynq.formats.schedule_activations(topk_int(x, s), simd, banks)``;
    without, the kept values in place (int8 ``[M, K]``)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.int8 or x.size == 0:
        raise UserError(f"topk: the input must be a non-empty int8 [M, K] array, got {x.dtype} {x.shape}")
    if not 0 <= int(keep) <= 1 << 30:
        raise UserError(f"topk: keep = {keep} must be in [0, 2^30]")
    op = "topk" if stream else "topk_dense"
    return UnitCall(op, [x.shape[0], x.shape[1], int(keep)], [np.ascontiguousarray(x).ravel()], x.shape)


def gemm_call(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *, out: str = "int32",
              mult: int = 0, shift: int = 0) -> UnitCall:
    """int8-unit GEMM of ``a[batch, m, k]`` (int8 or uint8 values) and int8 ``b[batch, k, n]``."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim == 2:
        a, b = a[None], b[None]
    batch, m, k = a.shape
    n = b.shape[-1]
    mode, _ = GEMM_OUT[out]
    arrays = [a.astype("<i2"), b.astype("i1"), np.zeros(0, "<i4") if bias is None else np.asarray(bias, "<i4")]
    return UnitCall("gemm", [batch, m, k, n, mode, mult, shift], arrays, (batch, m, n), GEMM_OUT[out][1])


def attention_call(qkv: np.ndarray, heads: int, sm_mult: int, sm_shift: int, av_mult: int, av_shift: int) -> UnitCall:
    """The int8 IP's fused attention (``tatvpr_attention``) of a block: ``qkv[T, 3 D]`` int8 (the qkv
    projection's output), ``heads`` heads -> int8 ``[T, D]`` (``tatvpr_pynq.integer.Units.attention``)."""
    qkv = np.asarray(qkv)
    if qkv.ndim != 2 or qkv.dtype != np.int8 or qkv.shape[1] % (3 * heads):
        raise UserError(f"attention: qkv must be int8 [T, 3 D] with D a multiple of {heads} heads, got "
                        f"{qkv.dtype} {qkv.shape}")
    t, d3 = qkv.shape
    return UnitCall("attention", [heads, t, d3 // (3 * heads), int(sm_mult), int(sm_shift), int(av_mult), int(av_shift)],
                    [np.ascontiguousarray(qkv).ravel()], (t, d3 // 3), np.int8)


def chain_call(*, x16: np.ndarray | None = None, x8: np.ndarray | None = None, add: tuple | None = None,
               ln=None, gelu_table: np.ndarray | None = None, keep: int | None = None, stream: bool = True,
               write_res: bool = False) -> UnitCall:
    """The vector IP's chained row op (``tatvpr_chain``, schedule.vector_chain: fused) on ``T`` rows of
    ``D`` channels: ``add = (mult, shift)``: ``x16 + requant(x8)`` first (``write_res``: its int16 output
    returned too, the residual stream); ``ln`` (a ``LayerNormQ``) of that row (or of ``x16``), or
    ``gelu_table`` of ``x8``; then with ``keep`` the top-k (``stream``: the act stream, else the kept
    values in place). The result: ``(res16 | None, out)`` with ``out`` the act stream ``(chunks, pairs)``
    or int8 ``[T, D]`` (``tatvpr_pynq.integer.Units.vector_chain``)."""
    if (ln is None) == (gelu_table is None):
        raise UserError("chain: exactly one of a LayerNorm and a GELU step")
    if add is not None and ln is None:
        raise UserError("chain: a residual add is followed by a LayerNorm")
    if write_res and add is None:
        raise UserError("chain: write_res needs the residual add")
    ref = x8 if gelu_table is not None else x16
    if ref is None or np.asarray(ref).ndim != 2 or np.asarray(ref).size == 0:
        raise UserError("chain: the input must be a non-empty [T, D] array")
    t, d = np.asarray(ref).shape
    flags = ((CHAIN_FLAGS["add"] if add is not None else 0) | (CHAIN_FLAGS["layernorm"] if ln is not None else 0)
             | (CHAIN_FLAGS["gelu"] if gelu_table is not None else 0) | (CHAIN_FLAGS["write_res"] if write_res else 0)
             | (0 if keep is None else CHAIN_FLAGS["topk" if stream else "topk_dense"]))
    if keep is not None and not 0 <= int(keep) <= 1 << 30:
        raise UserError(f"chain: keep = {keep} must be in [0, 2^30]")
    none = lambda dt: np.zeros(0, dt)  # noqa: E731  (a section the flags do not read)
    arrays = [np.asarray(x16, "<i2").ravel() if x16 is not None and (add is not None or ln is not None) else none("<i2"),
              np.asarray(x8, "i1").ravel() if x8 is not None and (add is not None or gelu_table is not None) else none("i1"),
              np.asarray(add[0], "<i4") if add is not None else none("<i4"),
              np.asarray(add[1], "<i4") if add is not None else none("<i4"),
              np.asarray(ln.gain, "<i8") if ln is not None else none("<i8"),
              np.asarray(ln.bias, "<i8") if ln is not None else none("<i8"),
              np.asarray(gelu_table, "i1") if gelu_table is not None else none("i1")]
    return UnitCall("chain", [t, d, flags, 0 if keep is None else int(keep), int(ln.eps_q) if ln is not None else 0],
                    arrays, (t, d))


def build_unit_csim(build_dir: str | os.PathLike, lanes: int = 16, rows: int = 16, cols: int = 16, *,
                    simd: int = 8, banks: int | None = None, kmax: int = 4096, att_rows: int = 32,
                    max_tokens: int = 257, max_head_dim: int = 64, max_dim: int = 4096,
                    att_lanes: int | None = None) -> Path:
    """Compile the vector-unit + int8-unit testbench (reused while the sources are unchanged); its top-k
    unit schedules for a ternary IP of ``simd`` lanes and ``banks`` banks (None: ``simd``), rows of at
    most ``kmax`` channels; its fused attention takes blocks of ``att_rows`` query rows, at most
    ``max_tokens`` tokens and ``max_head_dim`` channels a head (schedule.attention_rows, max_tokens,
    max_head_dim) on ``att_lanes`` softmax lanes (schedule.attention_lanes; None: ``lanes``); its chained row
    op holds int16 rows of at most ``max_dim`` channels (schedule.max_dim)."""
    banks = simd if banks is None else banks
    att_lanes = lanes if att_lanes is None else att_lanes
    for name, v in (("vector lanes", lanes), ("int8 rows", rows), ("int8 cols", cols), ("top-k simd", simd),
                    ("top-k banks", banks), ("top-k kmax", kmax), ("attention rows", att_rows),
                    ("attention max tokens", max_tokens), ("attention max head dim", max_head_dim),
                    ("chain max dim", max_dim), ("attention lanes", att_lanes)):
        if not isinstance(v, int) or v < 1:
            raise UserError(f"{name} must be a positive integer, got {v!r}")
    if simd % banks:
        raise UserError(f"top-k banks = {banks} must divide simd = {simd}")
    if kmax > 1 << 16:
        raise UserError(f"top-k kmax = {kmax}: the stream's channel index is 16-bit (at most 65536)")
    root = hls_dir()

    def command(tmp: Path) -> list[str]:
        return [compiler(), "-O2", "-std=c++14", "-Wno-unknown-pragmas", "-Wno-unused-label", "-DTATVPR_COUNT_CYCLES",
                f"-DTATVPR_VLANES={lanes}", f"-DTATVPR_I8_ROWS={rows}", f"-DTATVPR_I8_COLS={cols}",
                f"-DTATVPR_TOPK_SIMD={simd}", f"-DTATVPR_TOPK_BANKS={banks}", f"-DTATVPR_TOPK_KMAX={kmax}",
                f"-DTATVPR_ATT_ROWS={att_rows}", f"-DTATVPR_ATT_MAX_TOKENS={max_tokens}",
                f"-DTATVPR_ATT_MAX_HEAD_DIM={max_head_dim}", f"-DTATVPR_CHAIN_MAX_DIM={max_dim}",
                f"-DTATVPR_ATT_LANES={att_lanes}",
                f"-I{root / 'include'}", f"-I{ap_types_dir()}", str(root / "src" / "tatvpr_vector.cpp"),
                str(root / "src" / "tatvpr_int8.cpp"), str(root / "src" / "tatvpr_attention.cpp"),
                str(root / "src" / "tatvpr_chain.cpp"),
                str(root / "tb" / "tb_units.cpp"), "-o", str(tmp)]
    return cached_build(build_dir, f"tb_units_l{lanes}_r{rows}_c{cols}_s{simd}_b{banks}_k{kmax}_a{att_rows}_"
                        f"t{max_tokens}_h{max_head_dim}_d{max_dim}_sl{att_lanes}",
                        f"{lanes},{rows},{cols},{simd},{banks},{kmax},{att_rows},{max_tokens},{max_head_dim},{max_dim},"
                        f"{att_lanes}",
                        _SOURCES, command, "vector-unit C simulation")


def _write_call(path: Path, call: UnitCall) -> None:
    parts = [b"TVPRVEC1", struct.pack("<ii", OPS[call.op], len(call.params)),
             struct.pack(f"<{len(call.params)}q", *[int(p) for p in call.params])]
    for a in call.arrays:
        data = np.ascontiguousarray(a).tobytes()
        parts += [struct.pack("<I", len(data)), data]
    path.write_bytes(b"".join(parts))


def _read_result(path: Path, call: UnitCall) -> UnitResult:
    raw = path.read_bytes()
    if raw[:8] != b"TVPRVRS2":
        raise UserError(f"{path}: not a vector-unit result file")
    op, cycles, rows, row_cycles, nbytes = struct.unpack_from("<iqqqI", raw, 8)
    if op != OPS[call.op]:
        raise UserError(f"{path}: result of op {op}, expected {OPS[call.op]}")
    body = raw[40:40 + nbytes]
    if call.op == "topk":  # tok_chunks uint16 [M], then the pair words
        m = call.shape[0]
        chunks = np.frombuffer(body[:2 * m], dtype="<u2").astype(np.uint16)
        pairs = np.frombuffer(bytes(body[2 * m:]), dtype="<u4").astype(np.uint32)
        return UnitResult((chunks, pairs), int(cycles), int(rows), int(row_cycles))
    if call.op == "chain":  # [int16 residual], then the act stream or the int8 rows
        t, d = call.shape
        flags = int(call.params[2])
        res = None
        if flags & CHAIN_FLAGS["write_res"]:
            res = np.frombuffer(bytes(body[:2 * t * d]), dtype="<i2").astype(np.int16).reshape(t, d)
            body = body[2 * t * d:]
        if flags & CHAIN_FLAGS["topk"]:
            chunks = np.frombuffer(bytes(body[:2 * t]), dtype="<u2").astype(np.uint16)
            out = (chunks, np.frombuffer(bytes(body[2 * t:]), dtype="<u4").astype(np.uint32))
        else:
            out = np.frombuffer(bytes(body), dtype=np.int8).reshape(t, d).copy()
        return UnitResult((res, out), int(cycles), int(rows), int(row_cycles))
    if call.op == "attention":  # int64 int8_cycles, then the output
        (i8,) = struct.unpack_from("<q", body, 0)
        out = np.frombuffer(bytes(body[8:]), dtype=np.int8).reshape(call.shape)
        return UnitResult(out.copy(), int(cycles), int(rows), int(row_cycles), int(i8))
    dtype = call.out_dtype or _OUT_DTYPE[call.op]
    out = np.frombuffer(body, dtype=dtype).reshape(call.shape)
    return UnitResult(out.copy(), int(cycles), int(rows), int(row_cycles))


def run_unit_ops(exe: str | os.PathLike, calls: list[UnitCall], work_dir: str | os.PathLike) -> list[UnitResult]:
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
