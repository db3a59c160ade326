"""Fast cycle engine: exactly the counts of docs/engine.md (version 2), vectorised with numpy.

Stages (each a pure function, testable alone):

1. cycles of token m in fold f, ``c(m, f)`` (:func:`token_cycles`): channel k lives in bank
   ``k mod B``; a chunk holds at most ``q = SIMD / B`` work channels of a bank, so a lane needs
   ``g = max(1, max_b ceil(w_b / q))`` chunks (work = K, nz(x_m), nz(w_p) or their intersection
   per skip mode); ``weight``/``both`` wait for the token's copy load, ``max(g, ceil(K / SIMD))``;
   the fold's lanes run in lockstep (max over its real lanes).
2. token tiling (:func:`token_blocks`, the board driver's function): resident input, or blocks
   filled token by token up to ``floor(D_a / h)`` activation-buffer words (act: chunks) and the
   output buffer's tokens;
   loop order ``fold_outer`` / ``token_outer`` / ``auto`` (:func:`ternary_format.tiling.choose_loop_order`,
   least DRAM bytes; the board driver passes the same order to the IP).
3. per step ``(f, b)`` (:func:`ternary_format.tiling.loop_steps`): ``C_j`` = the block's token cycles
   in fold f, ``X_j = ceil(bytes_j / D)`` (+ the 1.6-bit decoder latency after a weight load) for
   what differs from the previous step (the fold's weights, the block's activations: in ``act`` the
   IP's bank-scheduled stream, :func:`ternary_format.tiling.act_stream_bytes`; else int8 ``M_b x K``).
4. overlap (:func:`layer_cycles`): ``L + X_0 + sum_j max(C_j, X_{j+1}) + fill`` with double
   buffering, else ``L + sum_j (X_j + C_j) + fill``; plus, in ``act``, the bank scheduler's one
   cycle (:func:`scheduler_fill_cycles`) and an output spill (:func:`output_spill`).

Example (K = 8, SIMD = 4, B = 4 so q = 1, PE = 2, mode ``act``; token 0 has nonzeros at channels
0, 4, 5, 6, 7, token 1 none): bank 0 holds 0 and 4 -> token 0 takes 2 cycles, token 1 takes 1
(the accumulator write) -> ``C_f`` = 3 for every fold (with B = 1 token 0 takes ceil(5/4) = 2 too).

:func:`ternary_layer` also returns every action count the energy model charges;
:func:`dense_op` / :func:`vector_op` time the int8 and vector units (int8 weights streamed,
spills, read-back). :mod:`sim.reference` steps the same machine tick by tick.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from sim.errors import SimInputError
from ternary_format.tiling import act_stream_bytes, choose_loop_order, loop_steps
from ternary_format.tiling import passes as _passes

SKIP_MODES = ("none", "act", "weight", "both")
ACT_BITS = 8
OUT_BITS = 8
CODE_BITS = 2  # on-chip weight code (the buffer holds 2-bit codes; ternary1.6 is decoded on the way in)


def fill_cycles(simd: int, tree_stages: int | None = None) -> int:
    """Pipeline fill of the array: adder-tree stages (default ``ceil(log2 SIMD)``) + lane register + accumulator."""
    if tree_stages is None:
        tree_stages = math.ceil(math.log2(simd)) if simd > 1 else 0
    return int(tree_stages) + 2


def scheduler_fill_cycles(skip_mode: str) -> int:
    """docs/engine.md section 4: in ``act`` the bank scheduler (``rtl/bank_scheduler.v``) registers
    a token one cycle before it issues the token's first chunk. Steps, DMA starts and stalls are
    timed on the token stream and the scheduler takes the next token in the cycle it issues the
    current one's last chunk, so the chunk stream lags by exactly one cycle: charged once per
    layer, like the fill. Other modes have no scheduler (0)."""
    _check_mode(skip_mode)
    return 1 if skip_mode == "act" else 0


def index_bits(k: int) -> int:
    """Bits of one channel index in a compressed stream: ``ceil(log2 K)`` (at least 1)."""
    return max(1, math.ceil(math.log2(k))) if k > 1 else 1


def _check_mode(skip_mode: str) -> None:
    if skip_mode not in SKIP_MODES:
        raise SimInputError(f"skip_mode {skip_mode!r}; allowed: {', '.join(SKIP_MODES)}")


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)


def _fold_max(per_channel: np.ndarray, n: int, pe: int) -> np.ndarray:
    """Max over the PE lanes of each fold along the last axis (padding lanes count 0)."""
    n_f = -(-n // pe)
    pad = n_f * pe - n
    if pad:
        widths = [(0, 0)] * (per_channel.ndim - 1) + [(0, pad)]
        per_channel = np.pad(per_channel, widths)
    return per_channel.reshape(per_channel.shape[:-1] + (n_f, pe)).max(axis=-1)


def _check_gather(simd: int, banks: int | None, ports: int) -> int:
    """Validate ``banks``/``ports`` against ``simd`` (docs/engine.md section 3); return ``B``."""
    b = simd if banks is None else banks
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1 or simd % b:
        raise SimInputError(f"banks = {banks!r}; allowed: a divisor of simd = {simd} (or None = simd)")
    if ports not in (1, 2):
        raise SimInputError(f"ports = {ports!r}; allowed: 1 or 2")
    if simd % (b * ports):
        raise SimInputError(f"banks x ports = {b} x {ports} does not divide simd = {simd}; allowed: a divisor of simd")
    return int(b)


def bank_counts(mask: np.ndarray, banks: int) -> np.ndarray:
    """Per row, the True entries in each bank: channel ``k`` lives in bank ``k mod banks``.
    bool ``[R, K]`` -> int64 ``[R, banks]``."""
    mask = np.asarray(mask, dtype=bool)
    r, k = mask.shape
    pad = -k % banks
    if pad:
        mask = np.pad(mask, ((0, 0), (0, pad)))
    # row-major [R, K/B, B]: element (a, b) is channel a * B + b, i.e. bank b at address a
    return mask.reshape(r, -1, banks).sum(axis=1, dtype=np.int64)


def _bank_lane_cycles(max_bank_work: np.ndarray, lanes_per_bank: int) -> np.ndarray:
    """``g = max(1, ceil(busiest bank's work / q))``."""
    return np.maximum(1, _ceil_div(np.asarray(max_bank_work, np.int64), lanes_per_bank))


def token_cycles(act_mask: np.ndarray, w: np.ndarray, pe: int, simd: int, skip_mode: str, *,
                 banks: int | None = None, ports: int = 1) -> np.ndarray:
    """docs/engine.md section 3 ``c(m, f)``: int64 ``[M, N_f]``, cycles of token m in fold f.

    Per PE lane p: ``g(m, p) = max(1, max_b ceil(w_b(m, p) / q))`` with ``q = SIMD / B`` and
    ``w_b`` the lane's work channels in bank b (``none``: all K; ``act``: nz(x_m); ``weight``:
    nz(w_p); ``both``: the intersection); ``weight``/``both`` add the token-load bound
    ``max(g, ceil(K / SIMD))``; the fold takes the max over its real PE lanes (lockstep).
    ``banks=None`` is ``B = SIMD``; ``ports`` (1 or 2) only changes the replicas, not the cycles.
    """
    _check_mode(skip_mode)
    b = _check_gather(simd, banks, ports)
    q = simd // b
    act_mask = np.asarray(act_mask, dtype=bool)
    w = np.asarray(w)
    m, k = act_mask.shape
    n = w.shape[0]
    if w.shape[1] != k:
        raise SimInputError(f"weights have K = {w.shape[1]} but the activation mask has K = {k}")
    n_f = -(-n // pe)
    if skip_mode == "none":
        g = _bank_lane_cycles(-(-k // b), q)  # bank 0 holds ceil(K / B) channels, the most
        return np.full((m, n_f), int(g), dtype=np.int64)
    if skip_mode == "act":
        g = _bank_lane_cycles(bank_counts(act_mask, b).max(axis=1), q)  # [M]
        return np.repeat(g[:, None], n_f, axis=1).astype(np.int64)
    load = max(1, -(-k // simd))
    wnz = w != 0
    if skip_mode == "weight":
        per_ch = np.maximum(_bank_lane_cycles(bank_counts(wnz, b).max(axis=1), q), load)  # [N]
        per_fold = _fold_max(per_ch[None, :], n, pe)  # [1, N_f]
        return np.repeat(per_fold, m, axis=0).astype(np.int64)
    from sim.trace import bank_max_intersections
    busiest = bank_max_intersections(act_mask, wnz, b)  # [M, N]: max over banks of the intersection
    per = np.maximum(_bank_lane_cycles(busiest, q), load)  # [M, N]
    return _fold_max(per, n, pe).astype(np.int64)


def fold_compute_cycles(act_mask: np.ndarray, w: np.ndarray, pe: int, simd: int, skip_mode: str, *,
                        banks: int | None = None, ports: int = 1) -> np.ndarray:
    """``C_f`` of one token block for every fold: the column sums of :func:`token_cycles`
    (int64 ``[N_f]``); ``banks=None`` is the default machine ``B = SIMD``."""
    return token_cycles(act_mask, w, pe, simd, skip_mode, banks=banks, ports=ports).sum(axis=0, dtype=np.int64)


@functools.lru_cache(maxsize=1 << 14)  # a layer's steps repeat a few (bytes, D) pairs; Fractions are slow
def transfer_cycles(nbytes: Fraction | int | float, bytes_per_cycle: float) -> int:
    """``ceil(bytes / bytes_per_cycle)``, exact (rational arithmetic on the float's exact value)."""
    q = Fraction(nbytes) / Fraction(bytes_per_cycle)
    return int(math.ceil(q))


def weight_fold_bytes(pe: int, k: int, weight_format: str) -> Fraction:
    """DRAM bytes of one fold's weights, docs/engine.md: ``PE * K * bits_per_weight / 8`` (1.6 = 8/5)."""
    bits = Fraction(2) if weight_format == "ternary2" else Fraction(8, 5)
    return pe * k * bits / 8


def act_buffer_bytes(m: int, k: int) -> int:
    """Bytes of a layer's input in the activation buffer: dense int8 ``M x K`` as the previous
    layer wrote it (in ``act``/``both`` modes the top-k unit emits the compressed (index, value)
    stream as the array reads it, so reads are counted per nonzero but storage is dense)."""
    return m * k * ACT_BITS // 8


def layer_cycles(compute: np.ndarray, transfer: np.ndarray, *, double_buffering: bool, fill: int,
                 latency: int = 0) -> int:
    """Overlap of docs/engine.md: ``L + X_0 + sum_f max(C_f, X_{f+1}) + fill`` (or no overlap)."""
    compute = np.asarray(compute, dtype=np.int64)
    transfer = np.asarray(transfer, dtype=np.int64)
    if double_buffering:
        nxt = np.append(transfer[1:], 0)
        return int(latency + transfer[0] + np.maximum(compute, nxt).sum() + fill)
    return int(latency + transfer.sum() + compute.sum() + fill)


@dataclass
class LayerTiming:
    """Cycles and action counts of one ternary layer (counts are what sim.energy charges)."""

    name: str
    m: int
    k: int
    n: int
    folds: int
    cycles: int
    compute_cycles: int  # sum of C_j over the steps (= sum over tokens and folds of c(m, f))
    transfer_cycles: int  # sum of X_j
    stall_cycles: int  # cycles the array waits for transfers (cycles - compute - fill - scheduler fill - latency - spill)
    fill_cycles: int
    latency_cycles: int
    act_resident: bool
    counts: dict = field(default_factory=dict)
    conflict_cycles: int = 0  # compute cycles minus the same layer's with one bank of SIMD ports
    loop_order: str = "fold_outer"
    token_blocks: int = 1
    spill_cycles: int = 0  # writing an output that does not fit the output buffer to DRAM
    output_bytes: int = 0
    output_spilled: bool = False
    scheduler_fill_cycles: int = 0  # act: the bank scheduler's token register, once per layer
    # the steps in loop order: (fold f, block b, C_j, loads f's weights, loads b's activations,
    # activation DRAM bytes loaded); the ternary IP's C simulation reports the same per step
    steps: tuple = ()


@dataclass
class OpTiming:
    """Cycles and action counts of one int8-unit or vector-unit op."""

    name: str
    cycles: int
    counts: dict
    spill_cycles: int = 0  # its own output written to DRAM
    readback_cycles: int = 0  # its input streamed back from DRAM (the previous op spilled)
    transfer_cycles: int = 0  # int8 weight column slices (dense ops with weights)
    latency_cycles: int = 0
    output_bytes: int = 0
    output_spilled: bool = False


def _check_accumulator(op, arch) -> None:
    """The signed accumulator must hold a sum of K products w * x (w in {-1, 0, 1}, x int8) without
    overflow: the sums lie in [-127 K, 128 K] (128 K when every x = -128 and w = -1), and a signed
    ``bits``-bit register holds [-2^(bits-1), 2^(bits-1) - 1], so it needs 128 K <= 2^(bits-1) - 1,
    i.e. ``bits >= ceil(log2(128 K + 1)) + 1`` (K = 256: 128 K = 2^15 needs 17 bits, not 16)."""
    bits = arch.spec.compute.accumulator_bits
    if op.k * 128 >= 2 ** (bits - 1):
        need = (op.k * 128).bit_length() + 1  # = ceil(log2(128 K + 1)) + 1
        raise SimInputError(f"{arch.source}: compute.accumulator_bits = {bits} can overflow on layer "
                            f"{op.name!r} (K = {op.k} int8 products); need at least {need} bits")


def _check_weight_buffer(op, arch) -> None:
    c = arch.spec.compute
    b = c.banks
    h = 2 if arch.spec.double_buffering else 1
    from sim.buffers import k_max  # docs/engine.md section 6's K_max, one definition

    kmax = k_max(arch)
    if op.k > kmax:
        need_kb = Fraction(-(-op.k // b) * b * h * c.pe * CODE_BITS, 8192)
        raise SimInputError(
            f"{arch.source}: buffers.weights_kb = {arch.spec.buffers.weights_kb:g} holds folds of at most "
            f"K = {kmax} ({h} half/halves of {c.pe} PE x 2-bit codes, K rounded down to a multiple of "
            f"{b} banks); layer {op.name!r} has K = {op.k}: need buffers.weights_kb >= {float(need_kb):g} "
            f"or a smaller compute.pe")


def output_spill(nbytes: int, arch) -> tuple[bool, int]:
    """docs/engine.md section 4: an output over ``buffers.outputs_kb`` is written to DRAM:
    ``(spilled, ceil(bytes / D) cycles)``."""
    if nbytes <= arch.spec.buffers.outputs_kb * 1024:
        return False, 0
    return True, transfer_cycles(nbytes, arch.dram_bytes_per_cycle)


def token_blocks(words, arch, *, input_in_dram: bool = False, name: str = "?") -> tuple[bool, list[tuple[int, int]]]:
    """``(resident, [(start, stop), ...])``: docs/engine.md section 4's token blocks of a layer whose
    tokens take ``words[m]`` words of the activation buffer (their chunks in ``act``, ``ceil(K / SIMD)``
    otherwise), by :func:`ternary_format.tiling.token_blocks` -- the function the board driver uses
    for its IP calls -- on this arch's activation-buffer depth (words) and output-buffer depth
    (tokens of one fold), section 6."""
    from sim.buffers import buffer_by_name
    from ternary_format.tiling import TokenTooLarge
    from ternary_format.tiling import token_blocks as _blocks

    bufs = buffer_by_name(arch)
    act = bufs["activations"]
    h = 2 if arch.spec.double_buffering else 1
    try:
        return _blocks(words, act["depth"], bufs["outputs"]["depth"], h, input_in_dram=input_in_dram)
    except TokenTooLarge as e:
        kb = arch.spec.buffers.activations_kb
        need = e.words * h * act["width_bits"] / 8192
        raise SimInputError(f"{arch.source}: buffers.activations_kb = {kb:g} holds {act['depth']} words of "
                            f"{act['width_bits']} bits, a token block at most {e.cap_words}; one token of layer "
                            f"{name!r} takes {e.words} words: need buffers.activations_kb >= {need:g}") from None


def both_chunk_sum(op, banks: int, lanes_per_bank: int) -> int:
    """``both`` mode: sum over tokens m and output channels p of the lane's chunks
    ``g = max(1, max_b ceil(|nz(x_m) ∩ nz(w_p) ∩ bank b| / q))`` (its accumulator updates).

    By :func:`sim.both_kernel.chunk_totals` on the op's cached bank-byte masks (AND + popcount of
    each bank's words and a running max over the banks, in a small C loop, else numpy); nothing of
    size ``M x N`` is kept. Cached per op, banks and q; the C loop's sum of the intersections (the
    pairs processed) is cached too, under ``BOTH_PAIRS_KEY``.
    """
    from sim.both_kernel import chunk_totals

    key = ("both_chunks", banks, lanes_per_bank)
    cache = getattr(op, "_cache", None)
    if cache is not None and key in cache:
        return cache[key]
    total, pairs = chunk_totals(op.act_bank_bytes(banks), op.weight_bank_bytes(banks), lanes_per_bank)
    if cache is not None:  # a sweep simulates the same op on many archs
        cache[key] = total
        if pairs is not None:
            cache[BOTH_PAIRS_KEY] = pairs
    return total


BOTH_PAIRS_KEY = ("both_pairs",)  # op._cache: sum over (m, n) of |nz(x_m) ∩ nz(w_n)|, from the C loop


def weight_bank_max(op, banks: int) -> np.ndarray:
    """Per output channel p, its busiest bank's nonzero weights ``max_b |nz(w_p) ∩ bank b|``,
    int64 ``[N]``, from the op's cached bank-byte mask (uint8 popcounts, no unpacking)."""
    wb = op.weight_bank_bytes(banks)  # [bytes per bank, B, N]
    return np.bitwise_count(wb).sum(axis=0, dtype=np.int64).max(axis=0)


def ternary_layer(op, arch, *, input_in_dram: bool = False, token_tile: int | None = None,
                  output_piped: bool = False) -> LayerTiming:
    """Cycles and action counts of a :class:`sim.trace.TernaryLinearOp` on ``arch``
    (docs/engine.md sections 3 and 4; ``compute.mode: systolic`` goes to :func:`systolic_layer`).
    ``input_in_dram``: the previous op spilled its output, so this layer's input is tiled from DRAM.
    ``token_tile``: the ``pipelined`` schedule (docs/engine.md section 5a): the input arrives from the
    previous unit in on-chip tiles of that many tokens and the layer runs ``token_outer`` over them
    (every fold's weights reloaded per tile when ``N_f > 1``). ``output_piped``: the output goes tile by
    tile (or head by head) to the next unit through the pipeline buffers, not into the output buffer
    (never spills)."""
    c = arch.spec.compute
    if c.mode == "systolic":
        return systolic_layer(op, arch, input_in_dram=input_in_dram)
    pe, simd, mode, fmt = c.pe, c.simd, c.skip_mode, c.weight_format
    banks, q = c.banks, c.lanes_per_bank
    m, k, n = op.m, op.k, op.n
    n_f = -(-n // pe)
    idx = index_bits(k)
    _check_weight_buffer(op, arch)
    _check_accumulator(op, arch)

    nnz_act = op.act_nnz_per_row()
    nnz_w = op.weight_nnz_per_row()
    tot_a, tot_w = int(nnz_act.sum()), int(nnz_w.sum())
    load = max(1, -(-k // simd))  # ceil(K / SIMD): a token's copy load (weight/both), all of K (none)

    # c(m, f) [M, N_f] and the lane chunk counts g (accumulator updates), docs/engine.md section 3
    if mode == "none":
        tok = np.full((m, n_f), load, np.int64)
        acc = m * n * load
        one_bank = tok
    elif mode == "act":
        g = _bank_lane_cycles(bank_counts(op.act_mask, banks).max(axis=1), q)  # [M]
        tok = np.repeat(g[:, None], n_f, axis=1)
        acc = n * int(g.sum())
        one_bank = np.repeat(_bank_lane_cycles(nnz_act, simd)[:, None], n_f, axis=1)
    elif mode == "weight":
        g = _bank_lane_cycles(weight_bank_max(op, banks), q)  # [N]
        acc = m * int(g.sum())
        # a lane's work never exceeds ceil(K / B) in a bank, so g <= ceil(K / SIMD) = load
        tok = np.full((m, n_f), load, np.int64)
        one_bank = tok
    else:
        acc = both_chunk_sum(op, banks, q)
        tok = np.full((m, n_f), load, np.int64)  # g <= load as in 'weight'
        one_bank = tok
    compute_total = int(tok.sum())
    conflict = compute_total - int(one_bank.sum())

    # token tiling and loop order, docs/engine.md section 4
    words = g if mode == "act" else np.full(m, load, np.int64)  # the token's activation-buffer words
    if token_tile is not None and not input_in_dram:
        resident, bounds = True, [(s, min(m, s + token_tile)) for s in range(0, m, token_tile)]
    else:
        resident, bounds = token_blocks(words, arch, input_in_dram=input_in_dram, name=op.name)
    t = len(bounds)
    # DRAM bytes of a block's activations: in act the bank-scheduled stream the ternary IP's AXI
    # master reads (uint32 slots + uint16 chunk counts); the other modes' IP is not built, their
    # input is charged as the dense int8 tokens
    if mode == "act":
        block_bytes = [act_stream_bytes(int(g[s:e].sum()), simd, e - s) for s, e in bounds]
        act_bytes = act_stream_bytes(int(g.sum()), simd, m)
    else:
        block_bytes = [(e - s) * k * ACT_BITS // 8 for s, e in bounds]
        act_bytes = act_buffer_bytes(m, k)
    fold_bytes = weight_fold_bytes(pe, k, fmt)
    order = choose_loop_order(arch.spec.buffers.loop_order, n_f, t, resident, fold_bytes, act_bytes)
    if token_tile is not None and not input_in_dram:
        order = "token_outer"
    bpc = arch.dram_bytes_per_cycle
    dec = c.decode_latency_cycles if fmt == "ternary1.6" else 0
    block_c = np.add.reduceat(tok, np.array([b0 for b0, _ in bounds]), axis=0)  # [T, N_f]
    comp, xfer, steps = [], [], []
    prev_f = prev_b = None
    for f, b in loop_steps(n_f, t, order):
        nbytes, w_load, a_load = Fraction(0), f != prev_f, not resident and b != prev_b
        if w_load:
            nbytes += fold_bytes
        if a_load:
            nbytes += block_bytes[b]
        comp.append(int(block_c[b, f]))
        steps.append((f, b, comp[-1], w_load, a_load, block_bytes[b] if a_load else 0))
        xfer.append(transfer_cycles(nbytes, bpc) + (dec if w_load else 0))
        prev_f, prev_b = f, b
    fill = fill_cycles(simd, c.tree_stages)
    sched = scheduler_fill_cycles(mode)
    lat = arch.dram_latency_cycles
    out_bytes = m * n * OUT_BITS // 8
    spilled, spill = (False, 0) if output_piped else output_spill(out_bytes, arch)
    cycles = layer_cycles(np.array(comp), np.array(xfer), double_buffering=arch.spec.double_buffering,
                          fill=fill, latency=lat) + sched + spill
    pw, pa = _passes(order, n_f, t, resident)

    # action counts (sim.reference counts the same actions event by event)
    if mode == "none":
        processed = m * n * k
        w_read = processed * CODE_BITS
        a_read = n_f * m * k * ACT_BITS
        w_write = n * k * CODE_BITS
    elif mode == "act":
        processed = n * tot_a
        w_read = processed * CODE_BITS
        a_read = n_f * tot_a * (ACT_BITS + idx)
        w_write = n * k * CODE_BITS
    elif mode == "weight":
        processed = m * tot_w
        w_read = processed * (CODE_BITS + idx)
        a_read = n_f * m * k * ACT_BITS  # the dense token read that fills the PE copies
        w_write = tot_w * (CODE_BITS + idx)
    else:
        # the sum of the M x N intersections: from the chunk loop when it had it, else sum_k nnz_x(k) nnz_w(k)
        processed = getattr(op, "_cache", {}).get(BOTH_PAIRS_KEY)
        if processed is None:
            processed = op.intersection_total()
        w_read = m * tot_w * (CODE_BITS + idx)
        a_read = n_f * m * k * ACT_BITS
        w_write = tot_w * (CODE_BITS + idx)
    gathered = mode in ("weight", "both")
    dram_act = pa * act_bytes * ACT_BITS
    counts = {
        "pairs_dense": m * n * k,
        "pairs_processed": processed,
        "pairs_skipped": 0 if mode == "none" else m * n * k - processed,
        "acc_updates": acc,
        "index_decodes": 0 if mode == "none" else processed,
        "intersect_compares": n * tot_a + m * tot_w if mode == "both" else 0,
        "weight_buf_write_bits": pw * w_write,
        "weight_buf_read_bits": w_read,
        "act_buf_read_bits": a_read,
        # act: every slot of the loaded chunks, value + index bits as the buffer stores them (pads
        # included); the other modes: the dense bytes loaded
        "act_buf_write_bits": pa * int(g.sum()) * simd * (ACT_BITS + idx) if mode == "act" else dram_act,
        "act_gather_write_bits": m * n * k * ACT_BITS if gathered else 0,
        "act_gather_read_bits": processed * ACT_BITS if gathered else 0,
        "out_buf_write_bits": m * n * OUT_BITS,
        "requant_mults": m * n,
        "dram_weight_bits": pw * n_f * int(math.ceil(fold_bytes * 8)),
        "dram_act_bits": dram_act,
        "dram_spill_bits": out_bytes * 8 if spilled else 0,
        "base3_decodes": pw * n_f * math.ceil(pe * k / 5) if fmt == "ternary1.6" else 0,
        "nnz_act": tot_a,
        "nnz_weight": tot_w,
    }
    return LayerTiming(op.name, m, k, n, n_f, cycles, compute_total, int(sum(xfer)),
                       cycles - compute_total - fill - sched - lat - spill, fill, lat, bool(resident), counts,
                       conflict_cycles=conflict, loop_order=order, token_blocks=t, spill_cycles=spill,
                       output_bytes=out_bytes, output_spilled=spilled, scheduler_fill_cycles=sched,
                       steps=tuple(steps))


def systolic_layer(op, arch, *, input_in_dram: bool = False) -> LayerTiming:
    """A ternary layer on a dense ``pe x simd`` systolic array (``compute.mode: systolic``).

    GEMM ``[M,K] x [K,N]`` (tokens, input, output channels) with rows = ``pe``, cols = ``simd``
    and ``compute.dataflow``; folds in SCALE-Sim's order (:func:`sim.systolic.systolic_folds`).

    - compute ``C_f``: SCALE-Sim v3's fold cycles (``os``: ``K + pe + simd - 2``; ``ws``/``is``:
      ``T + 2 pe + simd - 2``), the last one minus 1: ``sum C_f == systolic_cycles(M, N, K, pe,
      simd, dataflow)``; they include the array's fill and drain, so no docs/engine.md fill is added.
    - transfer ``X_f = ceil((w_f * bits / 8 + A_f) / B)`` (+ the ternary1.6 decoder latency): fold
      f fetches the weight slice it uses (``w_f`` weights; no reuse across folds) and, when the
      layer input does not fit the activation buffer, its activation slice (``A_f`` bytes).
    - layer cycles: the same overlap as docs/engine.md with ``fill = 0``: ``L + X_0 + sum_f
      max(C_f, X_{f+1})`` (double buffering) else ``L + sum_f (X_f + C_f)``.
    - actions (dense, nothing skipped): every pair M*N*K is one ternary add/sub and one
      accumulator (partial-sum) add; weight buffer written and read ``2 * sum w_f`` bits, the
      activation buffer read ``8 * sum a_f`` bits (each operand enters the array once per fold
      and moves PE to PE inside it); output buffer written 8 bits per final output and 32 bits
      per partial sum of an earlier K fold (``ws``/``is``; their read-back is not charged);
      DRAM ``sum ceil(w_f * bits)`` weight bits; one requantisation per output.
    - docs/engine.md section 4's output rule: an output over the output buffer spills
      (``ceil(M * N / D)`` cycles added); an input the previous op spilled is not resident.
    """
    from sim.systolic import systolic_folds

    c = arch.spec.compute
    pe, simd, fmt = c.pe, c.simd, c.weight_format
    m, k, n = op.m, op.k, op.n
    sf = systolic_folds(m, n, k, pe, simd, c.dataflow)
    w_max = int(sf.weight_elems.max())
    fold_buf_bytes = math.ceil(w_max * CODE_BITS / 8)
    halves = 2 if arch.spec.double_buffering else 1
    if halves * fold_buf_bytes > arch.spec.buffers.weights_kb * 1024:
        raise SimInputError(
            f"{arch.source}: weight buffer of {arch.spec.buffers.weights_kb:g} KiB cannot hold {halves} "
            f"systolic fold(s) ({c.dataflow}) of layer {op.name!r} ({w_max} 2-bit weights = {fold_buf_bytes} bytes "
            f"each); need buffers.weights_kb >= {halves * fold_buf_bytes / 1024:g} or a smaller array")
    _check_accumulator(op, arch)

    bits = Fraction(2) if fmt == "ternary2" else Fraction(8, 5)
    act_bytes = act_buffer_bytes(m, k)
    resident = not input_in_dram and act_bytes <= arch.spec.buffers.activations_kb * 1024
    dec = c.decode_latency_cycles if fmt == "ternary1.6" else 0
    bpc = arch.dram_bytes_per_cycle
    a_f = np.zeros_like(sf.act_elems) if resident else sf.act_elems * ACT_BITS // 8
    # exact rational ceil per distinct (weights, activation bytes) slice: only the edge tiles differ
    pairs_wa, inv = np.unique(np.stack([sf.weight_elems, a_f], axis=1), axis=0, return_inverse=True)
    per = np.array([transfer_cycles(int(w) * bits / 8 + int(a), bpc) for w, a in pairs_wa], dtype=np.int64)
    xfer = per[inv.reshape(-1)] + dec
    comp = sf.cycles
    lat = arch.dram_latency_cycles
    out_bytes = m * n * OUT_BITS // 8
    spilled, spill = output_spill(out_bytes, arch)
    cycles = layer_cycles(comp, xfer, double_buffering=arch.spec.double_buffering, fill=0, latency=lat) + spill

    pairs = m * n * k
    w_total = int(sf.weight_elems.sum())
    counts = {
        "pairs_dense": pairs,
        "pairs_processed": pairs,
        "pairs_skipped": 0,
        "acc_updates": pairs,
        "index_decodes": 0,
        "intersect_compares": 0,
        "weight_buf_write_bits": w_total * CODE_BITS,
        "weight_buf_read_bits": w_total * CODE_BITS,
        "act_buf_read_bits": int(sf.act_elems.sum()) * ACT_BITS,
        "out_buf_write_bits": int(np.where(sf.out_final, OUT_BITS, 32) @ sf.out_elems),
        "requant_mults": m * n,
        "dram_weight_bits": int(-(-(sf.weight_elems * bits.numerator) // bits.denominator).sum()),
        "dram_act_bits": 0 if resident else int(sf.act_elems.sum()) * ACT_BITS,
        "act_buf_write_bits": 0 if resident else int(sf.act_elems.sum()) * ACT_BITS,
        "act_gather_write_bits": 0,
        "act_gather_read_bits": 0,
        "dram_spill_bits": out_bytes * 8 if spilled else 0,
        "base3_decodes": int((-(-sf.weight_elems // 5)).sum()) if fmt == "ternary1.6" else 0,
        "nnz_act": int(op.act_nnz_per_row().sum()),
        "nnz_weight": int(op.weight_nnz_per_row().sum()),
    }
    compute_total = int(comp.sum())
    return LayerTiming(op.name, m, k, n, sf.gemm.folds, cycles, compute_total, int(xfer.sum()),
                       cycles - compute_total - lat - spill, 0, lat, bool(resident), counts,
                       loop_order="systolic", token_blocks=1, spill_cycles=spill, output_bytes=out_bytes,
                       output_spilled=spilled)


# ----------------------------------------------------------------------- int8 unit, vector unit

def dense_cycles(m: int, k: int, n: int, batch: int, rows: int, cols: int, pipeline_cycles: int) -> int:
    """Output-stationary ``rows x cols`` int8 grid: each output tile takes ``k`` cycles."""
    return batch * (-(-m // rows)) * (-(-n // cols)) * k + pipeline_cycles


def int8_weight_tiles(op, arch) -> tuple[list[int], list[int]]:
    """docs/engine.md section 5, a dense op with ``weights``: per output-column tile j,
    ``(C_j, X_j)`` = ``(batch * ceil(m/rows) * k, ceil(batch * k * cols_j / D))``; raises when the
    double-buffered ``k x cols`` slice (``2 * k * cols`` bytes) does not fit ``int8_weights_kb``."""
    u = arch.spec.int8_unit
    cap = arch.spec.buffers.int8_weights_kb * 1024
    if 2 * op.k * u.cols > cap:
        raise SimInputError(
            f"{arch.source}: buffers.int8_weights_kb = {arch.spec.buffers.int8_weights_kb:g} cannot hold two "
            f"{op.k} x {u.cols} int8 weight slices of {op.name!r} ({2 * op.k * u.cols} bytes); need "
            f"buffers.int8_weights_kb >= {2 * op.k * u.cols / 1024:g} or a smaller int8_unit.cols")
    bpc = arch.dram_bytes_per_cycle
    comp, xfer = [], []
    for c0 in range(0, op.n, u.cols):
        cols_j = min(u.cols, op.n - c0)
        comp.append(op.batch * (-(-op.m // u.rows)) * op.k)
        xfer.append(transfer_cycles(op.batch * op.k * cols_j, bpc))
    return comp, xfer


def dense_op(op, arch, *, readback_bytes: int = 0, output_piped: bool = False) -> OpTiming:
    """An int8-unit op (docs/engine.md section 5); ``readback_bytes``: its input, spilled by the
    previous op, streamed back from DRAM first (not overlapped)."""
    u = arch.spec.int8_unit
    tiles_m, tiles_n = -(-op.m // u.rows), -(-op.n // u.cols)
    weights = bool(getattr(op, "weights", False))
    lat = xfer_total = 0
    if weights:
        comp, xfer = int8_weight_tiles(op, arch)
        lat = arch.dram_latency_cycles
        # the int8 weight buffer is always double buffered (docs/engine.md section 5)
        cycles = layer_cycles(np.array(comp), np.array(xfer), double_buffering=True, fill=u.pipeline_cycles,
                              latency=lat)
        xfer_total = int(sum(xfer))
    else:
        cycles = dense_cycles(op.m, op.k, op.n, op.batch, u.rows, u.cols, u.pipeline_cycles)
    out_bytes = op.batch * op.m * op.n * OUT_BITS // 8
    spilled, spill = (False, 0) if output_piped else output_spill(out_bytes, arch)
    readback = transfer_cycles(readback_bytes, arch.dram_bytes_per_cycle) if readback_bytes else 0
    wbytes = op.batch * op.k * op.n
    counts = {
        "dsp_macs": op.macs,
        # each tile streams k rows of its A rows and k columns of its B columns (8 bits each);
        # B comes from the int8 weight buffer when it is weights
        "act_buf_read_bits": op.batch * op.k * ACT_BITS * (tiles_n * op.m + (0 if weights else tiles_m * op.n)),
        "out_buf_write_bits": op.batch * op.m * op.n * OUT_BITS,
        "int8_weight_buf_write_bits": wbytes * 8 if weights else 0,
        "int8_weight_buf_read_bits": wbytes * tiles_m * 8 if weights else 0,
        "dram_int8_weight_bits": wbytes * 8 if weights else 0,
        "dram_spill_bits": (out_bytes if spilled else 0) * 8 + readback_bytes * 8,
    }
    return OpTiming(op.name, cycles + spill + readback, counts, spill_cycles=spill, readback_cycles=readback,
                    transfer_cycles=xfer_total, latency_cycles=lat, output_bytes=out_bytes, output_spilled=spilled)


def vector_cycles(elements: int, kind: str, arch, row: int = 0, host: bool = False) -> int:
    """docs/engine.md section 5: lane groups of ``lanes`` elements, per row of ``row`` elements
    when the op has rows (LayerNorm tokens, softmax rows), times ``cycles_per_element``, plus
    ``row_op_cycles[kind]`` per row (the square root / reciprocal steps between a row's passes).
    ``host`` (a trace op's host flag) or a ``host``-mode unit: the host formula."""
    v = arch.spec.vector_unit
    if host or v.mode == "host":
        ns = v.host_call_overhead_us * 1e3 + elements * v.host_ns_per_element[kind]
        return int(math.ceil(ns * arch.spec.clock_mhz / 1e3 - 1e-9))
    groups = (elements // row) * (-(-row // v.lanes)) if row else -(-elements // v.lanes)
    row_steps = (elements // row) * v.row_op_cycles[kind] if row else 0
    return int(math.ceil(groups * v.cycles_per_element[kind] - 1e-9)) + row_steps + v.pipeline_cycles


def vector_topk_cycles(m: int, k: int, chunks: int | None, arch) -> int:
    """The top-k (and bank scheduling) of a ternary linear's input ``[m, k]`` on the vector unit
    (``tatvpr_topk_schedule``, docs/engine.md section 5): ``vector_cycles(m * k, "topk", arch, k)`` = two
    passes of ``ceil(k / lanes)`` lane groups a row (histogram, select) + ``row_op_cycles["topk"]`` (128:
    the threshold scan) a row + pipeline, and the act stream's emit pass, ``ceil(SIMD / lanes)`` cycles
    for each of its ``chunks`` chunks (the sum over rows of ``g(m)``); ``chunks`` None: the dense variant
    (the kept values in place, no emit pass). A ``host``-mode unit: the host formula of kind ``topk``."""
    v = arch.spec.vector_unit
    base = vector_cycles(m * k, "topk", arch, k)
    if v.mode == "host" or chunks is None:
        return base
    return base + int(chunks) * -(-arch.spec.compute.simd // v.lanes)


def vector_topk_counts(m: int, k: int, arch) -> dict:
    """The energy counts of :func:`vector_topk_cycles`' work: ``m x k`` elements of kind ``topk`` (priced
    ``vector_pj_per_element["topk"]``) and the 128 scan steps a row (``vector_row_step_pj``); a
    ``host``-mode unit: host elements."""
    v = arch.spec.vector_unit
    if v.mode == "host":
        return {"host_elements": m * k}
    return {"vector_elements": m * k, "vector_row_steps": m * v.row_op_cycles["topk"]}


def vector_op(op, arch, *, readback_bytes: int = 0, output_piped: bool = False) -> OpTiming:
    """A vector-unit op; its ``elements`` int8 outputs spill when over the output buffer, and an
    input the previous op spilled is streamed back first (docs/engine.md section 4)."""
    v = arch.spec.vector_unit
    host = v.mode == "host" or getattr(op, "host", False)
    cycles = vector_cycles(op.elements, op.kind, arch, getattr(op, "row", 0), host)
    if host:
        counts = {"host_elements": op.elements, "dram_act_bits": 2 * op.elements * ACT_BITS}
    else:
        row = getattr(op, "row", 0)
        # the row steps between a row's passes (vector_cycles' row term), priced per step in sim.energy
        counts = {"vector_elements": op.elements, "act_buf_read_bits": op.elements * ACT_BITS,
                  "out_buf_write_bits": op.elements * ACT_BITS,
                  "vector_row_steps": (op.elements // row) * v.row_op_cycles[op.kind] if row else 0}
    out_bytes = op.elements * ACT_BITS // 8
    spilled, spill = (False, 0) if output_piped else output_spill(out_bytes, arch)
    readback = transfer_cycles(readback_bytes, arch.dram_bytes_per_cycle) if readback_bytes else 0
    counts["dram_spill_bits"] = (out_bytes if spilled else 0) * 8 + readback_bytes * 8
    return OpTiming(op.name, cycles + spill + readback, counts, spill_cycles=spill, readback_cycles=readback,
                    output_bytes=out_bytes, output_spilled=spilled)
