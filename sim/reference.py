"""Literal, cycle-stepping model of ENGINE.md's loop nest, for small layers only.

It steps a clock tick by tick with two units -- the DMA (weight folds, and the activations when
they are not resident) and the PE x SIMD array (one chunk per lane group per tick) -- and counts
every action as it happens. It shares no cycle arithmetic with :mod:`sim.engine`; the tests check
that the fast engine equals it cycle for cycle and count for count. With integer activation
values it also accumulates the outputs, which must equal ``(X * mask) @ W^T``.

Per tick, in order: (1) control: the array starts fold f when it is idle and fold f's weights
are in; the DMA starts fold f+1 when the buffer half is free (double buffering: when fold f
starts computing; otherwise when fold f has finished); (2) both units do one tick of work;
(3) completions are marked at the end of the tick.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from sim.engine import ACT_BITS, CODE_BITS, OUT_BITS, SKIP_MODES, index_bits


def _chunks(indices: np.ndarray, simd: int) -> list[np.ndarray]:
    return [indices[i:i + simd] for i in range(0, len(indices), simd)]


def reference_layer(act_mask: np.ndarray, w: np.ndarray, *, pe: int, simd: int, skip_mode: str,
                    weight_format: str = "ternary2", dram_bytes_per_cycle: float = 16.0,
                    double_buffering: bool = True, tree_stages: int | None = None,
                    decode_latency_cycles: int = 0, latency_cycles: int = 0, act_resident: bool = True,
                    act_values: np.ndarray | None = None) -> dict:
    """Step one ternary layer; return ``cycles``, per-fold ``compute`` ticks, ``counts`` and ``y``."""
    assert skip_mode in SKIP_MODES
    act_mask = np.asarray(act_mask, bool)
    w = np.asarray(w, np.int64)
    m_tok, k = act_mask.shape
    n = w.shape[0]
    n_f = -(-n // pe)
    idx = index_bits(k)
    bits_pw = Fraction(2) if weight_format == "ternary2" else Fraction(8, 5)
    bpc = Fraction(dram_bytes_per_cycle)
    x = None if act_values is None else np.where(act_mask, np.asarray(act_values, np.int64), 0)
    y = np.zeros((m_tok, n), np.int64)

    act_bytes = Fraction(m_tok * k * ACT_BITS, 8)  # dense int8 input in the activation buffer
    fold_bytes = pe * k * bits_pw / 8 + (0 if act_resident else act_bytes)

    c = dict(pairs_processed=0, acc_updates=0, index_decodes=0, intersect_compares=0, weight_buf_read_bits=0,
             act_buf_read_bits=0, out_buf_write_bits=0, requant_mults=0, dram_weight_bits=0, dram_act_bits=0,
             base3_decodes=0, weight_buf_write_bits=0)

    def token_program(f: int, m: int) -> list[tuple[int, list[np.ndarray]]]:
        """Per real PE lane of fold f: (channel, its chunks of input-channel indices) for token m."""
        nz_a = np.flatnonzero(act_mask[m])
        prog = []
        for p in range(pe):
            ch = f * pe + p
            if ch >= n:
                continue
            nz_w = np.flatnonzero(w[ch])
            if skip_mode == "none":
                lst = np.arange(k)
            elif skip_mode == "act":
                lst = nz_a
            elif skip_mode == "weight":
                lst = nz_w
            else:
                lst = np.intersect1d(nz_a, nz_w)
                c["intersect_compares"] += len(nz_a) + len(nz_w)
            prog.append((ch, _chunks(lst, simd)))
            if skip_mode in ("weight", "both"):
                if skip_mode == "both":
                    c["weight_buf_read_bits"] += len(nz_w) * (CODE_BITS + idx)
        # the activation stream of the token is read once per fold and broadcast to the PEs
        if skip_mode == "none":
            c["act_buf_read_bits"] += k * ACT_BITS
        elif skip_mode in ("act", "both"):
            c["act_buf_read_bits"] += len(nz_a) * (ACT_BITS + idx)
        return prog

    # --- weight-buffer writes: what each fold's load puts in the buffer
    for ch in range(n):
        nzw = int(np.count_nonzero(w[ch]))
        c["weight_buf_write_bits"] += (k * CODE_BITS if skip_mode in ("none", "act") else nzw * (CODE_BITS + idx))

    tick = 0
    for _ in range(latency_cycles):  # DRAM latency before the first transfer
        tick += 1
    loaded = [False] * n_f
    dma_fold, dma_got, dma_decode = 0, Fraction(0), None  # start fold 0's transfer now
    comp_fold, started = None, -1  # fold being computed, last fold started
    token, lanes, token_ticks = 0, None, 0
    fold_ticks = [0] * n_f
    done_folds = 0
    while done_folds < n_f:
        # (1) control
        if comp_fold is None and started + 1 < n_f and loaded[started + 1]:
            comp_fold = started = started + 1
            token, lanes, token_ticks = 0, None, 0
            if double_buffering and dma_fold is None and comp_fold + 1 < n_f:
                dma_fold, dma_got, dma_decode = comp_fold + 1, Fraction(0), None
        # (2) work: DMA
        dma_finished = None
        if dma_fold is not None:
            if dma_decode is None:
                dma_got += bpc
                if dma_got >= fold_bytes:
                    dma_decode = decode_latency_cycles if weight_format == "ternary1.6" else 0
                    if dma_decode == 0:
                        dma_finished = dma_fold
            else:
                dma_decode -= 1
                if dma_decode == 0:
                    dma_finished = dma_fold
        # (2) work: array, one chunk per lane group
        comp_finished = None
        if comp_fold is not None:
            fold_ticks[comp_fold] += 1
            if lanes is None:
                lanes = [[ch, chunks, 0] for ch, chunks in token_program(comp_fold, token)]
            for lane in lanes:
                ch, chunks, pos = lane
                if pos < len(chunks):
                    sel = chunks[pos]
                    c["pairs_processed"] += len(sel)
                    c["acc_updates"] += 1
                    if skip_mode != "none":
                        c["index_decodes"] += len(sel)
                    if skip_mode in ("none", "act"):
                        c["weight_buf_read_bits"] += len(sel) * CODE_BITS
                    elif skip_mode == "weight":
                        c["weight_buf_read_bits"] += len(sel) * (CODE_BITS + idx)
                        c["act_buf_read_bits"] += len(sel) * ACT_BITS
                    if x is not None:
                        y[token, ch] += int((w[ch, sel] * x[token, sel]).sum())
                    lane[2] = pos + 1
            token_ticks += 1
            if all(pos >= len(chunks) for _, chunks, pos in lanes):
                for _, chunks, _pos in lanes:  # accumulator write of a lane that had no chunk
                    if not chunks:
                        c["acc_updates"] += 1
                c["out_buf_write_bits"] += len(lanes) * OUT_BITS
                c["requant_mults"] += len(lanes)
                token, lanes, token_ticks = token + 1, None, 0
                if token == m_tok:
                    comp_finished = comp_fold
        tick += 1
        # (3) completions
        if dma_finished is not None:
            loaded[dma_finished] = True
            c["dram_weight_bits"] += int(math.ceil(pe * k * bits_pw))
            c["dram_act_bits"] += 0 if act_resident else int(math.ceil(act_bytes * 8))
            if weight_format == "ternary1.6":
                c["base3_decodes"] += math.ceil(pe * k / 5)
            dma_fold = None
        if comp_finished is not None:
            comp_fold = None
            done_folds += 1
            if not double_buffering and comp_finished + 1 < n_f:
                dma_fold, dma_got, dma_decode = comp_finished + 1, Fraction(0), None
    fill = (tree_stages if tree_stages is not None else (math.ceil(math.log2(simd)) if simd > 1 else 0)) + 2
    for _ in range(fill):  # drain the lane register, the adder tree and the accumulator
        tick += 1
    return {"cycles": tick, "compute": np.array(fold_ticks, np.int64), "counts": c, "y": y}


def reference_dense(m: int, k: int, n: int, batch: int, rows: int, cols: int, pipeline_cycles: int) -> int:
    """Step the output-stationary int8 grid: one tile of ``rows x cols`` outputs per ``k`` ticks."""
    tick = 0
    for _ in range(batch):
        for r0 in range(0, m, rows):
            for c0 in range(0, n, cols):
                for _kk in range(k):
                    tick += 1
    return tick + pipeline_cycles
