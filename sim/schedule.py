"""Overlap between the three units (docs/engine.md section 5a): ``schedule.overlap``.

``none`` (default): ops run one after another; a query takes the sum of its ops' cycles.

``pipelined``: the query's ops are cut into **segments**; a segment is a chain of stages
(its ops, in trace order) that its `n` tiles flow through, each stage on its op's unit:

- a *row segment* is a maximal run of row-local ops over the query's `T` tokens (ternary
  linears of `m = T` rows, vector ops other than softmax whose elements are a multiple of `T`),
  tiled by `schedule.tile_tokens`: `n = ceil(T / tile_tokens)`;
- an *attention segment* is the qkv projection (a ternary linear directly followed by an int8-unit
  op without weights; its output columns computed head-major) and the run of int8-unit ops
  without weights (QK^T, P.V) and softmax ops after it, tiled by head: `n` = the smallest
  `batch` of its int8-unit ops;
- any other op is a segment of its own with `n = 1`: a different row count, an op whose input
  or output spills to DRAM, and an int8-unit linear with weights (its weights stream through a
  buffer of two column slices, so tiling its rows would stream every weight once per tile).

Segments run one after another (head h's attention needs every token's K_h and V_h: it starts
when the qkv folds of head h have finished; the projection after it needs every head; a
LayerNorm needs its whole token row). An op whose output goes to the next op of its segment
hands it over tile by tile in the pipeline buffers (:func:`pipeline_buffers`), so it never
occupies or spills from the output buffer (:func:`piped_outputs`).

Inside a segment stage `i` (op cycles `c_i`, DRAM port cycles `d_i = ceil(its DRAM bytes / D)`)
takes `t_i = c_i / n` per tile; unit `u` is busy `W_u = sum of t_i over its stages` per tile; the
one DRAM port the units share is busy `X = sum_i d_i / n` per tile (every stage moves its tile's
bytes through it in each period, so the period is at least the sum of their transfer cycles, not
each unit's own as if it had the port alone):

    segment = sum_i max(c_i, d_i) / n + (n - 1) * max(max_u W_u, X)     (rounded up to whole cycles)

the first tile through every stage (fill and drain) plus one period of the busiest resource (a
unit or the DRAM port) per further tile. With one unit and no DRAM, or `n = 1`, this is the sum
of the ops' cycles (no gain).

``handoffs: dram`` (the machine the bitstream's IPs and the host's threaded issue build): the ops hand
their outputs over through DRAM (:func:`handoff_bytes`; a ternary linear's input in ``act`` as the
bank-scheduled act stream its IP reads), and the driver's numpy steps between the IPs run on the ARM
(:func:`host_steps`: the top-k and bank scheduling of a ternary linear's input when ``schedule.topk``
is ``host``, the softmax's row maxima, the int8 unit's operand copies), each in the thread of the unit
whose IP call it prepares: they lengthen that op's stage (``c_i + h_i``) and occupy the ``host`` as one more unit (``W_host =
sum_i h_i / n``: the threads share one Python interpreter).

``schedule.topk: fabric`` (the default, :class:`TopkFabric`): the top-k and bank scheduling of each ternary
linear's input run on the vector unit (``tatvpr_topk_schedule``) instead of the host, under every
``overlap`` and ``handoffs`` (``topk: host`` needs ``handoffs: dram``: with on-chip hand-offs the ARM
never sees the activations, ``sim.arch.ScheduleSpec``; so every simulated top-k is charged): one more
vector-unit stage before the linear's, in the linear's segment (tile by tile in a row segment); the qkv projection's stream
is made once, before its attention segment (qkv's first fold reads every token). Under ``handoffs: dram``
the stage reads ``M x K`` int8 and writes the stream through the DRAM port; there is no ``topk`` host step.
"""

from __future__ import annotations

import math
from fractions import Fraction

from dataclasses import dataclass

from sim.engine import transfer_cycles, vector_topk_counts, vector_topk_cycles
from sim.trace import DenseOp, TernaryLinearOp, VectorOp
from ternary_format.tiling import act_stream_bytes

OVERLAP_MODES = ("none", "pipelined")


def _row_local(op, tokens: int) -> bool:
    if isinstance(op, TernaryLinearOp):
        return op.m == tokens
    if isinstance(op, VectorOp):
        return op.kind != "softmax" and op.elements % tokens == 0
    return False


def _attention(op) -> bool:
    return (isinstance(op, DenseOp) and not op.weights) or (isinstance(op, VectorOp) and op.kind == "softmax")


def op_classes(ops, tokens: int) -> list[str]:
    """Each op's role under ``pipelined``: ``row``, ``attention`` or ``single`` (module doc).

    A ternary linear directly followed by an int8-unit op without weights whose ``batch`` (heads)
    divides its ``n`` is the **qkv** projection of that attention: its output columns are computed
    head-major (the weight rows permuted offline to [Q_h K_h V_h] per head), so head h's Q, K and V
    are complete after its folds and the projection joins the attention segment as its first stage.
    """
    out = []
    for i, op in enumerate(ops):
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if (isinstance(op, TernaryLinearOp) and isinstance(nxt, DenseOp) and not nxt.weights
                and op.n % nxt.batch == 0):
            out.append("attention")
        elif _attention(op):
            out.append("attention")
        elif tokens and _row_local(op, tokens):
            out.append("row")
        else:
            out.append("single")
    return out


def piped_outputs(ops, tokens: int) -> list[bool]:
    """Whether op ``i``'s output goes to op ``i + 1`` through the pipeline buffers (both in the same
    row or attention segment), so it never occupies, or spills from, the output buffer."""
    classes = op_classes(ops, tokens)
    out = []
    for i in range(len(ops)):
        nxt = i + 1 < len(ops)
        starts_qkv = nxt and isinstance(ops[i + 1], TernaryLinearOp) and classes[i + 1] == "attention"
        out.append(bool(nxt and classes[i] != "single" and classes[i] == classes[i + 1] and not starts_qkv))
    return out


def segments(ops, records, tokens: int, tile_tokens: int) -> list[dict]:
    """Cut the query into segments: ``[{kind, tiles, first, last}]`` (op indices, inclusive).

    ``records[i]`` is op ``i``'s simulator record (``spill_cycles``/``readback_cycles``): an op
    that moves its input or output through DRAM is a segment of its own. An attention segment
    starts at its qkv projection (a new segment, even after another attention op).
    """
    classes = op_classes(ops, tokens)
    out: list[dict] = []
    for i in range(len(ops)):
        r = records[i]
        k = "single" if r.get("spill_cycles", 0) or r.get("readback_cycles", 0) else classes[i]
        starts_qkv = isinstance(ops[i], TernaryLinearOp) and k == "attention"
        if out and k != "single" and out[-1]["kind"] == k and not starts_qkv:
            out[-1]["last"] = i
        else:
            out.append({"kind": k, "first": i, "last": i})
    for s in out:
        if s["kind"] == "row":
            s["tiles"] = math.ceil(tokens / tile_tokens)
        elif s["kind"] == "attention":
            batches = [ops[i].batch for i in range(s["first"], s["last"] + 1) if isinstance(ops[i], DenseOp)]
            s["tiles"] = min(batches) if batches else 1
        else:
            s["tiles"] = 1
    return out


DRAM = "dram"  # the shared DRAM port, a resource of the pipeline like the units
HOST = "host"  # the ARM cores running the driver's steps between the IPs (handoffs: dram)
# an op's own DRAM traffic (its counts); the hand-offs' bytes (``dram_handoff_bits``) are charged per
# segment by query_cycles, not again per record
DRAM_BIT_KEYS = ("dram_weight_bits", "dram_act_bits", "dram_int8_weight_bits", "dram_spill_bits")


def dram_cycles(record: dict, bytes_per_cycle: float | None) -> int:
    """Cycles op ``record`` holds the DRAM port: ``ceil(bytes / D)`` over every DRAM byte its counts
    hold (``record["dram_cycles"]`` when given). 0 without a bandwidth (``bytes_per_cycle`` None)."""
    if "dram_cycles" in record:
        return int(record["dram_cycles"])
    if not bytes_per_cycle:
        return 0
    bits = sum(int(record.get("counts", {}).get(k, 0)) for k in DRAM_BIT_KEYS)
    if not bits:
        return 0
    return transfer_cycles(Fraction(bits, 8), bytes_per_cycle)


def _period(stages, tiles: int) -> tuple[dict[str, int], int]:
    busy: dict[str, int] = {}
    dram = 0
    for st in stages:
        unit, c = st[0], st[1]
        busy[unit] = busy.get(unit, 0) + c
        dram += st[2] if len(st) > 2 else 0
        if len(st) > 3 and st[3]:  # the stage's host step: in its unit's cycles, and on the host
            busy[HOST] = busy.get(HOST, 0) + st[3]
    return busy, dram


def pipeline_cycles(stages, tiles: int) -> int:
    """``sum_i f_i + (tiles - 1) * max(max_u W_u, X)`` for ``stages`` = [(unit, cycles)],
    [(unit, cycles, dram_cycles)] or [(unit, cycles, dram_cycles, host_cycles)]: ``f_i = max(cycles_i,
    dram_i) / tiles`` (the first tile through stage i, never faster than its own transfers), ``W_u`` the
    unit's ``cycles_i / tiles`` summed over its stages, ``X`` the stages' DRAM cycles per tile (the
    shared port); ``host_cycles`` (already inside ``cycles``: the unit's thread runs it before its IP)
    also occupy the ``host`` unit; rounded up to whole cycles (module doc)."""
    if tiles < 1:
        raise ValueError(f"tiles = {tiles}: must be >= 1")
    busy, dram = _period(stages, tiles)
    fill = sum(max(st[1], st[2] if len(st) > 2 else 0) for st in stages)
    num = fill + (tiles - 1) * max(max(busy.values()), dram)
    return -(-num // tiles)


def critical_resource(stages, tiles: int) -> str:
    """What sets the segment's period: the busiest unit, or ``dram`` when the shared port's cycles
    exceed every unit's (ties go to the unit). One tile: the unit with the most cycles."""
    busy, dram = _period(stages, tiles)
    unit = max(busy, key=lambda u: busy[u])
    return DRAM if tiles > 1 and dram > busy[unit] else unit


def _out_bytes(op, nxt) -> int:
    """An op's output as the units store it (hls/driver/tatvpr_pynq/pipeline.py): int8 after a
    ternary linear, a LayerNorm, GELU, the softmax (uint8) and an int8-unit op; int32 scores when a
    softmax reads them; int16 after an add (the residual stream). (The patch embedding's int16 output
    is counted as int8.)"""
    if isinstance(op, TernaryLinearOp):
        return op.m * op.n
    if isinstance(op, DenseOp):
        scores = isinstance(nxt, VectorOp) and nxt.kind == "softmax"
        return (4 if scores else 1) * op.batch * op.m * op.n
    return op.elements * (2 if op.kind == "add" else 1)


def act_chunks(op, record: dict) -> int:
    """Chunks of a ternary linear's input in ``act`` (the sum over its tokens of the engine's per-token
    chunk counts ``g``): ``sim.engine.ternary_layer`` counts ``acc_updates = N x sum(g)`` in ``act``."""
    return int(record["counts"]["acc_updates"]) // op.n


def _in_bytes(op, record: dict, act_simd: int | None) -> int:
    """Bytes a consumer reads of its input hand-off: a ternary linear in ``act`` (``act_simd``: the
    array's SIMD) reads the bank-scheduled act stream its IP is built for (uint32 slots + uint16 chunk
    counts, :func:`ternary_format.tiling.act_stream_bytes`), every other op int8 ``M x K``."""
    if act_simd and isinstance(op, TernaryLinearOp):
        return act_stream_bytes(act_chunks(op, record), act_simd, op.m)
    return op.m * op.k


def handoff_bytes(ops, records, segs: list[dict], tokens: int, act_simd: int | None = None) -> list[int]:
    """Bytes op ``i`` moves through DRAM under ``handoffs: dram`` (the units are AXI masters to the
    DDR, as the bitstream's IPs are): every op writes its output once and the next op reads it once
    (an output that spills is already in the op's counts), a residual add also reads the int16
    residual stream, and the qkv projection, issued once per head, reads its input once per head.
    ``act_simd`` (the array's SIMD when ``skip_mode`` is ``act``): a ternary linear reads its input as
    the act stream the host scheduled (:func:`_in_bytes`), not as the int8 its producer wrote; ``None``
    (the other skip modes, whose IP is not built): int8."""
    moved = [0] * len(ops)
    for i in range(len(ops) - 1):
        if records[i].get("spill_cycles", 0):
            continue
        b = _out_bytes(ops[i], ops[i + 1])
        moved[i] += b
        nxt = ops[i + 1]
        moved[i + 1] += _in_bytes(nxt, records[i + 1], act_simd) if isinstance(nxt, TernaryLinearOp) else b
    for i, op in enumerate(ops):
        if isinstance(op, VectorOp) and op.kind == "add" and tokens and op.elements % tokens == 0:
            moved[i] += 2 * op.elements
    for sg in segs:
        op = ops[sg["first"]]
        if sg["kind"] == "attention" and isinstance(op, TernaryLinearOp):
            moved[sg["first"]] += (sg["tiles"] - 1) * _in_bytes(op, records[sg["first"]], act_simd)
    return moved


@dataclass(frozen=True)
class HostCost:
    """The host formula of a ``host``-mode vector op (``sim.engine.vector_cycles``): ``call_overhead_us``
    per op + elements x ``ns_per_element[kind]``, in cycles of ``clock_mhz``."""

    ns_per_element: dict
    call_overhead_us: float
    clock_mhz: float
    dense_topk: bool = False  # skip mode none: the host top-k's the dense IP's input (host step topk_dense)

    @classmethod
    def of(cls, arch) -> "HostCost":
        return cls(dict(arch.spec.schedule.host_ns_per_element), arch.spec.vector_unit.host_call_overhead_us,
                   arch.spec.clock_mhz, arch.spec.compute.skip_mode == "none")

    def cycles(self, steps: list[tuple[str, int]]) -> int:
        if not steps:
            return 0
        ns = self.call_overhead_us * 1e3 + sum(n * self.ns_per_element[k] for k, n in steps)
        return int(math.ceil(ns * self.clock_mhz / 1e3 - 1e-9))


@dataclass(frozen=True)
class TopkFabric:
    """``schedule.topk: fabric``: a ternary linear's input is top-k'd (and, in ``act``, bank-scheduled
    into the act stream) by the vector unit, ``sim.engine.vector_topk_cycles``; other skip modes get the
    dense variant (the kept values in place, no emit pass)."""

    arch: object
    stream: bool

    @classmethod
    def of(cls, arch) -> "TopkFabric":
        return cls(arch, arch.spec.compute.skip_mode == "act")

    def cycles(self, op, record: dict) -> int:
        return vector_topk_cycles(op.m, op.k, act_chunks(op, record) if self.stream else None, self.arch)

    def dram_bytes(self, op, record: dict) -> int:
        """Under ``handoffs: dram``: the int8 input read (``M x K``) and the result written: the act
        stream (:func:`ternary_format.tiling.act_stream_bytes`) in ``act``, else ``M x K`` int8."""
        out = (act_stream_bytes(act_chunks(op, record), self.arch.spec.compute.simd, op.m) if self.stream
               else op.m * op.k)
        return op.m * op.k + out


def attention_lanes(arch) -> int:
    """The fused attention IP's softmax lanes: ``schedule.attention_lanes``, or ``vector_unit.lanes`` when not
    given (the IP's lanes are its own softmax-only lanes, not the vector unit's; sim.resources charges them)."""
    n = arch.spec.schedule.attention_lanes
    return arch.spec.vector_unit.lanes if n is None else int(n)


@dataclass(frozen=True)
class FusedAttention:
    """``schedule.attention: fused`` (docs/engine.md section 5a): a block's QK^T, softmax and P.V as one
    call of the int8 IP's attention mode (``tatvpr_attention``, hls/src/tatvpr_attention.cpp).

    Per head: K_h and V_h on chip (double-buffered: the next head's load overlaps), then the query rows
    in blocks of ``R = attention_rows`` (``R_b`` rows in block b, the last one shorter):

    - ``qk_b = ceil(R_b / rows) * ceil(T / cols) * dh`` int8-unit cycles (S = Q_b K^T; the rows' maxima
      taken as S drains, no extra cycles);
    - ``sm_b = ceil(R_b * ceil(T / lanes) * cpe) + R_b * row_op`` softmax cycles (the vector unit's two
      passes and 33 reciprocal steps a row, on the IP's own ``lanes = schedule.attention_lanes`` softmax
      lanes, default ``vector_unit.lanes``: :func:`attention_lanes`);
    - ``pv_b = ceil(R_b / rows) * ceil(dh / cols) * T`` int8-unit cycles (O_b = P_b V, requantised).

    Blocks flow through three stages, QK^T -> softmax -> P.V, with ping-pong score and probability
    rows: in slot ``s`` (``0 .. nb + 1``) the int8 unit runs QK^T of block ``s`` and P.V of block
    ``s - 2`` one after the other while the softmax lanes run block ``s - 1``, so a head takes
    ``sum_s max(qk_s + pv_(s-2), sm_(s-1))`` (absent terms 0); one block (``R >= T``) is QK^T + softmax
    + P.V in sequence. The call: ``heads x`` that ``+ 2 x int8 pipeline + vector pipeline`` (the three
    split ops' fills), :meth:`cycles`. The int8 unit's counted cycles are ``heads x sum_b (qk_b + pv_b)``
    (the split ops' when ``R`` is a multiple of ``rows`` or ``R >= T``), the softmax lanes' ``heads x
    sum_b sm_b``."""

    rows_per_block: int
    rows: int
    cols: int
    lanes: int
    cycles_per_element: float
    row_op_cycles: int
    int8_pipeline_cycles: int
    vector_pipeline_cycles: int

    @classmethod
    def of(cls, arch) -> "FusedAttention":
        u, v = arch.spec.int8_unit, arch.spec.vector_unit
        return cls(arch.spec.schedule.attention_rows, u.rows, u.cols, attention_lanes(arch),
                   v.cycles_per_element["softmax"], v.row_op_cycles["softmax"], u.pipeline_cycles, v.pipeline_cycles)

    def blocks(self, tokens: int, head_dim: int) -> list[tuple[int, int, int]]:
        """``[(qk_b, sm_b, pv_b)]`` of one head's blocks (class doc)."""
        out = []
        for r0 in range(0, tokens, self.rows_per_block):
            rb = min(self.rows_per_block, tokens - r0)
            tiles = -(-rb // self.rows)
            qk = tiles * -(-tokens // self.cols) * head_dim
            sm = math.ceil(rb * -(-tokens // self.lanes) * self.cycles_per_element - 1e-9) + rb * self.row_op_cycles
            pv = tiles * -(-head_dim // self.cols) * tokens
            out.append((qk, sm, pv))
        return out

    def head_cycles(self, tokens: int, head_dim: int) -> int:
        """One head through the three-stage block pipeline (class doc)."""
        b = self.blocks(tokens, head_dim)
        total = 0
        for s in range(len(b) + 2):
            i8 = (b[s][0] if s < len(b) else 0) + (b[s - 2][2] if s >= 2 else 0)
            vec = b[s - 1][1] if 1 <= s <= len(b) else 0
            total += max(i8, vec)
        return total

    def cycles(self, heads: int, tokens: int, head_dim: int) -> int:
        """The fused call's cycles: ``heads x head_cycles + 2 x int8 pipeline + vector pipeline``."""
        return heads * self.head_cycles(tokens, head_dim) + 2 * self.int8_pipeline_cycles + self.vector_pipeline_cycles

    def unit_cycles(self, heads: int, tokens: int, head_dim: int) -> dict[str, int]:
        """Counted cycles per datapath (the C-simulation's counters plus the pipelines): ``int8_unit``
        (QK^T + P.V) and ``softmax`` (the IP's softmax lanes)."""
        b = self.blocks(tokens, head_dim)
        return {"int8_unit": heads * sum(q + p for q, _, p in b) + 2 * self.int8_pipeline_cycles,
                "softmax": heads * sum(m for _, m, _ in b) + self.vector_pipeline_cycles}


def fused_triples(ops, segs: list[dict]) -> dict[int, tuple[int, int, int]]:
    """Under ``attention: fused``: per attention segment starting at a qkv projection, the op indices of
    its QK^T (an int8-unit op without weights), softmax and P.V (the next int8-unit op without weights)
    when they follow each other: ``{qk: (qk, softmax, pv)}``."""
    out = {}
    for sg in segs:
        if sg["kind"] != "attention" or not isinstance(ops[sg["first"]], TernaryLinearOp):
            continue
        for i in range(sg["first"] + 1, sg["last"] - 1):
            a, b, c = ops[i], ops[i + 1], ops[i + 2]
            if (isinstance(a, DenseOp) and not a.weights and isinstance(b, VectorOp) and b.kind == "softmax"
                    and isinstance(c, DenseOp) and not c.weights and c.k == a.m and c.batch == a.batch):
                out[i] = (i, i + 1, i + 2)
                break
    return out


def _row_vector(op, record: dict, tokens: int, kinds) -> bool:
    return (isinstance(op, VectorOp) and op.kind in kinds and not getattr(op, "host", False) and tokens
            and op.elements % tokens == 0 and not record.get("spill_cycles", 0)
            and not record.get("readback_cycles", 0))


def vector_chains(ops, records, tokens: int, topk_cycles: list[int]) -> list[dict]:
    """Under ``schedule.vector_chain: fused`` (``handoffs: dram``): the runs of consecutive vector-unit
    ops of one token row the vector IP's chain op (``tatvpr_chain``, hls/src/tatvpr_chain.cpp) runs as one
    call: ``[add ->] layernorm | gelu -> the fabric top-k of the next op, a ternary linear`` (a run that feeds
    no top-k, e.g. the last add -> the final LayerNorm before the head, stays split: the board's host issues
    the head's LayerNorm apart, hls/driver/tatvpr_pynq/pipeline.py ``trunk_steps``). Each
    ``{"ops": [op indices], "topk": the linear's index or None, "keep_residual": the add's int16 output is
    read again later}``. An op that spills or reads back, or runs on the host, is never chained."""
    out, i = [], 0
    while i < len(ops):
        run = []
        if (_row_vector(ops[i], records[i], tokens, ("add",)) and i + 1 < len(ops)
                and _row_vector(ops[i + 1], records[i + 1], tokens, ("layernorm",))):
            run = [i, i + 1]
        elif _row_vector(ops[i], records[i], tokens, ("layernorm", "gelu")):
            run = [i]
        if not run:
            i += 1
            continue
        t = run[-1] + 1
        topk = t if t < len(ops) and isinstance(ops[t], TernaryLinearOp) and topk_cycles[t] else None
        if topk is not None:
            keep = ops[run[0]].kind == "add" and any(
                _row_vector(ops[j], records[j], tokens, ("add",)) for j in range(run[-1] + 1, len(ops)))
            out.append({"ops": run, "topk": topk, "keep_residual": keep})
        i = run[-1] + 1
    return out


def chain_handoffs(ops, chains: list[dict], moved: list[int], tk_bytes: list[int]) -> None:
    """Take the hand-offs a chain keeps on chip out of ``moved`` / ``tk_bytes`` (in place): between two
    chained ops the second's read, and the first's write unless it is the residual stream a later add
    reads (``keep_residual``); before a chained top-k the last op's int8 write and the top-k's ``M x K``
    read. The top-k's output (the act stream or dense int8) is still written: the ternary IP reads it."""
    for ch in chains:
        run = ch["ops"]
        for a, b in zip(run, run[1:]):
            nbytes = _out_bytes(ops[a], ops[b])
            moved[b] -= nbytes
            if not (ops[a].kind == "add" and ch["keep_residual"]):
                moved[a] -= nbytes
        t = ch["topk"]
        if t is not None:
            moved[run[-1]] -= _out_bytes(ops[run[-1]], ops[t])
            tk_bytes[t] -= ops[t].m * ops[t].k


def host_steps(ops, segs: list[dict], act: bool, topk_on_host: bool = True,
               dense: bool = False) -> list[list[tuple[str, int]]]:
    """The driver's numpy steps on the ARM before each op's IP call under ``handoffs: dram``
    (hls/driver/tatvpr_pynq: ``PynqUnits.ternary``, ``TernaryGemmIP.run_tiled``, ``Int8UnitIP.start_gemm``,
    ``VectorUnitIP.softmax``), ``[(kind, elements)]`` per op:

    - a ternary linear in ``act`` (``act``): ``topk``, its ``M x K`` input (top-k, chunk counts, bank
      scheduling); the qkv projection, issued once per head with the whole input, ``heads x M x K``;
      the other skip modes (no IP built): none;
    - an int8-unit op: ``widen``, ``batch x (M x K + K x N)`` (its operands copied to int16 / int8);
    - a softmax: ``row_max``, its scores (the rows' maxima the vector IP takes from the host);
    - an op the trace marks ``host`` (it runs on the ARM, no IP call): none.

    ``dense`` (skip mode ``none``, whose IP reads dense int8): ``topk_dense`` instead of ``topk``, the top-k
    alone (``topk_int``, no bank scheduling), as often (qkv once per head).
    ``topk_on_host`` False (``schedule.topk: fabric``): no ``topk`` / ``topk_dense`` steps (the vector unit
    does them).
    """
    qkv_tiles = {sg["first"]: sg["tiles"] for sg in segs
                 if sg["kind"] == "attention" and isinstance(ops[sg["first"]], TernaryLinearOp)}
    out: list[list[tuple[str, int]]] = []
    for i, op in enumerate(ops):
        if getattr(op, "host", False):  # a host op (trace field host) is itself host work, charged as such
            out.append([])
        elif isinstance(op, TernaryLinearOp):
            kind = "topk" if act else "topk_dense" if dense else None
            out.append([(kind, qkv_tiles.get(i, 1) * op.m * op.k)] if kind and topk_on_host else [])
        elif isinstance(op, DenseOp):
            out.append([("widen", op.batch * (op.m * op.k + op.k * op.n))])
        elif isinstance(op, VectorOp) and op.kind == "softmax":
            out.append([("row_max", op.elements)])
        else:
            out.append([])
    return out


def query_cycles(ops, records, tokens: int, tile_tokens: int, bytes_per_cycle: float | None = None, *,
                 max_dim: int | None = None, source: str = "arch", handoffs: str = "onchip",
                 act_simd: int | None = None, host: HostCost | None = None,
                 overlap: str = "pipelined", topk: TopkFabric | None = None,
                 fused: FusedAttention | None = None, chain: bool = False) -> tuple[int, list[dict]]:
    """Cycles of a query under ``pipelined`` overlap, and its segments: each with ``cycles``,
    ``serial_cycles`` (its ops in sequence, host steps included), ``dram_cycles`` (the shared port's,
    total), ``handoff_dram_bytes``, ``host_cycles``, ``busy_cycles_by_unit``, ``critical`` (the unit,
    ``host`` or ``dram`` that sets its period) and per op ``op_handoff_bytes`` / ``op_host_cycles``.
    ``bytes_per_cycle``: the DRAM port's ``D`` (None: the port is not charged).
    ``max_dim``: the arch's ``schedule.max_dim``; when given (and ``handoffs`` is ``onchip``), a row
    segment with more array <-> vector unit edges than the pipeline is built for is an error
    (:func:`check_row_edges`). ``handoffs: dram``: every op hands its output over through DRAM
    (:func:`handoff_bytes` with ``act_simd``, charged on the port with each op's own transfers) and,
    with ``host``, each op's host steps (:func:`host_steps`, priced by ``host``) run in its unit's
    thread before its IP call and occupy the host. ``overlap: none`` (with ``handoffs: dram``, the
    machine the IPs build when the host issues the ops one after another): every op is a segment of
    its own, one tile (its cycles, host steps included, or its DRAM transfers, whichever is longer).
    ``topk`` (``schedule.topk: fabric``): each ternary linear's top-k + scheduling on the vector unit, a
    stage of its own before the linear's in the linear's segment, or, for the first op of an attention
    segment (qkv), once before the segment, not overlapped; under ``handoffs: dram`` with its DRAM bytes
    (:meth:`TopkFabric.dram_bytes`, in the linear's ``op_handoff_bytes``), and no ``topk`` host step.
    Per op ``op_topk_cycles``.
    ``fused`` (``schedule.attention: fused``, :class:`FusedAttention`): in each attention segment the QK^T,
    softmax and P.V (:func:`fused_triples`) are one int8-unit stage of :meth:`FusedAttention.cycles`, with no
    host steps and, under ``handoffs: dram``, only Q, K, V read (the qkv output, once) and the output written;
    the segment's ``fused_attention`` holds its cycles and per-datapath counts.
    ``chain`` (``schedule.vector_chain: fused``, with ``handoffs: dram``): each :func:`vector_chains` run is
    one vector-unit stage (its ops' cycles and its top-k's summed: the passes still run; its DRAM transfers
    summed, less the hand-offs it keeps on chip, :func:`chain_handoffs`); a chained top-k runs (and its
    bytes count, ``op_handoff_bytes``) with the chain's last op, not before its linear (the qkv projection
    loses its pre-segment top-k); under ``overlap: none`` the chain is one segment. The segment's
    ``vector_chains`` lists them."""
    if overlap == "none":
        segs = [{"kind": "single", "first": i, "last": i, "tiles": 1} for i in range(len(ops))]
    else:
        segs = segments(ops, records, tokens, tile_tokens)
    tk = [topk.cycles(op, records[i]) if topk is not None and isinstance(op, TernaryLinearOp) else 0
          for i, op in enumerate(ops)]
    chains = vector_chains(ops, records, tokens, tk) if chain and handoffs == "dram" else []
    if chains and overlap == "none":  # one call: one segment
        ends = {ch["ops"][0]: ch["ops"][-1] for ch in chains}
        segs, i = [], 0
        while i < len(ops):
            segs.append({"kind": "single", "first": i, "last": ends.get(i, i), "tiles": 1})
            i = ends.get(i, i) + 1
    if max_dim is not None and handoffs == "onchip":
        check_row_edges(ops, segs, tokens, max_dim, source)
    total = 0
    dram_mode = handoffs == "dram"
    moved = handoff_bytes(ops, records, segs, tokens, act_simd) if dram_mode else [0] * len(ops)
    hosted = ([host.cycles(st) for st in host_steps(ops, segs, act_simd is not None, topk is None, host.dense_topk)]
              if dram_mode and host else [0] * len(ops))
    tk_bytes = [topk.dram_bytes(op, records[i]) if dram_mode and tk[i] else 0 for i, op in enumerate(ops)]
    chain_handoffs(ops, chains, moved, tk_bytes)
    chain_of = {j: ch for ch in chains for j in ch["ops"]}
    chained_topk = {ch["topk"]: ch["ops"][-1] for ch in chains if ch["topk"] is not None}
    trip = fused_triples(ops, segs) if fused is not None else {}
    in_fused = {j: qk for qk, t3 in trip.items() for j in t3}
    for qk, (_, sm, pv) in trip.items():  # schedule.attention: fused, one IP call
        if dram_mode:
            moved[qk] = _out_bytes(ops[qk - 1], ops[qk])  # Q, K, V (the qkv output) read once
            moved[sm] = 0  # no scores, no probabilities through DDR
            moved[pv] = _out_bytes(ops[pv], ops[pv + 1] if pv + 1 < len(ops) else None)  # the output written
        hosted[qk] = hosted[sm] = hosted[pv] = 0  # no widen, no row_max
    # the bytes each op's call moves: a chained top-k's with the chain's last op
    op_bytes = [moved[i] + (0 if i in chained_topk else tk_bytes[i]) for i in range(len(ops))]
    for t, last in chained_topk.items():
        op_bytes[last] += tk_bytes[t]

    def port(nbytes):
        return transfer_cycles(nbytes, bytes_per_cycle) if nbytes and bytes_per_cycle else 0

    for s in segs:
        idx = range(s["first"], s["last"] + 1)
        s["handoff_dram_bytes"] = sum(op_bytes[i] for i in idx)
        s["op_handoff_bytes"] = [op_bytes[i] for i in idx]
        s["op_host_cycles"] = [hosted[i] for i in idx]
        s["host_cycles"] = sum(hosted[i] for i in idx)
        s["op_topk_cycles"] = [tk[i] for i in idx]
        stages, pre, pre_dram, serial_extra = [], 0, 0, 0
        for i in idx:
            if i in in_fused:
                if i == in_fused[i]:  # the fused call: one int8-unit stage for QK^T, softmax, P.V
                    a, t3 = ops[i], trip[i]
                    c = fused.cycles(a.batch, a.m, a.k)
                    d = sum(dram_cycles(records[j], bytes_per_cycle) for j in t3) + port(sum(moved[j] for j in t3))
                    stages.append(("int8_unit", c, d, 0))
                    serial_extra += sum(records[j]["cycles"] for j in t3) - c
                    s.setdefault("fused_attention", []).append(
                        {"ops": [records[j]["name"] for j in t3], "cycles": c,
                         **{f"{k}_cycles": v for k, v in fused.unit_cycles(a.batch, a.m, a.k).items()}})
                continue
            if i in chain_of:  # schedule.vector_chain: fused, the chain's ops as one vector-unit stage
                ch = chain_of[i]
                if i == ch["ops"][-1]:
                    run, t = ch["ops"], ch["topk"]
                    c = sum(records[j]["cycles"] + hosted[j] for j in run) + (tk[t] if t is not None else 0)
                    d = (sum(dram_cycles(records[j], bytes_per_cycle) for j in run)
                         + port(sum(op_bytes[j] for j in run)))
                    stages.append(("vector_unit", c, d, sum(hosted[j] for j in run)))
                    s.setdefault("vector_chains", []).append(
                        {"ops": [records[j]["name"] for j in run] + ([f"{records[t]['name']}.topk"] if t is not None
                                                                     else []),
                         "cycles": c, "handoff_dram_bytes": sum(op_bytes[j] for j in run)})
                continue
            if tk[i] and i not in chained_topk:  # the fabric top-k of op i's input: a vector-unit stage before it
                if s["kind"] == "attention" and i == s["first"]:  # qkv: once, before the segment
                    pre += max(tk[i], port(tk_bytes[i]))
                    pre_dram += port(tk_bytes[i])
                else:
                    stages.append(("vector_unit", tk[i], port(tk_bytes[i]), 0))
            stages.append((records[i]["unit"], records[i]["cycles"] + hosted[i],
                           dram_cycles(records[i], bytes_per_cycle) + port(moved[i]), hosted[i]))
        busy, dram = _period(stages, s["tiles"])
        if pre:
            busy["vector_unit"] = busy.get("vector_unit", 0) + sum(tk[i] for i in idx if i == s["first"])
            dram += pre_dram
        s["cycles"] = pre + pipeline_cycles(stages, s["tiles"])
        s["serial_cycles"] = (sum(st[1] for st in stages) + sum(tk[i] for i in idx if i == s["first"] and pre)
                              + serial_extra)
        s["dram_cycles"] = dram
        s["busy_cycles_by_unit"] = busy
        s["critical"] = critical_resource(stages, s["tiles"])
        s["ops"] = [records[i]["name"] for i in idx]
        total += s["cycles"]
    return total, segs


def charge_topk(segs: list[dict], layers: list[dict], arch, by_comp: dict, by_unit: dict) -> int:
    """``schedule.topk: fabric``: attach each ternary linear's fabric top-k to its layer record
    (``topk_cycles``, ``topk_energy_pj``: ``sim.engine.vector_topk_counts`` priced by ``sim.energy`` as
    vector-unit work of kind ``topk``, static power over its cycles), add its energy to the components
    ``by_comp`` and its cycles to ``by_unit["vector_unit"]``; returns the cycles added to the serial sum."""
    from sim.energy import energy_pj

    added = 0
    for s in segs:
        for i, c in zip(range(s["first"], s["last"] + 1), s.get("op_topk_cycles", ())):
            if not c:
                continue
            rec = layers[i]
            e = energy_pj(vector_topk_counts(rec["m"], rec["k"], arch), arch, c, vector_kind="topk")
            rec["topk_cycles"] = int(c)
            rec["topk_energy_pj"] = sum(e.values())
            for comp, v in e.items():
                rec["energy_pj"][comp] += v
                by_comp[comp] += v
            rec["energy_pj_total"] = sum(rec["energy_pj"].values())
            by_unit["vector_unit"] += int(c)
            added += int(c)
    return added


def schedule_summary(spec, records, cycles: int, segs: list[dict], bytes_per_cycle: float | None,
                     units=("ternary_array", "int8_unit", "vector_unit")) -> dict:
    """The ``schedule`` block of ``tatvpr sim --json`` (docs/simulator.md): why the query takes its
    cycles. ``spec``: the arch's ``schedule``; ``records``: the ops' records; ``segs``: from
    :func:`query_cycles` (empty under ``none``). ``host``: the host steps' cycles (``handoffs: dram``;
    they also lengthen the busy cycles of the unit whose thread runs them)."""
    units = (*units, HOST)
    busy = dict.fromkeys(units, 0)
    for r in records:
        busy[r["unit"]] = busy.get(r["unit"], 0) + int(r["cycles"]) + int(r.get("host_cycles", 0))
        busy[HOST] += int(r.get("host_cycles", 0))
        if r.get("topk_cycles"):  # schedule.topk: fabric, the linear's input top-k'd on the vector unit
            busy["vector_unit"] = busy.get("vector_unit", 0) + int(r["topk_cycles"])
    fused = [f for s in segs for f in s.get("fused_attention", ())]
    by_name = {r["name"]: r for r in records}
    for f in fused:  # schedule.attention: fused: the int8 IP holds its array for the whole call (its own
        # softmax lanes inside), so the int8 unit is busy for the call and the vector unit for none of it
        qk, sm, pv = (by_name[n] for n in f["ops"])
        busy[qk["unit"]] += f["cycles"] - int(qk["cycles"]) - int(pv["cycles"])
        busy[sm["unit"]] -= int(sm["cycles"])
    dram = sum(dram_cycles(r, bytes_per_cycle) for r in records)
    if segs:  # the hand-offs through DRAM (handoffs: dram) hold the port too
        dram = max(dram, sum(sg["dram_cycles"] for sg in segs))
    serial = sum(int(r["cycles"]) + int(r.get("host_cycles", 0)) + int(r.get("topk_cycles", 0)) for r in records)
    by_critical = dict.fromkeys((*units, DRAM), 0)
    if segs:
        for s in segs:
            by_critical[s["critical"]] += s["cycles"]
    else:  # in sequence every op's cycles are its own unit's
        for u, c in busy.items():
            by_critical[u] += c
    out = {
        "overlap": spec.overlap,
        "tile_tokens": spec.tile_tokens if spec.overlap == "pipelined" else None,
        "handoffs": spec.handoffs,
        "topk": spec.topk,
        "topk_cycles": sum(int(r.get("topk_cycles", 0)) for r in records),
        "attention": getattr(spec, "attention", "split"),
        # schedule.attention: fused, the fused attention calls' cycles (the int8 IP's, softmax included)
        "fused_attention_cycles": sum(f["cycles"] for f in fused),
        # schedule.vector_chain: fused, the chained vector-IP calls (each: [add ->] LayerNorm | GELU [-> top-k])
        "vector_chain": getattr(spec, "vector_chain", "split"),
        "vector_chains": sum(len(sg.get("vector_chains", ())) for sg in segs),
        "handoff_dram_bytes": sum(sg.get("handoff_dram_bytes", 0) for sg in segs),
        "host_cycles": busy[HOST],
        "cycles": int(cycles),
        "serial_cycles": serial,
        "saved_cycles": serial - int(cycles),
        "busy_cycles_by_unit": busy,
        "dram_cycles": dram,
        "bound_cycles": max(max(busy.values()), dram),
        "cycles_by_critical": by_critical,
        "critical": max(by_critical, key=lambda k: by_critical[k]),
        "segments_by_critical": ({k: sum(1 for s in segs if s["critical"] == k) for k in by_critical}
                                 if segs else None),
        "segments": [{"kind": s["kind"], "tiles": s["tiles"], "first_op": s["ops"][0], "last_op": s["ops"][-1],
                      "ops": len(s["ops"]), "cycles": s["cycles"], "serial_cycles": s["serial_cycles"],
                      "dram_cycles": s["dram_cycles"], "handoff_dram_bytes": s["handoff_dram_bytes"],
                      "host_cycles": s.get("host_cycles", 0), "busy_cycles_by_unit": s["busy_cycles_by_unit"],
                      "critical": s["critical"]} for s in segs],
    }
    return out


# The hand-offs of a ViT block's row segment the pipeline's token tiles are built for (the host's
# issue, hls/driver/tatvpr_pynq/pipeline.py ``handoffs``: one double buffer per hand-off between
# consecutive stages): proj -> add1, fc1 -> GELU, fc2 -> add2 (array to vector unit), norm2 -> fc1,
# GELU -> fc2 (vector unit to array), add1 -> norm2, add2 -> norm1 (inside the vector unit, int16:
# the residual stream). "hidden" edges carry K_max channels (fc1 -> GELU -> fc2), the others max_dim.
ROW_EDGES = {("a2v", False): 2, ("a2v", True): 1, ("v2a", False): 1, ("v2a", True): 1}
VECTOR_EDGES = 2  # add1 -> norm2, add2 -> norm1 (LayerScale is folded into the adds' multipliers)


def _width(op, tokens: int) -> int:
    """Channels per token of ``op``'s output."""
    if isinstance(op, TernaryLinearOp):
        return op.n
    if isinstance(op, VectorOp):
        return op.elements // tokens
    return op.n


def row_edges(ops, segs: list[dict], tokens: int, max_dim: int) -> list[dict]:
    """Per row segment, its array <-> vector unit edges by direction and width: ``{(dir, hidden): n}``
    with ``dir`` ``a2v``/``v2a`` and ``hidden`` = the tile is wider than ``max_dim`` channels."""
    out = []
    for sg in segs:
        if sg["kind"] != "row":
            continue
        count: dict[tuple[str, bool], int] = {}
        for i in range(sg["first"], sg["last"]):
            a, b = ops[i], ops[i + 1]
            d = ("a2v" if isinstance(a, TernaryLinearOp) and isinstance(b, VectorOp) else
                 "v2a" if isinstance(a, VectorOp) and isinstance(b, TernaryLinearOp) else None)
            if d is None:
                continue
            key = (d, _width(a, tokens) > max_dim)
            count[key] = count.get(key, 0) + 1
        out.append({"first": sg["first"], "last": sg["last"], "edges": count})
    return out


def check_row_edges(ops, segs: list[dict], tokens: int, max_dim: int, source: str = "arch") -> None:
    """Each row segment's array <-> vector unit edges must find token tiles (:data:`ROW_EDGES`), per
    direction: its edges wider than ``max_dim`` channels need the hidden tiles (``K_max`` wide), and
    all its edges together at most the narrow plus the hidden ones; else an error naming the segment."""
    from sim.errors import SimInputError

    for r in row_edges(ops, segs, tokens, max_dim):
        for d, what in (("a2v", "array -> vector unit"), ("v2a", "vector unit -> array")):
            wide = r["edges"].get((d, True), 0)
            total = wide + r["edges"].get((d, False), 0)
            built_wide, built = ROW_EDGES[(d, True)], ROW_EDGES[(d, True)] + ROW_EDGES[(d, False)]
            if wide > built_wide or total > built:
                raise SimInputError(
                    f"{source}: schedule.overlap = pipelined: the row segment {ops[r['first']].name} .. "
                    f"{ops[r['last']].name} has {total} {what} tile edges ({wide} wider than schedule.max_dim = "
                    f"{max_dim} channels); the pipeline is built for {built} ({built_wide} of them K_max wide: "
                    f"a ViT block, docs/engine.md section 5a); allowed: schedule.overlap = none")


def pipeline_buffers(arch) -> list[dict]:
    """The buffers ``pipelined`` adds (docs/engine.md section 5a); none under ``overlap: none`` or
    ``handoffs: dram``. They are the host's hand-off buffers (``tatvpr_pynq.pipeline.handoffs``) on chip.

    Token tiles, one pair of halves per hand-off of :data:`ROW_EDGES` and :data:`VECTOR_EDGES` (the
    producer writes tile j + 1 while the consumer reads tile j), of ``tile_tokens`` tokens x
    ``max_dim`` channels (the hidden ones ``K_max``), each word as wide as the faster side moves per
    cycle:

    - ``pipe_v2a`` / ``pipe_v2a_hidden`` (vector unit -> array): the array reads ``SIMD`` channels a
      cycle (as from the activation buffer, with the index bits in ``act``/``both``);
    - ``pipe_a2v`` / ``pipe_a2v_hidden`` (array -> vector unit): the vector unit reads ``lanes`` int8 a
      cycle; the array's ``PE`` outputs of a token (one per ``ceil(K / SIMD)`` cycles, ``K >= max_dim``)
      drain through a ``PE``-int8 register, so a word holds ``max(lanes, ceil(PE / ceil(max_dim /
      SIMD)))`` int8;
    - ``pipe_v2v``: a residual add's int16 output to the next LayerNorm, ``lanes`` int16 a word.

    ``pipe_scores``: three rotating copies of one head's ``max_tokens^2`` int32 scores (QK^T of head h
    writes one, the softmax of head h - 1 turns another into uint8 probabilities in place, P.V of head
    h - 2 reads the third), ``max(rows, lanes)`` scores a word (QK^T drains ``rows`` a cycle, the
    softmax reads ``lanes``).
    ``pipe_heads``: three copies of one head's Q, K, V (``max_tokens x 3 x max_head_dim`` int8): the
    qkv projection (head-major) writes head h + 1's while QK^T reads head h's and P.V still reads head
    h - 1's V (with two the array waits for P.V of head h - 1 and the int8 unit runs dry:
    tests/hls/test_pipeline.py); ``max(rows, cols)`` int8 a word, two read ports (QK^T reads a row of
    Q and a column of K^T each cycle).
    """
    from sim.buffers import _entry, k_max  # sim.buffers owns the block rule
    from sim.engine import index_bits

    s = arch.spec.schedule
    fused = attention_buffers(arch) if s.attention == "fused" else []
    fused += chain_buffers(arch) if getattr(s, "vector_chain", "split") == "fused" else []
    if s.overlap == "none" or s.handoffs == "dram":
        return fused
    c, u, v = arch.spec.compute, arch.spec.int8_unit, arch.spec.vector_unit
    has_uram = arch.board.resources.uram > 0
    prefer = s.buffer_memory == "uram"
    kmax = k_max(arch)
    mp = s.tile_tokens
    in_bits = 8 + (index_bits(kmax) if c.skip_mode in ("act", "both") else 0)
    lanes = v.lanes if v.mode == "fabric" else 8
    a2v = max(lanes, -(-c.pe // -(-s.max_dim // c.simd)))
    out = list(fused)
    for name, (d, hidden) in (("pipe_a2v", ("a2v", False)), ("pipe_a2v_hidden", ("a2v", True)),
                              ("pipe_v2a", ("v2a", False)), ("pipe_v2a_hidden", ("v2a", True))):
        ch = kmax if hidden else s.max_dim
        per_word, bits = (a2v, 8) if d == "a2v" else (c.simd, in_bits)
        out.append(_entry(name, banks=ROW_EDGES[(d, hidden)], ports=1, replicas=1, halves=2, width=per_word * bits,
                          depth=math.ceil(mp * ch / per_word), prefer_uram=prefer, board_has_uram=has_uram))
    out.append(_entry("pipe_v2v", banks=VECTOR_EDGES, ports=1, replicas=1, halves=2, width=16 * lanes,
                      depth=math.ceil(mp * s.max_dim / lanes), prefer_uram=prefer, board_has_uram=has_uram))
    w = max(u.rows, lanes)
    if s.attention != "fused":  # fused: the attention IP's own score rows (attention_buffers) instead
        out.append(_entry("pipe_scores", banks=1, ports=1, replicas=1, halves=3, width=32 * w,
                          depth=math.ceil(s.max_tokens * s.max_tokens / w), prefer_uram=prefer,
                          board_has_uram=has_uram))
    w = max(u.rows, u.cols)
    out.append(_entry("pipe_heads", banks=1, ports=2, replicas=1, halves=3, width=8 * w,
                      depth=math.ceil(s.max_tokens * 3 * s.max_head_dim / w), prefer_uram=prefer,
                      board_has_uram=has_uram))
    return out


def attention_buffers(arch) -> list[dict]:
    """The on-chip buffers of ``schedule.attention: fused`` (:class:`FusedAttention`), under any
    ``handoffs`` (docs/engine.md section 5a), by sim.buffers' block rule:

    - ``attn_k``, ``attn_v``: one head's K and V, ``max_tokens x max_head_dim`` int8 each, two halves
      (the next head's loads overlap this head's blocks), ``cols`` int8 a word (QK^T reads ``cols`` of
      K^T's columns a cycle, P.V ``cols`` of V's);
    - ``attn_q``: the block's Q rows, ``attention_rows x max_head_dim`` int8, two halves, ``rows`` int8 a
      word (the array reads one per row a cycle);
    - ``attn_scores``: the block's ``attention_rows x max_tokens`` int32 scores, ping-pong (QK^T of block
      b + 1 writes one while the softmax reads block b's), ``max(rows, lanes)`` int32 a word (``lanes``: the
      IP's softmax lanes, :func:`attention_lanes`);
    - ``attn_probs``: the uint8 probabilities, same shape, ping-pong (the softmax writes block b's while
      P.V reads block b - 1's), ``max(rows, lanes)`` uint8 a word.

    K, V and Q follow ``schedule.buffer_memory``; the score and probability rows are shallow (``R x T /
    word`` deep) and go to BRAM."""
    from sim.buffers import _entry  # sim.buffers owns the block rule

    s = arch.spec.schedule
    u = arch.spec.int8_unit
    has_uram = arch.board.resources.uram > 0
    prefer = s.buffer_memory == "uram"
    r = s.attention_rows
    w = max(u.rows, attention_lanes(arch))  # the softmax reads its own lanes' scores a cycle
    out = [_entry(name, banks=1, ports=1, replicas=1, halves=2, width=8 * u.cols,
                  depth=math.ceil(s.max_tokens * s.max_head_dim / u.cols), prefer_uram=prefer, board_has_uram=has_uram)
           for name in ("attn_k", "attn_v")]
    out.append(_entry("attn_q", banks=1, ports=1, replicas=1, halves=2, width=8 * u.rows,
                      depth=math.ceil(r * s.max_head_dim / u.rows), prefer_uram=prefer, board_has_uram=has_uram))
    for name, bits in (("attn_scores", 32), ("attn_probs", 8)):
        out.append(_entry(name, banks=1, ports=1, replicas=1, halves=2, width=bits * w,
                          depth=math.ceil(r * s.max_tokens / w), prefer_uram=False, board_has_uram=has_uram))
    return out


def chain_buffers(arch) -> list[dict]:
    """The on-chip row of ``schedule.vector_chain: fused`` (:func:`vector_chains`), by sim.buffers' block
    rule: ``chain_row``, one token row of ``max_dim`` int16 (the add's output, which the LayerNorm reads
    in both its passes), ``lanes`` int16 a word (the lanes read and write a lane group a cycle), two halves
    (the next row's DDR read overlaps this row's passes). A LayerNorm's or GELU's int8 output goes straight
    into the top-k unit's own row memory (``topk_row``, charged with the top-k unit), so it needs none;
    the memory follows ``schedule.buffer_memory``."""
    from sim.buffers import _entry  # sim.buffers owns the block rule

    s, v = arch.spec.schedule, arch.spec.vector_unit
    lanes = v.lanes if v.mode == "fabric" else 8
    return [_entry("chain_row", banks=1, ports=1, replicas=1, halves=2, width=16 * lanes,
                   depth=math.ceil(s.max_dim / lanes), prefer_uram=s.buffer_memory == "uram",
                   board_has_uram=arch.board.resources.uram > 0)]
