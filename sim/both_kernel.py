"""Kernel of ``both`` mode's accumulator updates: a small C loop built on first use, or numpy.

``chunk_total(a_bytes, w_bytes, q)`` = sum over tokens m and outputs n of
``max(1, ceil(max over banks b of |nz(x_m) ∩ nz(w_n) ∩ bank b| / q))`` (docs/engine.md section 3's
``g``), from two masks in the bank-byte layout of :func:`sim.trace.bank_bytes`
(``[bytes per bank, B, rows]``, channel ``k`` in bank ``k mod B``). Exact either way.

- ``c`` backend: each bank's bytes OR-ed into uint32 words (``ceil(bytes per bank / 4)`` per
  bank and row; ViT-B's K = 768 at B = 32 is one word); per token and block of 16 outputs, over
  the banks: AND, popcount, add over the bank's words, then the running max (and the sum: the
  pairs) in registers; vectorised with AVX-512 VPOPCNT where the CPU has it (a variant
  chosen at run time by ``__builtin_cpu_supports``; else scalar ``popcnt``). Built once with the
  system C compiler (``$CC``, else ``cc``/``gcc``) into ``$TATVPR_KERNEL_DIR`` (default
  ``~/.cache/tatvpr/sim-kernels``), named by a hash of its source and flags, loaded with ctypes.
- ``numpy`` backend: :func:`sim.trace.bank_max_tiles` (uint8 popcounts, about four numpy passes
  over every byte). Used when no compiler is found or the build fails (:data:`REASON` says why),
  or when ``TATVPR_SIM_KERNEL=numpy``.

:func:`backend` says which one is in use; ``tests/sim/test_gather.py`` checks they agree.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

_SOURCE = r"""
#include <stdint.h>
/* a: uint32 [NW, B, M] (word j, bank b, token m); w: uint32 [NW, B, N]. Per token m and block of
   L outputs: acc = max over banks of the bank's count, tot = sum over banks (the intersection),
   both in registers; then g = max(1, ceil(acc / q)) is summed into the total. */
#define L 16
#define ARGS const uint32_t *restrict a, const uint32_t *restrict w, long long m_, long long b_, \
             long long nw, long long n_, long long q, long long *restrict pairs
#define G(v) ((q == 1 ? (long long)(v) : ((long long)(v) + q - 1) / q) > 1 ? \
              (q == 1 ? (long long)(v) : ((long long)(v) + q - 1) / q) : 1)
#define BODY                                                                                      \
    long long total = 0, pair_total = 0;                                                          \
    const long long nfull = n_ - n_ % L;                                                          \
    for (long long m = 0; m < m_; m++) {                                                          \
        for (long long n0 = 0; n0 < nfull; n0 += L) {                                             \
            int32_t acc[L] = {0}, tot[L] = {0};                                                   \
            for (long long b = 0; b < b_; b++) {                                                  \
                int32_t s[L] = {0};                                                               \
                for (long long j = 0; j < nw; j++) {                                              \
                    const uint32_t x = a[(j * b_ + b) * m_ + m];                                  \
                    const uint32_t *wr = w + (j * b_ + b) * n_ + n0;                              \
                    for (int l = 0; l < L; l++) s[l] += __builtin_popcount(x & wr[l]);            \
                }                                                                                 \
                for (int l = 0; l < L; l++) {                                                     \
                    acc[l] = s[l] > acc[l] ? s[l] : acc[l];                                       \
                    tot[l] += s[l];                                                               \
                }                                                                                 \
            }                                                                                     \
            for (int l = 0; l < L; l++) {                                                         \
                total += G(acc[l]);                                                               \
                pair_total += tot[l];                                                             \
            }                                                                                     \
        }                                                                                         \
        for (long long n = nfull; n < n_; n++) {                                                  \
            int32_t acc = 0;                                                                      \
            for (long long b = 0; b < b_; b++) {                                                  \
                int32_t s = 0;                                                                    \
                for (long long j = 0; j < nw; j++)                                                \
                    s += __builtin_popcount(a[(j * b_ + b) * m_ + m] & w[(j * b_ + b) * n_ + n]); \
                acc = s > acc ? s : acc;                                                          \
                pair_total += s;                                                                  \
            }                                                                                     \
            total += G(acc);                                                                      \
        }                                                                                         \
    }                                                                                             \
    *pairs = pair_total;                                                                          \
    return total;

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512vl,avx512bw,avx512vpopcntdq,popcnt")))
static long long total_vpopcnt(ARGS) { BODY }
__attribute__((target("popcnt")))
static long long total_popcnt(ARGS) { BODY }
#endif
static long long total_plain(ARGS) { BODY }

int both_kernel_variant(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("avx512vl")) return 2;
    if (__builtin_cpu_supports("popcnt")) return 1;
#endif
    return 0;
}

/* variant: 2 AVX-512 VPOPCNT, 1 scalar popcnt, 0 portable; the caller passes both_kernel_variant()
   or a lower one (tests run every variant the CPU has). Returns the chunk total; *pairs gets the
   sum over (m, n) of |nz(x_m) ∩ nz(w_n)|. */
long long both_chunk_total(int variant, ARGS) {
#if defined(__x86_64__) && defined(__GNUC__)
    switch (variant) {
    case 2: return total_vpopcnt(a, w, m_, b_, nw, n_, q, pairs);
    case 1: return total_popcnt(a, w, m_, b_, nw, n_, q, pairs);
    }
#endif
    return total_plain(a, w, m_, b_, nw, n_, q, pairs);
}
"""
_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c99")
VARIANTS = {0: "portable C", 1: "scalar popcnt", 2: "AVX-512 VPOPCNT"}

_state: dict = {}  # backend, reason, lib (loaded once per process)
REASON = ""


def _kernel_dir() -> Path:
    env = os.environ.get("TATVPR_KERNEL_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tatvpr" / "sim-kernels"


def _build() -> ctypes.CDLL:
    """Compile (once; atomic rename, so concurrent workers are safe) and load the C kernel."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise OSError("no C compiler ($CC, cc, gcc) found")
    cmd = shlex.split(cc)  # $CC may carry flags ("gcc -m64")
    digest = hashlib.sha256("\0".join((_SOURCE, *_FLAGS, platform.machine())).encode()).hexdigest()[:16]
    folder = _kernel_dir()
    so = folder / f"both_kernel_{digest}.so"
    if not so.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as td:
            src, out = Path(td) / "both_kernel.c", Path(td) / "both_kernel.so"
            src.write_text(_SOURCE)
            proc = subprocess.run([*cmd, *_FLAGS, "-o", str(out), str(src)], capture_output=True, text=True)
            if proc.returncode != 0 or not out.is_file():
                first = (proc.stderr.strip().splitlines() or ["no output"])[0]
                raise OSError(f"{cc} failed to build the kernel: {first}")
            os.replace(out, so)
    lib = ctypes.CDLL(str(so))
    lib.both_chunk_total.restype = ctypes.c_longlong
    lib.both_chunk_total.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_longlong] * 5 + \
        [ctypes.POINTER(ctypes.c_longlong)]
    lib.both_kernel_variant.restype = ctypes.c_int
    return lib


def backend() -> str:
    """``"c"`` or ``"numpy"``; the first call builds or loads the C kernel (see :data:`REASON`)."""
    global REASON
    if "backend" not in _state:
        if os.environ.get("TATVPR_SIM_KERNEL", "").lower() == "numpy":
            _state.update(backend="numpy", reason="TATVPR_SIM_KERNEL=numpy")
        else:
            try:
                lib = _build()
                variant = int(lib.both_kernel_variant())
                _state.update(backend="c", lib=lib, variant=variant, reason=f"C kernel, {VARIANTS[variant]}")
            except OSError as exc:
                _state.update(backend="numpy", reason=f"numpy kernel: {exc}")
        REASON = _state["reason"]
    return _state["backend"]


def _reset() -> None:
    """Forget the loaded backend (tests: the next :func:`backend` call decides again)."""
    _state.clear()


def _words(bank_bytes: np.ndarray) -> np.ndarray:
    """uint8 ``[bytes, B, rows]`` -> uint32 ``[words, B, rows]``: byte r of a bank goes to word
    ``r // 4``, bits ``8 (r mod 4)`` up (no transpose: a bank's word of every row stays contiguous)."""
    nbytes = bank_bytes.shape[0]
    out = np.zeros((-(-nbytes // 4),) + bank_bytes.shape[1:], np.uint32)
    for r in range(nbytes):
        word = out[r // 4]
        word |= bank_bytes[r].astype(np.uint32) << np.uint32(8 * (r % 4))
    return out


def variant() -> int:
    """The C kernel's variant on this CPU (:data:`VARIANTS`); requires the ``c`` backend."""
    if backend() != "c":
        raise OSError(f"the C kernel is not available: {REASON}")
    return _state["variant"]


def _totals_c(a_bytes: np.ndarray, w_bytes: np.ndarray, q: int, variant_: int) -> tuple[int, int]:
    a, w = _words(a_bytes), _words(w_bytes)
    (nw, b, m), n = a.shape, w.shape[2]
    pairs = ctypes.c_longlong(0)
    chunks = _state["lib"].both_chunk_total(variant_, a.ctypes.data, w.ctypes.data, m, b, nw, n, q,
                                            ctypes.byref(pairs))
    return int(chunks), int(pairs.value)


def _total_numpy(a_bytes: np.ndarray, w_bytes: np.ndarray, q: int) -> int:
    from sim.trace import bank_max_tiles

    nbytes, banks, m = a_bytes.shape
    n = w_bytes.shape[2]
    total = 0
    # k = every bit of the layout: an upper bound on a bank's count, which sizes the accumulator
    for _r0, _r1, _c0, best in bank_max_tiles(a_bytes, w_bytes, nbytes * 8 * banks):
        if q == 1:
            total += int(np.maximum(best, 1).sum(dtype=np.int64))
        else:
            total += int(np.maximum(-(-best.astype(np.int64) // q), 1).sum())
    return total - m * (-n % 8)  # outputs padded to a multiple of 8 count 0, i.e. g = 1 each


def chunk_totals(a_bytes: np.ndarray, w_bytes: np.ndarray, lanes_per_bank: int, *, use: str | None = None,
                 c_variant: int | None = None) -> tuple[int, int | None]:
    """``(chunks, pairs)``: chunks = sum over tokens and outputs of ``max(1, ceil(busiest bank's
    intersection / q))``; pairs = sum of ``|nz(x_m) ∩ nz(w_n)|`` (the C loop has it for free;
    None from the numpy kernel).

    ``a_bytes`` uint8 ``[bytes, B, M]`` (tokens), ``w_bytes`` uint8 ``[bytes, B, N]`` (outputs), in
    the bank-byte layout of the same ``B``; ``use`` forces ``"c"`` or ``"numpy"`` (default:
    :func:`backend`); ``c_variant`` a C variant at most :func:`variant` (default: that one)."""
    if a_bytes.shape[:2] != w_bytes.shape[:2]:
        raise ValueError(f"bank-byte shapes {a_bytes.shape} and {w_bytes.shape} differ")
    q = int(lanes_per_bank)
    if q < 1:
        raise ValueError(f"lanes_per_bank = {lanes_per_bank}; allowed: >= 1")
    which = use or backend()
    if which == "c":
        best_variant = variant()
        v = best_variant if c_variant is None else int(c_variant)
        if not 0 <= v <= best_variant:
            raise ValueError(f"c_variant = {c_variant}; allowed on this CPU: 0 .. {best_variant}")
        return _totals_c(a_bytes, w_bytes, q, v)
    if which != "numpy":
        raise ValueError(f"use = {use!r}; allowed: 'c', 'numpy' or None")
    return _total_numpy(a_bytes, w_bytes, q), None


def chunk_total(a_bytes: np.ndarray, w_bytes: np.ndarray, lanes_per_bank: int, **kw) -> int:
    """The chunks of :func:`chunk_totals` alone."""
    return chunk_totals(a_bytes, w_bytes, lanes_per_bank, **kw)[0]
