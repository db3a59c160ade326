"""Literal, tick-by-tick model of the machine of docs/engine.md (version 2), for small layers only.

It steps a clock with two units -- the DMA (weight folds, activation token blocks, output spills)
and the PE x SIMD array -- and counts every action as it happens. It has its own constants and
imports nothing from :mod:`sim.engine`; the tests check that the fast engine equals it cycle for
cycle and count for count. With integer activation values it also accumulates the outputs,
which must equal ``(X * mask) @ W^T``.

What it does literally, where the engine uses closed forms:

- **banks**: for every token and PE lane it builds the bank-scheduled chunks by placing each work
  channel ``k`` (bank ``k mod B``) on the next free lane wired to that bank (lane ``s`` reads bank
  ``s mod B``), and checks that no (bank, replica, port) is read twice in one tick;
- **token copies** (``weight``/``both``): a writer fills the next token's PE copies ``SIMD``
  activations per tick while the lanes work; a token's slot ends when both are done;
- **tiling**: the tokens are written into the activation buffer word by word (their chunks in
  `act`) and split into blocks that fit it and the output buffer; the loop order is
  enumerated step by step and ``auto`` picks the order whose steps load fewer DRAM bytes;
- **overlap**: the DMA loads a step's missing fold / block; with double buffering it starts step
  j+1's load when step j starts computing, otherwise when step j is finished. A block's DRAM bytes
  in `act` are the ternary IP's stream (every chunk's SIMD uint32 slots, a uint16 count per
  token), counted here from the chunks it built; in the other modes the dense int8 tokens.
- **bank scheduler** (``act`` only, ``rtl/bank_scheduler.v``): the array's ticks below are the
  token side (a token enters the scheduler's register, which takes the next one in the tick the
  current one's last chunk leaves); each chunk leaves the register one tick after the tick that
  made it, so the last chunk of the layer is issued one tick after the last array tick, and the
  pipeline drains from there.

Per tick, in order: (1) control, repeated until nothing changes: the array starts the next step
when it is idle and that step's data is in; the DMA starts the next load when it is idle and the
buffer half is free (a load of nothing completes at once); (2) both units do one tick of work;
(3) completions are marked at the end of the tick.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_A = 8   # bits of one int8 activation
_Y = 8   # bits of one int8 output
_C = 2   # bits of one on-chip weight code
_SLOT_BYTES = 4    # act: one (value, index) slot of the IP's DRAM stream, a uint32
_COUNT_BYTES = 2   # act: one token's chunk count in that stream, a uint16
_MODES = ("none", "act", "weight", "both")


def _idx_bits(k: int) -> int:
    """Bits of a channel index in a compressed stream: the bit length of ``k - 1`` (1 at least)."""
    return max(1, (k - 1).bit_length())


def _bits_per_weight(fmt: str) -> Fraction:
    return {"ternary2": Fraction(2), "ternary1.6": Fraction(8, 5)}[fmt]


def _default_fill(simd: int, tree_stages: int | None) -> int:
    if tree_stages is None:
        stages, width = 0, 1
        while width < simd:  # levels of a binary adder tree over SIMD inputs
            width *= 2
            stages += 1
        tree_stages = stages
    return tree_stages + 2  # + lane register + accumulator


def schedule_chunks(channels, simd: int, banks: int, ports: int) -> list[dict[int, int]]:
    """Bank-scheduled chunks of one lane group's work ``channels``: a list of ``{lane: channel}``.

    Channel ``k`` may only go to a lane wired to its bank (``lane mod B == k mod B``); each chunk
    gives every lane at most one channel. No work still costs one (empty) chunk.
    """
    q = simd // banks
    lanes_of = {b: [b + banks * j for j in range(q)] for b in range(banks)}
    used = {b: 0 for b in range(banks)}  # channels of bank b placed so far
    chunks: list[dict[int, int]] = []
    for ch in channels:
        b = ch % banks
        i = used[b]
        used[b] += 1
        c, slot = divmod(i, q)
        while len(chunks) <= c:
            chunks.append({})
        lane = lanes_of[b][slot]
        assert lane not in chunks[c]
        chunks[c][lane] = int(ch)
    if not chunks:
        chunks.append({})
    for chunk in chunks:  # the wiring: one read per (bank, replica, port) per tick
        seen = set()
        for lane, ch in chunk.items():
            assert lane % banks == ch % banks, (lane, ch)
            port_id = (lane % banks, (lane // banks) // ports, (lane // banks) % ports)
            assert port_id not in seen
            seen.add(port_id)
    return chunks


def _steps(order: str, n_f: int, t: int) -> list[tuple[int, int]]:
    out = []
    if order == "fold_outer":
        for f in range(n_f):
            for b in range(t):
                out.append((f, b))
    else:
        for b in range(t):
            for f in range(n_f):
                out.append((f, b))
    return out


def _loads(steps, resident: bool) -> list[tuple[bool, bool]]:
    """Per step: (loads a fold's weights, loads a token block): what differs from the step before."""
    out, have_f, have_b = [], None, None
    for f, b in steps:
        out.append((f != have_f, (not resident) and b != have_b))
        have_f, have_b = f, b
    return out


def reference_layer(act_mask: np.ndarray, w: np.ndarray, *, pe: int, simd: int, skip_mode: str,
                    weight_format: str = "ternary2", dram_bytes_per_cycle: float = 16.0,
                    double_buffering: bool = True, tree_stages: int | None = None,
                    decode_latency_cycles: int = 0, latency_cycles: int = 0, banks: int | None = None,
                    ports: int = 1, act_buffer_words: int | None = None, input_in_dram: bool = False,
                    out_buffer_bytes: int | None = None, out_buffer_tokens: int | None = None,
                    loop_order: str = "auto", act_values: np.ndarray | None = None) -> dict:
    """Step one ternary layer; return ``cycles``, per-step ``compute`` ticks, ``loop_order``,
    ``token_blocks``, ``spill`` ticks, ``counts`` and ``y``. ``act_buffer_words``: the activation
    buffer's words (chunks of SIMD slots in ``act``, SIMD values otherwise; None: all tokens fit);
    ``out_buffer_tokens``: tokens of one fold the output buffer holds (None: all)."""
    assert skip_mode in _MODES
    act_mask = np.asarray(act_mask, bool)
    w = np.asarray(w, np.int64)
    m_tok, k = act_mask.shape
    n = w.shape[0]
    nb = simd if banks is None else banks
    assert simd % (nb * ports) == 0
    n_f = (n + pe - 1) // pe
    ib = _idx_bits(k)
    bpw = _bits_per_weight(weight_format)
    bpc = Fraction(dram_bytes_per_cycle)
    x = None if act_values is None else np.where(act_mask, np.asarray(act_values, np.int64), 0)
    y = np.zeros((m_tok, n), np.int64)
    halves = 2 if double_buffering else 1

    # --- token blocks: each token is written into the activation buffer word by word (act: its
    # bank-scheduled chunks; otherwise SIMD values a word); a block takes tokens while they fit
    def token_words(m: int) -> int:
        if skip_mode == "act":
            return len(schedule_chunks([kk for kk in range(k) if act_mask[m, kk]], simd, nb, ports))
        n_words, left = 0, k
        while left > 0:
            left -= simd
            n_words += 1
        return n_words

    tw = [token_words(m) for m in range(m_tok)]
    cap_words = act_buffer_words if act_buffer_words is not None else sum(tw)
    cap_tokens = out_buffer_tokens if out_buffer_tokens is not None else m_tok
    resident = (not input_in_dram) and sum(tw) <= cap_words
    room = cap_words if resident else cap_words // halves
    bounds = []  # [start, stop) of each block
    for m in range(m_tok):
        assert tw[m] <= room, "one token does not fit the activation buffer"
        if not bounds or sum(tw[bounds[-1][0]:m]) + tw[m] > room or m - bounds[-1][0] >= cap_tokens:
            bounds.append([m, m])
        bounds[-1][1] = m + 1
    starts = [b0 for b0, _ in bounds]
    t = len(starts)

    def block_len(b: int) -> int:
        return bounds[b][1] - bounds[b][0]

    def block_dram_bytes(b: int) -> int:
        """DRAM bytes of block b's activations: act reads the IP's bank-scheduled stream (every
        chunk's SIMD uint32 slots, one uint16 count per token); the other modes dense int8."""
        if skip_mode == "act":
            chunks = 0
            for m in range(bounds[b][0], bounds[b][1]):
                chunks += tw[m]
            return chunks * simd * _SLOT_BYTES + block_len(b) * _COUNT_BYTES
        return block_len(b) * k * _A // 8

    fold_w_bytes = pe * k * bpw / 8

    def step_bytes(step_loads, steps):
        total = Fraction(0)
        for (f, b), (lw, la) in zip(steps, step_loads):
            total += (fold_w_bytes if lw else 0) + (block_dram_bytes(b) if la else 0)
        return total

    if loop_order == "auto":
        cand = {}
        for order in ("fold_outer", "token_outer"):
            st = _steps(order, n_f, t)
            cand[order] = step_bytes(_loads(st, resident), st)
        loop_order = "token_outer" if cand["token_outer"] < cand["fold_outer"] else "fold_outer"
    steps = _steps(loop_order, n_f, t)
    loads = _loads(steps, resident)
    n_steps = len(steps)

    c = dict(pairs_processed=0, acc_updates=0, index_decodes=0, intersect_compares=0, weight_buf_read_bits=0,
             weight_buf_write_bits=0, act_buf_read_bits=0, act_buf_write_bits=0, act_gather_write_bits=0,
             act_gather_read_bits=0, out_buf_write_bits=0, requant_mults=0, dram_weight_bits=0, dram_act_bits=0,
             dram_spill_bits=0, base3_decodes=0)

    def real_lanes(f: int) -> list[int]:
        return [ch for ch in range(f * pe, min(n, (f + 1) * pe))]

    def token_slot(f: int, m: int) -> dict:
        """Set up token m in fold f: per real lane its chunks; the copy writer; the stream reads."""
        nz_a = [kk for kk in range(k) if act_mask[m, kk]]
        lanes = []
        for ch in real_lanes(f):
            nz_w = [kk for kk in range(k) if w[ch, kk] != 0]
            if skip_mode == "none":
                work = list(range(k))
            elif skip_mode == "act":
                work = nz_a
            elif skip_mode == "weight":
                work = nz_w
            else:
                sw = set(nz_w)
                work = [kk for kk in nz_a if kk in sw]
                c["intersect_compares"] += len(nz_a) + len(nz_w)
            if skip_mode == "both":  # the lane reads its whole compressed weight stream
                c["weight_buf_read_bits"] += len(nz_w) * (_C + ib)
            if skip_mode in ("weight", "both"):  # the token copied into this PE's copy
                c["act_gather_write_bits"] += k * _A
            lanes.append([ch, schedule_chunks(work, simd, nb, ports), 0])
        if skip_mode in ("none", "weight", "both"):
            c["act_buf_read_bits"] += k * _A  # the dense token, read once per fold
        else:
            c["act_buf_read_bits"] += len(nz_a) * (_A + ib)  # the compressed (value, index) stream
        writer = k if skip_mode in ("weight", "both") else 0
        return {"m": m, "lanes": lanes, "writer": writer}

    # ticks from a token entering the scheduler's register to its chunk's issue (act only)
    sched_lag = 1 if skip_mode == "act" else 0
    last_issue = -1  # tick in which the last chunk so far was issued to the array
    tick = 0
    for _ in range(latency_cycles):  # DRAM latency before the first transfer
        tick += 1
    loaded = [False] * n_steps
    dma = None  # [step, bytes left, decode ticks left or None]
    next_dma = 0  # next step whose load the DMA has not started
    comp_step, slot, tok_i = None, None, 0
    started = -1  # last step the array started
    finished = -1  # last step the array finished
    step_ticks = [0] * n_steps

    def dma_bytes(j: int) -> Fraction:
        f, b = steps[j]
        lw, la = loads[j]
        return (fold_w_bytes if lw else Fraction(0)) + (block_dram_bytes(b) if la else 0)

    def complete_load(j: int) -> None:
        loaded[j] = True
        f, b = steps[j]
        lw, la = loads[j]
        if lw:
            c["dram_weight_bits"] += math.ceil(pe * k * bpw)
            if weight_format == "ternary1.6":
                c["base3_decodes"] += -(-(pe * k) // 5)
            for ch in real_lanes(f):
                if skip_mode in ("none", "act"):
                    c["weight_buf_write_bits"] += k * _C
                else:
                    c["weight_buf_write_bits"] += int(np.count_nonzero(w[ch])) * (_C + ib)
        if la:
            bits = block_dram_bytes(b) * 8
            c["dram_act_bits"] += bits
            if skip_mode == "act":  # the buffer stores every slot of the block's chunks: value + index
                slots = 0
                for m in range(bounds[b][0], bounds[b][1]):
                    slots += tw[m] * simd
                c["act_buf_write_bits"] += slots * (_A + ib)
            else:
                c["act_buf_write_bits"] += bits

    while finished < n_steps - 1:
        # (1) control
        changed = True
        while changed:
            changed = False
            if comp_step is None and started + 1 < n_steps and loaded[started + 1]:
                comp_step = started = started + 1
                tok_i, slot = 0, None
                changed = True
            may_start = (started + 1) if double_buffering else (finished + 1)
            if dma is None and next_dma < n_steps and next_dma <= may_start:
                j = next_dma
                next_dma += 1
                nbytes = dma_bytes(j)
                dec = decode_latency_cycles if (weight_format == "ternary1.6" and loads[j][0]) else 0
                if nbytes == 0 and dec == 0:
                    complete_load(j)
                else:
                    dma = [j, nbytes, None if nbytes > 0 else dec]
                changed = True
        # (2) work: DMA
        dma_done = None
        if dma is not None:
            if dma[2] is None:
                dma[1] -= bpc
                if dma[1] <= 0:
                    dec = decode_latency_cycles if (weight_format == "ternary1.6" and loads[dma[0]][0]) else 0
                    dma[2] = dec
                    if dec == 0:
                        dma_done = dma[0]
            else:
                dma[2] -= 1
                if dma[2] <= 0:
                    dma_done = dma[0]
        # (2) work: array, one chunk per lane, the copy writer SIMD activations
        comp_done = None
        if comp_step is not None:
            f, b = steps[comp_step]
            step_ticks[comp_step] += 1
            last_issue = tick + sched_lag
            if slot is None:
                slot = token_slot(f, starts[b] + tok_i)
            m = slot["m"]
            for lane in slot["lanes"]:
                ch, chunks, pos = lane
                if pos < len(chunks):
                    sel = list(chunks[pos].values())
                    c["acc_updates"] += 1
                    c["pairs_processed"] += len(sel)
                    if skip_mode != "none":
                        c["index_decodes"] += len(sel)
                    if skip_mode in ("none", "act"):
                        c["weight_buf_read_bits"] += len(sel) * _C
                    elif skip_mode == "weight":
                        c["weight_buf_read_bits"] += len(sel) * (_C + ib)
                    if skip_mode in ("weight", "both"):
                        c["act_gather_read_bits"] += len(sel) * _A
                    if x is not None and sel:
                        y[m, ch] += int(sum(w[ch, kk] * x[m, kk] for kk in sel))
                    lane[2] = pos + 1
            if slot["writer"] > 0:
                slot["writer"] -= simd
            if slot["writer"] <= 0 and all(pos >= len(chunks) for _, chunks, pos in slot["lanes"]):
                c["out_buf_write_bits"] += len(slot["lanes"]) * _Y
                c["requant_mults"] += len(slot["lanes"])
                tok_i, slot = tok_i + 1, None
                if starts[b] + tok_i >= bounds[b][1]:
                    comp_done = comp_step
        tick += 1
        # (3) completions
        if dma_done is not None:
            complete_load(dma_done)
            dma = None
        if comp_done is not None:
            comp_step = None
            finished = comp_done

    while tick <= last_issue:  # the scheduler's register still holds the last chunk
        tick += 1
    for _ in range(_default_fill(simd, tree_stages)):  # drain lane register, adder tree, accumulator
        tick += 1
    spill = 0
    out_bytes = m_tok * n * _Y // 8
    if out_buffer_bytes is not None and out_bytes > out_buffer_bytes:
        left = Fraction(out_bytes)
        while left > 0:  # the DMA writes the output that does not fit the output buffer
            left -= bpc
            tick += 1
            spill += 1
        c["dram_spill_bits"] += out_bytes * 8
    return {"cycles": tick, "compute": np.array(step_ticks, np.int64), "loop_order": loop_order,
            "token_blocks": t, "spill": spill, "scheduler_lag": sched_lag, "counts": c, "y": y}


def reference_dense(m: int, k: int, n: int, batch: int, rows: int, cols: int, pipeline_cycles: int, *,
                    weights: bool = False, dram_bytes_per_cycle: float = 16.0, latency_cycles: int = 0,
                    weight_buffer_bytes: int | None = None, readback_bytes: int = 0,
                    out_buffer_bytes: int | None = None) -> dict:
    """Step the output-stationary int8 grid: one tile of ``rows x cols`` outputs per ``k`` ticks.

    With ``weights``: the DMA streams one ``k x cols_j`` column slice per output-column tile into
    a two-half weight buffer; tile column j computes when its slice is in, and slice j+1 loads
    while column j computes. ``readback_bytes`` are streamed in before anything starts;
    an output over ``out_buffer_bytes`` is written out after the pipeline drains.
    """
    bpc = Fraction(dram_bytes_per_cycle)
    tick = 0
    counts = {"int8_weight_buf_write_bits": 0, "int8_weight_buf_read_bits": 0, "dram_int8_weight_bits": 0,
              "dram_spill_bits": 0}
    left = Fraction(readback_bytes)
    while left > 0:
        left -= bpc
        tick += 1
    counts["dram_spill_bits"] += readback_bytes * 8
    col_starts = list(range(0, n, cols))
    if not weights:
        for _ in range(batch):
            for _r0 in range(0, m, rows):
                for _c0 in col_starts:
                    for _kk in range(k):
                        tick += 1
    else:
        assert weight_buffer_bytes is None or 2 * k * cols <= weight_buffer_bytes
        for _ in range(latency_cycles):
            tick += 1
        slices = [batch * k * min(cols, n - c0) for c0 in col_starts]
        in_buf = [False] * len(slices)
        dma_j, dma_left = 0, Fraction(slices[0])
        comp_j, comp_left, started, done = None, 0, -1, -1
        while done < len(slices) - 1:
            if comp_j is None and started + 1 < len(slices) and in_buf[started + 1]:
                comp_j = started = started + 1
                comp_left = batch * len(range(0, m, rows)) * k  # every row tile of the column, k ticks each
                if dma_j is None and comp_j + 1 < len(slices):
                    dma_j, dma_left = comp_j + 1, Fraction(slices[comp_j + 1])
            dma_finished = None
            if dma_j is not None:
                dma_left -= bpc
                if dma_left <= 0:
                    dma_finished = dma_j
            comp_finished = None
            if comp_j is not None:
                comp_left -= 1
                if comp_left == 0:
                    comp_finished = comp_j
            tick += 1
            if dma_finished is not None:
                in_buf[dma_finished] = True
                counts["dram_int8_weight_bits"] += slices[dma_finished] * 8
                counts["int8_weight_buf_write_bits"] += slices[dma_finished] * 8
                # each row tile of this column reads the whole slice once
                counts["int8_weight_buf_read_bits"] += slices[dma_finished] * 8 * len(range(0, m, rows))
                dma_j = None
            if comp_finished is not None:
                comp_j, done = None, comp_finished
    tick += pipeline_cycles
    out_bytes = batch * m * n
    if out_buffer_bytes is not None and out_bytes > out_buffer_bytes:
        left = Fraction(out_bytes)
        while left > 0:
            left -= bpc
            tick += 1
        counts["dram_spill_bits"] += out_bytes * 8
    return {"cycles": tick, "counts": counts}


def _systolic_tiles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> list[dict]:
    """Folds of a dense ``[m,k] x [k,n]`` GEMM on a ``rows x cols`` systolic array in SCALE-Sim's
    order (row tiles outer, column tiles inner), each with the operand slices it feeds in."""
    # which GEMM dimension sits on the array rows / columns and which one streams in time
    on_rows, on_cols, streamed = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]
    folds = []
    row_starts = list(range(0, on_rows, rows))
    for ri, r0 in enumerate(row_starts):
        r = min(rows, on_rows - r0)
        for c0 in range(0, on_cols, cols):
            c = min(cols, on_cols - c0)
            if dataflow == "os":  # outputs r x c stay; K streams: weights K x c, inputs r x K
                f = {"w": k * c, "a": r * k, "out": r * c, "final": True}
            elif dataflow == "ws":  # weights r x c stay; the M tokens stream
                f = {"w": r * c, "a": m * r, "out": m * c, "final": ri == len(row_starts) - 1}
            else:  # inputs r x c stay; the N outputs stream
                f = {"w": r * n, "a": r * c, "out": c * n, "final": ri == len(row_starts) - 1}
            # SCALE-Sim's demand rows: (load the stationary operand: rows) + streamed + drain
            # (cols - 1) + skew over the array rows (rows - 1)
            load = 0 if dataflow == "os" else rows
            f["ticks"] = load + streamed + (cols - 1) + (rows - 1)
            folds.append(f)
    folds[-1]["ticks"] -= 1  # it reports the index of the last write, counted from 0
    return folds


def reference_systolic(m: int, n: int, k: int, *, rows: int, cols: int, dataflow: str,
                       weight_format: str = "ternary2", dram_bytes_per_cycle: float = 16.0,
                       double_buffering: bool = True, decode_latency_cycles: int = 0, latency_cycles: int = 0,
                       act_resident: bool = True, out_buffer_bytes: int | None = None) -> dict:
    """Step a dense ternary layer on the systolic array fold by fold, DMA and array as two units
    (fold f+1's slices load while fold f computes, or after it without double buffering)."""
    bpw = _bits_per_weight(weight_format)
    bpc = Fraction(dram_bytes_per_cycle)
    folds = _systolic_tiles(m, n, k, rows, cols, dataflow)
    c = dict(pairs_processed=m * n * k, acc_updates=m * n * k, weight_buf_write_bits=0, weight_buf_read_bits=0,
             act_buf_read_bits=0, act_buf_write_bits=0, out_buf_write_bits=0, requant_mults=m * n,
             dram_weight_bits=0, dram_act_bits=0, dram_spill_bits=0, base3_decodes=0)
    tick = latency_cycles
    loaded = [False] * len(folds)
    dma, next_dma = None, 0
    comp, comp_left, started, finished = None, 0, -1, -1
    compute_ticks = 0
    def finish(j: int) -> None:
        f = folds[j]
        c["weight_buf_read_bits"] += f["w"] * _C
        c["act_buf_read_bits"] += f["a"] * _A
        c["out_buf_write_bits"] += f["out"] * (_Y if f["final"] else 32)  # partial sums are int32

    while finished < len(folds) - 1:
        if comp is None and started + 1 < len(folds) and loaded[started + 1]:
            comp = started = started + 1
            comp_left = folds[comp]["ticks"]
            if comp_left == 0:  # a 1 x 1 array's last fold of one streamed row: nothing left to write
                finish(comp)
                comp, finished = None, comp
                continue
        may_start = (started + 1) if double_buffering else (finished + 1)
        if dma is None and next_dma < len(folds) and next_dma <= may_start:
            f = folds[next_dma]
            dma = [next_dma, f["w"] * bpw / 8 + (0 if act_resident else f["a"]), None]
            next_dma += 1
        done_dma = done_comp = None
        if dma is not None:
            if dma[2] is None:
                dma[1] -= bpc
                if dma[1] <= 0:
                    dma[2] = decode_latency_cycles if weight_format == "ternary1.6" else 0
                    if dma[2] == 0:
                        done_dma = dma[0]
            else:
                dma[2] -= 1
                if dma[2] <= 0:
                    done_dma = dma[0]
        if comp is not None:
            comp_left -= 1
            compute_ticks += 1
            if comp_left == 0:
                done_comp = comp
        tick += 1
        if done_dma is not None:
            f = folds[done_dma]
            loaded[done_dma] = True
            c["dram_weight_bits"] += math.ceil(f["w"] * bpw)
            c["weight_buf_write_bits"] += f["w"] * _C
            if weight_format == "ternary1.6":
                c["base3_decodes"] += -(-f["w"] // 5)
            if not act_resident:
                c["dram_act_bits"] += f["a"] * _A
                c["act_buf_write_bits"] += f["a"] * _A
            dma = None
        if done_comp is not None:
            finish(done_comp)
            comp, finished = None, done_comp
    spill = 0
    if out_buffer_bytes is not None and m * n > out_buffer_bytes:
        left = Fraction(m * n)
        while left > 0:
            left -= bpc
            tick += 1
            spill += 1
        c["dram_spill_bits"] += m * n * 8
    return {"cycles": tick, "compute": compute_ticks, "spill": spill, "counts": c}
