"""Dense systolic-array mode: compute cycles of a GEMM as SCALE-Sim v3 counts them.

This mode lets users relate the packed-ternary MAC array's numbers to a conventional dense
``rows x cols`` systolic array of MACs (no zero-skipping, every weight a full multiply).
GEMM convention (SCALE-Sim's): ``out[M, N] = A[M, K] x B[K, N]``; for one of our linear
layers ``M`` = tokens, ``K`` = input channels, ``N`` = output channels.

Each dataflow keeps one operand resident in the array and maps two GEMM dimensions onto its
rows (``Sr``) and columns (``Sc``); the third (``T``) streams through in time:

============  ======================  ======  =====  ==============================
dataflow      stays in the PEs        Sr      Sc     T (streamed)
============  ======================  ======  =====  ==============================
``os``        outputs ``out[m, n]``   M       N      K
``ws``        weights ``B[k, n]``     K       N      M
``is``        inputs ``A[m, k]``      K       M      N
============  ======================  ======  =====  ==============================

The array is used in ``folds = ceil(Sr / rows) * ceil(Sc / cols)`` passes, one after the
other, with no overlap between passes. SCALE-Sim builds, per fold, a demand matrix whose row
count is the fold's duration:

- ``os``: ``T`` operand rows, then ``cols - 1`` rows for the outputs to drain, skewed over the
  ``rows`` array rows (``+ rows - 1``): ``T + rows + cols - 2`` cycles.
- ``ws`` / ``is``: ``rows`` cycles to load the stationary operand, ``T`` streamed rows and
  ``cols - 1`` drain rows, skewed over the ``rows`` array rows: ``T + 2*rows + cols - 2``.

and reports the index of the last output write (the demand rows counted from 0), so::

    cycles = folds * fold_cycles - 1          (no memory stalls)

e.g. ``M = N = K = 8`` on ``4 x 4``, ``os``: ``4 folds * (8 + 4 + 4 - 2) - 1 = 55``.

SCALE-Sim's "Compute Util %" is the mean over folds of ``macs_used * T / (rows * cols *
fold_util_cycles)`` with ``fold_util_cycles = T + rows + cols - 2`` (``os``) or
``T + 2*rows + 2*cols - 3`` (``ws``/``is``), which is :func:`systolic_util_pct` here.

These counts are the compute cycles with unlimited on-chip bandwidth (SCALE-Sim's "Total
Cycles" when its stall count is 0, as with its large default SRAMs). Memory stalls and the
DRAM prefetch are not modelled here; the MVAU engine of ``sim/`` models our own memory system.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np

from sim.errors import SimInputError

Dataflow = Literal["os", "ws", "is"]
DATAFLOWS: tuple[str, ...] = ("os", "ws", "is")


@dataclass(frozen=True)
class SystolicGemm:
    """Cycle accounting of one GEMM on one systolic array (all counts in cycles or MACs)."""

    m: int
    n: int
    k: int
    rows: int
    cols: int
    dataflow: str
    folds: int
    fold_cycles: int
    cycles: int
    macs: int
    util_pct: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _check_dims(**dims: int) -> None:
    for name, v in dims.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SimInputError(f"systolic: {name} = {v!r}: must be an integer >= 1")


def _mapping(m: int, n: int, k: int, dataflow: str) -> tuple[int, int, int]:
    """``(Sr, Sc, T)``: GEMM dims mapped to array rows, array columns and time."""
    if dataflow == "os":
        return m, n, k
    if dataflow == "ws":
        return k, n, m
    if dataflow == "is":
        return k, m, n
    raise SimInputError(f"systolic: dataflow {dataflow!r}; allowed: {', '.join(DATAFLOWS)}")


def systolic_gemm(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> SystolicGemm:
    """Folds, cycles and utilisation of ``out[m,n] = A[m,k] x B[k,n]`` on a ``rows x cols`` array."""
    _check_dims(m=m, n=n, k=k, rows=rows, cols=cols)
    sr, sc, t = _mapping(m, n, k, dataflow)
    folds = math.ceil(sr / rows) * math.ceil(sc / cols)
    if dataflow == "os":
        fold_cycles = t + rows + cols - 2
        util_cycles = fold_cycles
    else:
        fold_cycles = t + 2 * rows + cols - 2
        util_cycles = t + 2 * rows + 2 * cols - 3
    macs = m * n * k
    # mean over folds of macs_used * T / (rows*cols*util_cycles); sum of macs_used = Sr * Sc
    util_pct = 100.0 * sr * sc * t / (folds * rows * cols * util_cycles)
    return SystolicGemm(m, n, k, rows, cols, dataflow, folds, fold_cycles,
                        folds * fold_cycles - 1, macs, util_pct)


def systolic_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> int:
    """Compute cycles of one dense GEMM ``[m,k] x [k,n]`` on a ``rows x cols`` systolic array,
    equal to SCALE-Sim v3.0.0's "Total Cycles" (stall-free) for ``dataflow`` in os | ws | is."""
    return systolic_gemm(m, n, k, rows, cols, dataflow).cycles


def systolic_util_pct(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> float:
    """SCALE-Sim's "Compute Util %" of the same GEMM."""
    return systolic_gemm(m, n, k, rows, cols, dataflow).util_pct


def trace_systolic(ops: Iterable, rows: int, cols: int, dataflow: str,
                   clock_mhz: float | None = None) -> dict:
    """Dense systolic cycles of every GEMM of a trace (ternary linears and int8 ``DenseOp`` s,
    each ``batch`` GEMM run one after the other); vector ops are not counted.

    Returns ``{"cycles", "macs", "layers": [{"name", "m", "n", "k", "batch", "cycles"}...]}``
    and ``"latency_ms"`` when ``clock_mhz`` is given. Duck-typed on the ops' ``m, k, n``
    (and ``batch``) attributes, so it takes :class:`sim.trace.Trace` ``.ops`` directly.
    """
    layers = []
    total = 0
    macs = 0
    for op in ops:
        if getattr(op, "type", None) not in ("ternary_linear", "dense"):
            continue
        batch = int(getattr(op, "batch", 1))
        g = systolic_gemm(int(op.m), int(op.n), int(op.k), rows, cols, dataflow)
        layers.append({"name": op.name, "m": g.m, "n": g.n, "k": g.k, "batch": batch,
                       "cycles": batch * g.cycles})
        total += batch * g.cycles
        macs += batch * g.macs
    out = {"rows": rows, "cols": cols, "dataflow": dataflow, "cycles": total, "macs": macs,
           "layers": layers}
    if clock_mhz is not None:
        if not clock_mhz > 0:
            raise SimInputError(f"systolic: clock_mhz = {clock_mhz!r}: must be > 0")
        out["latency_ms"] = total / (clock_mhz * 1e3)
    return out


# ------------------------------------------------------------------ per-fold operand slices

@dataclass(frozen=True)
class SystolicFolds:
    """Per-fold sizes (elements) of one GEMM on the array, folds in SCALE-Sim's order
    (row folds outer, column folds inner); what the simulator's ``systolic`` mode charges.

    ``weight_elems[f]`` / ``act_elems[f]``: elements of ``B`` (weights ``[k, n]``) and ``A``
    (activations ``[m, k]``) that fold ``f`` feeds into the array; ``out_elems[f]``: outputs
    it produces; ``out_final[f]``: True when those are final sums (``os``: always; ``ws`` /
    ``is``: only in the last K row fold, earlier ones are partial sums); ``cycles[f]``:
    ``fold_cycles``, minus 1 in the last fold, so ``cycles.sum() == systolic_cycles(...)``.

    Per dataflow (``r`` = the fold's row-tile size, ``c`` = its column-tile size)::

        os:  weights K*c   activations r*K   outputs r*c (final)
        ws:  weights r*c   activations M*r   outputs M*c (final in the last K tile)
        is:  weights r*N   activations r*c   outputs c*N (final in the last K tile)
    """

    gemm: SystolicGemm
    weight_elems: np.ndarray
    act_elems: np.ndarray
    out_elems: np.ndarray
    out_final: np.ndarray
    cycles: np.ndarray


def _tiles(size: int, tile: int) -> np.ndarray:
    t = np.full(-(-size // tile), tile, dtype=np.int64)
    t[-1] = size - tile * (len(t) - 1)
    return t


def systolic_folds(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> SystolicFolds:
    """Per-fold operand slices and cycles of ``[m,k] x [k,n]`` (see :class:`SystolicFolds`)."""
    g = systolic_gemm(m, n, k, rows, cols, dataflow)
    sr, sc, _ = _mapping(m, n, k, dataflow)
    r = np.repeat(_tiles(sr, rows), -(-sc // cols))  # row tile of each fold (outer loop)
    c = np.tile(_tiles(sc, cols), -(-sr // rows))    # column tile of each fold (inner loop)
    last_row = np.repeat(np.arange(-(-sr // rows)) == -(-sr // rows) - 1, -(-sc // cols))
    if dataflow == "os":
        w, a, o, fin = k * c, r * k, r * c, np.ones_like(last_row)
    elif dataflow == "ws":
        w, a, o, fin = r * c, m * r, m * c, last_row
    else:  # is
        w, a, o, fin = r * n, r * c, c * n, last_row
    cyc = np.full(g.folds, g.fold_cycles, dtype=np.int64)
    cyc[-1] -= 1
    return SystolicFolds(g, w.astype(np.int64), a.astype(np.int64), o.astype(np.int64), fin.astype(bool), cyc)
