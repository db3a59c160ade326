"""The ``pipelined`` overlap as the host issues it (docs/engine.md section 5a, docs/hls.md): numpy only.

The three units are separate IPs (ternary GEMM, int8 unit, vector unit), each started by the host
on its own ``ap_ctrl``. Under ``schedule.overlap: pipelined`` the host cuts the query into the
simulator's segments and issues every segment's ops tile by tile, each unit working on a
different tile:

- **row segment**: a maximal run of row-local ops over the ``T`` tokens (ternary linears of
  ``m = T`` rows, vector ops other than softmax), tiled by ``tile_tokens`` rows;
- **attention segment**: the qkv projection (its output rows issued head-major: the op for head
  ``h`` computes the ``3 * head_dim`` output channels ``[Q_h K_h V_h]``), QK^T, softmax and P.V,
  tiled by head;
- any other op (the patch embedding, an int8-unit linear with weights, an op whose input or
  output goes through DRAM) alone, whole.

The cut is :func:`segments`, the same rule as ``sim.schedule.segments`` written again here because
the board has no ``sim`` (``tests/hls/test_pipeline.py`` proves them equal on the tiny student and
on the paper-size ViT-B trace). Inside a segment :func:`issue_schedule` is the one issue rule the
host follows, stepped on a virtual clock: a unit that is idle starts the ready task of the oldest
tile (then the earliest stage); task ``(i, j)`` (stage ``i``, tile ``j``) is ready when ``(i - 1, j)``
and ``(i, j - 1)`` are done and the hand-off buffer it writes has a free copy (:func:`handoffs`).

Each unit's thread also runs the numpy its IP call needs first (``PynqUnits``: the top-k and bank
scheduling of a ternary linear's input, for qkv once per head; the softmax's row maxima; the int8
unit's operand copies): the host steps ``sim.schedule`` charges under ``schedule.handoffs: dram``
(docs/engine.md section 5a), in that unit's stage and on the host.

What each op computes is the integer model's (``tatvpr_pynq.integer``): row-local ops on row
tiles and attention per head give the same integers as the whole op, so a query issued this way
equals ``TrunkQ.tokens`` bit for bit (:func:`run_trunk`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from .integer import RES_MAX, RES_MIN, LinearQ, TrunkQ, Units, sat

# the simulator's unit names (sim.simulator.UNITS) for the integer model's
SIM_UNIT = {"ternary": "ternary_array", "int8": "int8_unit", "vector": "vector_unit", "host": "host"}


@dataclass
class Step:
    """One op of the query as the host issues it.

    ``unit``: ``ternary``, ``int8``, ``vector`` or ``host``; ``kind``: ``ternary``, ``gemm``,
    ``layernorm``, ``softmax``, ``lut``, ``add``, ``host``; ``m``/``n`` the ternary's rows and output
    columns; ``batch`` an int8 GEMM's batch (heads); ``weights``: an int8 GEMM with a weight operand;
    ``elements`` a vector op's elements. ``run(units, tile)`` computes the op's output for ``tile``
    (a ``slice`` of tokens in a row segment, a head index in an attention segment, ``None``: whole)."""

    name: str
    unit: str
    kind: str
    run: Callable
    m: int = 0
    n: int = 0
    batch: int = 1
    weights: bool = False
    elements: int = 0
    out_bytes_per_row: int = 0     # bytes of one token row of its output, as the IPs store it
    out_bytes_per_head: int = 0    # attention ops: bytes of one head's output


# ------------------------------------------------------------------------------ the segment cut
def _row_local(s: Step, tokens: int) -> bool:
    if s.kind == "ternary":
        return s.m == tokens
    if s.unit == "vector":
        return s.kind != "softmax" and s.elements % tokens == 0
    return False


def _attention(s: Step) -> bool:
    return (s.kind == "gemm" and not s.weights) or s.kind == "softmax"


def step_classes(steps: list[Step], tokens: int) -> list[str]:
    """``row``, ``attention`` or ``single`` per step (``sim.schedule.op_classes``' rule; a host step
    is ``single``)."""
    out = []
    for i, s in enumerate(steps):
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if (s.kind == "ternary" and nxt is not None and nxt.kind == "gemm" and not nxt.weights
                and s.n % nxt.batch == 0):
            out.append("attention")
        elif _attention(s):
            out.append("attention")
        elif s.unit != "host" and tokens and _row_local(s, tokens):
            out.append("row")
        else:
            out.append("single")
    return out


def segments(steps: list[Step], tokens: int, tile_tokens: int, spilled: frozenset | set = frozenset()) -> list[dict]:
    """``[{kind, tiles, first, last}]`` (step indices, inclusive): ``sim.schedule.segments``' cut.
    ``spilled``: names of steps whose input is read back from or output spilled to DRAM (alone)."""
    if tile_tokens < 1:
        raise ValueError(f"tile_tokens = {tile_tokens}: must be >= 1")
    classes = step_classes(steps, tokens)
    out: list[dict] = []
    for i, s in enumerate(steps):
        k = "single" if s.name in spilled else classes[i]
        starts_qkv = s.kind == "ternary" and k == "attention"
        if out and k != "single" and out[-1]["kind"] == k and not starts_qkv:
            out[-1]["last"] = i
        else:
            out.append({"kind": k, "first": i, "last": i})
    for seg in out:
        if seg["kind"] == "row":
            seg["tiles"] = math.ceil(tokens / tile_tokens)
        elif seg["kind"] == "attention":
            b = [steps[i].batch for i in range(seg["first"], seg["last"] + 1) if steps[i].kind == "gemm"]
            seg["tiles"] = min(b) if b else 1
        else:
            seg["tiles"] = 1
    return out


# ------------------------------------------------------------------------------ hand-off buffers
@dataclass(frozen=True)
class Handoff:
    """A buffer between stages of a segment: ``producer`` writes a tile into one of ``copies``
    copies; the copy is free again when stage ``last_reader`` has finished that tile."""

    name: str
    producer: int          # stage index inside the segment
    last_reader: int
    copies: int
    bytes_per_copy: int


def handoffs(seg_steps: list[Step], kind: str, tile_tokens: int) -> list[Handoff]:
    """The buffers a segment's issue needs (docs/hls.md, 'pipelined on the board'):

    - row segment: one double buffer (2 copies of one tile) per hand-off between consecutive stages,
      ``tile_tokens`` rows of the producer's output each;
    - attention segment ``[qkv, qk, softmax, av]``: ``heads``: qkv writes head ``h``'s Q, K, V (3 copies,
      each freed when P.V of its head is done: P.V reads V; with 2 the array waits for P.V of head
      ``h - 2`` before it computes head ``h``, and the int8 unit, the busiest, runs dry: ViT-B on the
      KV260 point 566,157 instead of 470,029 cycles per attention segment, docs/hls.md); ``scores``:
      QK^T writes one head's scores, the softmax its probabilities, P.V reads them (3 copies).
    Any other chain (an attention segment cut short by a spill): a double buffer per hand-off.
    A single step needs none."""
    if kind in ("row", "attention") and len(seg_steps) > 1 and not (
            kind == "attention" and [s.kind for s in seg_steps] == ["ternary", "gemm", "softmax", "gemm"]):
        return [Handoff(f"{seg_steps[i].name}->{seg_steps[i + 1].name}", i, i + 1, 2,
                        tile_tokens * seg_steps[i].out_bytes_per_row) for i in range(len(seg_steps) - 1)]
    if kind == "attention" and [s.kind for s in seg_steps] == ["ternary", "gemm", "softmax", "gemm"]:
        return [Handoff("heads", 0, 3, 3, seg_steps[0].out_bytes_per_head),
                Handoff("scores", 1, 3, 3, max(seg_steps[1].out_bytes_per_head, seg_steps[2].out_bytes_per_head))]
    return []


# ------------------------------------------------------------------------------ the issue rule
@dataclass
class Task:
    stage: int
    tile: int
    unit: str
    start: float = 0.0
    end: float = 0.0


def issue_schedule(units: list[str], cycles_per_tile: list[float], tiles: int,
                   buffers: list[Handoff] = (), priority: str = "tile") -> list[Task]:
    """Step the host's issue rule on a virtual clock: stage ``i`` runs on ``units[i]`` and takes
    ``cycles_per_tile[i]`` per tile. Returns every task in issue order (by start time) with its
    start and end. Rule: whenever a unit is idle it starts, among its ready tasks, the one of the
    lowest tile, then the lowest stage (``priority="tile"``), or of the lowest stage, then the lowest
    tile (``"stage"``); ready = previous stage of the same tile done, same stage of
    the previous tile done, and a free copy of the buffer the stage writes (the copy used by tile
    ``j - copies`` is free once ``last_reader`` has finished tile ``j - copies``)."""
    n = len(units)
    if len(cycles_per_tile) != n or tiles < 1:
        raise ValueError("one cycle count per stage and tiles >= 1")
    writes = {b.producer: b for b in buffers}
    done: dict[tuple[int, int], float] = {}
    started: set[tuple[int, int]] = set()
    busy_until = {u: 0.0 for u in set(units)}
    order: list[Task] = []
    now = 0.0
    total = n * tiles
    prio = sorted(busy_until, key=units.index)
    while len(order) < total:
        started_any = True
        while started_any:
            started_any = False
            for u in prio:
                if busy_until[u] > now:
                    continue
                best = None
                cand = ([(i, j) for j in range(tiles) for i in range(n)] if priority == "tile"
                        else [(i, j) for i in range(n) for j in range(tiles)])
                for i, j in cand:
                        if units[i] != u or (i, j) in started:
                            continue
                        deps = ([(i - 1, j)] if i else []) + ([(i, j - 1)] if j else [])
                        b = writes.get(i)
                        if b is not None and j >= b.copies:
                            deps.append((b.last_reader, j - b.copies))
                        if all(d in done and done[d] <= now for d in deps):
                            best = (i, j)
                            break
                if best is None:
                    continue
                i, j = best
                t = Task(i, j, u, now, now + cycles_per_tile[i])
                started.add(best)
                done[best] = t.end
                busy_until[u] = t.end
                order.append(t)
                started_any = True
        if len(order) == total:
            break
        future = [e for e in done.values() if e > now]
        if not future:
            raise RuntimeError("issue schedule deadlocked (a buffer with too few copies?)")
        now = min(future)
    return order


PRIORITY = {"row": "tile", "attention": "stage"}
"""The issue rule's choice per segment kind: a row segment's idle unit takes the oldest tile first (its
array alternates proj, fc1, fc2 of successive tiles), an attention segment's the earliest stage
(the int8 unit runs QK^T of a newer head while the softmax of an older one finishes, then its P.V).
With these the issue takes the simulator's charge of every segment of the paper-size ViT-B trace
(tests/hls/test_pipeline.py)."""


def makespan(tasks: list[Task]) -> float:
    return max(t.end for t in tasks) if tasks else 0.0


# ------------------------------------------------------------------------------ the trunk as steps
def _buf(env: dict, name: str, shape, dtype) -> np.ndarray:
    """``env[name]``, created once (safe when unit threads race to create it: ``setdefault`` is atomic)."""
    a = env.get(name)
    return a if a is not None else env.setdefault(name, np.zeros(shape, dtype))


def head_major_rows(d: int, heads: int) -> np.ndarray:
    """qkv output channel order ``[Q_h K_h V_h]`` per head (the weight rows permuted offline):
    entry ``r`` of the head-major output is channel ``perm[r]`` of the model's ``[Q K V]`` layout."""
    hd = d // heads
    return np.array([part * d + h * hd + c for h in range(heads) for part in range(3) for c in range(hd)])


@dataclass(frozen=True)
class ChainStream:
    """A chained top-k's output as the vector IP wrote it (``PynqUnits.vector_chain``): the act stream
    ``tok_chunks`` / ``pairs`` of ``k``-channel rows, which the ternary IP reads (``PynqUnits.ternary``)."""

    chunks: np.ndarray
    pairs: np.ndarray
    k: int

    @staticmethod
    def join(parts: list["ChainStream"]) -> "ChainStream":
        """Row tiles' streams in token order: one stream of all their rows (the rows are independent)."""
        return ChainStream(np.concatenate([p.chunks for p in parts]), np.concatenate([p.pairs for p in parts]),
                           parts[0].k)


def trunk_steps(trunk: TrunkQ, img_q: np.ndarray, sparsity: float, env: dict, fused: bool = False,
                chain: bool = False) -> list[Step]:
    """The integer trunk (``TrunkQ.tokens``) as the host issues it; tensors live in ``env``
    (``env["x"]``: the residual stream at the end). Each step's ``run(units, tile)`` does on its tile
    exactly what the integer model does on the whole op. ``fused`` (``schedule.attention: fused``): a
    block's QK^T, softmax and P.V are one int8-unit step ``<block>.attn`` (``Units.attention`` per head on
    that head's ``[Q_h K_h V_h]`` rows), so the attention segment is ``[qkv, attn]``, tiled by head.
    ``chain`` (``schedule.vector_chain: fused``): ``add1 -> norm2 -> fc1``'s top-k, ``gelu -> fc2``'s top-k and
    ``add2 -> the next block's norm1 -> qkv``'s top-k (block 0: ``norm1 -> qkv``'s) are one vector step each
    (``Units.vector_chain``, named after the chain's first op), the linear reading the chain's top-k'd
    output (a backend's :class:`ChainStream` per tile, or the kept values in place)."""
    pt = trunk.patches(img_q)
    t = trunk.prefix.shape[0] + trunk.pos.shape[0]
    d = trunk.pos.shape[1]
    steps: list[Step] = []

    def patch_embed(u, tile):
        env["e"] = u.gemm("patch_embed", pt, trunk.embed_w.T, trunk.embed_bias, out="int16",
                          mult=trunk.embed_mult, shift=trunk.embed_shift)

    def pos_add(u, tile):
        env["x"] = sat(np.concatenate([trunk.prefix.astype(np.int64), env["e"].astype(np.int64) + trunk.pos]),
                       RES_MIN, RES_MAX, np.int16)

    steps.append(Step("patch_embed", "int8", "gemm", patch_embed, m=pt.shape[0], n=d, weights=True))
    steps.append(Step("pos_embed", "host", "host", pos_add))

    def chained(name, dst, width, *, res=None, add=None, ln=None, table=None, src8=None):
        """A chain step: ``Units.vector_chain`` on the tile; its top-k'd output in ``env[dst]`` (int8) or, a
        backend's :class:`ChainStream`, in ``env[dst + ".streams"]`` by tile start; the residual in ``res``."""
        def run(u, tile):
            sl = tile if tile is not None else slice(0, t)
            r, y = u.vector_chain(name, x16=env["x"][sl] if (add is not None or ln is not None) else None,
                                  x8=env[src8][sl] if src8 else None, add=add, ln=ln, gelu_table=table,
                                  sparsity=sparsity)
            if res is not None:
                _buf(env, res, (t, d), np.int16)[sl] = r
            if isinstance(y, ChainStream):
                env.setdefault(dst + ".streams", {})[sl.start] = y
            else:
                _buf(env, dst, (t, width), np.int8)[sl] = y
        return run

    def chained_input(u, key, sl):
        """A linear's input: the chain's stream of that tile (or all tiles joined), else the int8 rows."""
        streams = env.get(key + ".streams")
        if not streams:
            return env[key][sl]
        if sl == slice(0, t):
            return ChainStream.join([streams[k] for k in sorted(streams)])
        return streams[sl.start]

    def rows(name, src, dst, fn, dtype, width):
        def run(u, tile):
            sl = tile if tile is not None else slice(0, t)
            y = fn(u, name, *(env[s][sl] for s in src))
            _buf(env, dst, (t, width), dtype)[sl] = y
        return run

    for b, blk in enumerate(trunk.blocks):
        p = f"blocks.{b}."
        h = blk.num_heads
        hd = d // h
        hidden = blk.fc1.codes.shape[0]
        perm = head_major_rows(d, h)
        qkv_h = LinearQ(blk.qkv.codes[perm], None if blk.qkv.bias is None else np.asarray(blk.qkv.bias)[perm],
                        blk.qkv.mult, blk.qkv.shift)

        def lin(lq):
            return lambda u, name, x: u.ternary(name, lq, x, sparsity)

        if not chain:
            steps.append(Step(p + "norm1", "vector", "layernorm",
                              rows(p + "norm1", ["x"], p + "n1", lambda u, n, x, ln=blk.ln1: u.layernorm(n, ln, x),
                                   np.int8, d), elements=t * d, out_bytes_per_row=d))
        elif b == 0:  # the first norm1 -> qkv's top-k (later blocks': in the previous block's add2 chain)
            steps.append(Step(p + "norm1", "vector", "layernorm",
                              chained(p + "norm1", p + "n1", d, ln=blk.ln1), elements=t * d, out_bytes_per_row=d))

        def qkv(u, tile, p=p, qkv_h=qkv_h, h=h, hd=hd):
            out = _buf(env, p + "qkvh", (h, t, 3, hd), np.int8)
            heads = range(h) if tile is None else [tile]
            for hh in heads:
                part = LinearQ(qkv_h.codes[hh * 3 * hd:(hh + 1) * 3 * hd],
                               None if qkv_h.bias is None else qkv_h.bias[hh * 3 * hd:(hh + 1) * 3 * hd],
                               qkv_h.mult, qkv_h.shift)
                out[hh] = u.ternary(p + "qkv", part, chained_input(u, p + "n1", slice(0, t)),
                                    sparsity).reshape(t, 3, hd)

        def qk(u, tile, p=p, h=h):
            heads = slice(0, h) if tile is None else slice(tile, tile + 1)
            q = env[p + "qkvh"][heads, :, 0]
            k = env[p + "qkvh"][heads, :, 1]
            y = u.gemm(p + "attn.qk", q, k.transpose(0, 2, 1))
            _buf(env, p + "scores", (h, t, t), np.int64)[heads] = y

        def softmax(u, tile, p=p, h=h, blk=blk):
            heads = slice(0, h) if tile is None else slice(tile, tile + 1)
            s = env[p + "scores"][heads]
            y = u.softmax(p + "attn.softmax", s.reshape(-1, t), blk.softmax_mult, blk.softmax_shift)
            _buf(env, p + "probs", (h, t, t), np.uint8)[heads] = y.reshape(s.shape)

        def av(u, tile, p=p, h=h, hd=hd, blk=blk):
            heads = slice(0, h) if tile is None else slice(tile, tile + 1)
            v = env[p + "qkvh"][heads, :, 2]
            o = u.gemm(p + "attn.av", env[p + "probs"][heads], v, out="int8", mult=blk.av_mult, shift=blk.av_shift)
            _buf(env, p + "a", (t, d), np.int8)[:, heads.start * hd:heads.stop * hd] = o.transpose(1, 0, 2).reshape(t, -1)

        def attn(u, tile, p=p, h=h, hd=hd, blk=blk):
            heads = range(h) if tile is None else [tile]
            a = _buf(env, p + "a", (t, d), np.int8)
            for hh in heads:  # head hh's rows [Q_h K_h V_h] are tatvpr_attention's qkv layout for one head
                a[:, hh * hd:(hh + 1) * hd] = u.attention(p + "attn", env[p + "qkvh"][hh].reshape(t, 3 * hd), 1,
                                                          blk.softmax_mult, blk.softmax_shift, blk.av_mult,
                                                          blk.av_shift)

        qkv_step = Step(p + "qkv", "ternary", "ternary", qkv, m=t, n=3 * d, out_bytes_per_head=t * 3 * hd)
        if fused:
            steps += [qkv_step, Step(p + "attn", "int8", "gemm", attn, batch=h, out_bytes_per_head=t * hd)]
        else:
            steps += [qkv_step,
                      Step(p + "attn.qk", "int8", "gemm", qk, batch=h, out_bytes_per_head=4 * t * t),
                      Step(p + "attn.softmax", "vector", "softmax", softmax, elements=h * t * t,
                           out_bytes_per_head=t * t),
                      Step(p + "attn.av", "int8", "gemm", av, batch=h, out_bytes_per_head=t * hd)]
        if chain:
            nxt = trunk.blocks[b + 1] if b + 1 < len(trunk.blocks) else None

            def lin_in(name, lq, key, dst):
                def run(u, tile):
                    sl = tile if tile is not None else slice(0, t)
                    y = u.ternary(name, lq, chained_input(u, key, sl), sparsity)
                    _buf(env, dst, (t, lq.codes.shape[0]), np.int8)[sl] = y
                return run

            steps += [
                Step(p + "proj", "ternary", "ternary", rows(p + "proj", [p + "a"], p + "y1", lin(blk.proj), np.int8, d),
                     m=t, n=d, out_bytes_per_row=d),
                # add1 -> norm2 -> fc1's top-k: the residual x1 written (add2 reads it)
                Step(p + "add1", "vector", "add",
                     chained(p + "add1", p + "n2", d, res=p + "x1", add=(blk.res1_mult, blk.res1_shift), ln=blk.ln2,
                             src8=p + "y1"), elements=t * d, out_bytes_per_row=2 * d),
                Step(p + "fc1", "ternary", "ternary", lin_in(p + "fc1", blk.fc1, p + "n2", p + "f"), m=t, n=hidden,
                     out_bytes_per_row=hidden),
                Step(p + "gelu", "vector", "lut", chained(p + "gelu", p + "g", hidden, table=blk.gelu, src8=p + "f"),
                     elements=t * hidden, out_bytes_per_row=hidden),
                Step(p + "fc2", "ternary", "ternary", lin_in(p + "fc2", blk.fc2, p + "g", p + "y2"), m=t, n=d,
                     out_bytes_per_row=d)]
            if nxt is None:  # the last add2 alone (the head's final norm is not a trunk step)
                steps.append(Step(p + "add2", "vector", "add",
                                  rows(p + "add2", [p + "x1", p + "y2"], "x",
                                       lambda u, n, x, y, blk=blk: u.add(n, x, y, blk.res2_mult, blk.res2_shift),
                                       np.int16, d), elements=t * d, out_bytes_per_row=2 * d))
            else:  # add2 -> the next block's norm1 -> its qkv's top-k; add2's output is the next residual "x"
                q = f"blocks.{b + 1}."

                def add2_chain(u, tile, blk=blk, nxt=nxt, p=p, q=q):
                    sl = tile if tile is not None else slice(0, t)
                    r, y = u.vector_chain(p + "add2", x16=env[p + "x1"][sl], x8=env[p + "y2"][sl],
                                          add=(blk.res2_mult, blk.res2_shift), ln=nxt.ln1, sparsity=sparsity)
                    _buf(env, "x", (t, d), np.int16)[sl] = r
                    if isinstance(y, ChainStream):
                        env.setdefault(q + "n1.streams", {})[sl.start] = y
                    else:
                        _buf(env, q + "n1", (t, d), np.int8)[sl] = y
                steps.append(Step(p + "add2", "vector", "add", add2_chain, elements=t * d, out_bytes_per_row=2 * d))
            continue
        steps += [
            Step(p + "proj", "ternary", "ternary", rows(p + "proj", [p + "a"], p + "y1", lin(blk.proj), np.int8, d),
                 m=t, n=d, out_bytes_per_row=d),
            Step(p + "add1", "vector", "add",
                 rows(p + "add1", ["x", p + "y1"], p + "x1",
                      lambda u, n, x, y, blk=blk: u.add(n, x, y, blk.res1_mult, blk.res1_shift), np.int16, d),
                 elements=t * d, out_bytes_per_row=2 * d),
            Step(p + "norm2", "vector", "layernorm",
                 rows(p + "norm2", [p + "x1"], p + "n2", lambda u, n, x, ln=blk.ln2: u.layernorm(n, ln, x),
                      np.int8, d), elements=t * d, out_bytes_per_row=d),
            Step(p + "fc1", "ternary", "ternary", rows(p + "fc1", [p + "n2"], p + "f", lin(blk.fc1), np.int8, hidden),
                 m=t, n=hidden, out_bytes_per_row=hidden),
            Step(p + "gelu", "vector", "lut",
                 rows(p + "gelu", [p + "f"], p + "g", lambda u, n, x, tb=blk.gelu: u.gelu(n, tb, x), np.int8, hidden),
                 elements=t * hidden, out_bytes_per_row=hidden),
            Step(p + "fc2", "ternary", "ternary", rows(p + "fc2", [p + "g"], p + "y2", lin(blk.fc2), np.int8, d),
                 m=t, n=d, out_bytes_per_row=d),
            # add2 writes the next residual stream "x" (the block's input x is dead once add1 read it)
            Step(p + "add2", "vector", "add",
                 rows(p + "add2", [p + "x1", p + "y2"], "x",
                      lambda u, n, x, y, blk=blk: u.add(n, x, y, blk.res2_mult, blk.res2_shift), np.int16, d),
                 elements=t * d, out_bytes_per_row=2 * d)]
    return steps


# ------------------------------------------------------------------------------ running a query
@dataclass
class IssueLog:
    """What :func:`run_trunk` issued: ``segments`` (the cut) and ``tasks`` ``[(step name, unit, tile)]``
    in issue order (``tile`` a token slice's start, a head, or None)."""

    segments: list[dict] = field(default_factory=list)
    tasks: list[tuple[str, str, object]] = field(default_factory=list)


def _tile_arg(kind: str, j: int, tile_tokens: int, tokens: int):
    if kind == "row":
        return slice(j * tile_tokens, min(tokens, (j + 1) * tile_tokens))
    if kind == "attention":
        return j
    return None


@lru_cache(maxsize=256)
def _issue_order(units: tuple, per_tile: tuple, tiles: int, bufs: tuple, priority: str) -> list[Task]:
    """:func:`issue_schedule` sorted into issue order (tasks starting together: oldest tile, earliest
    stage first); cached, since a model's segments repeat block after block and query after query."""
    tasks = issue_schedule(list(units), list(per_tile), tiles, list(bufs), priority)
    return sorted(tasks, key=lambda x: (x.start, x.end, x.tile, x.stage))


def default_cycles(s: Step, tokens: int) -> float:
    """A cycle estimate per step for the issue order when the caller has none (work per unit):
    the order only decides which idle unit starts what; the integers never depend on it."""
    if s.kind == "ternary":
        return s.m * s.n
    if s.kind == "gemm":
        return max(1, s.batch) * tokens * tokens
    return s.elements


def _run_threads(tasks: list[Task], seg_steps: list[Step], kind: str, tile_tokens: int, tokens: int, u,
                 buffers: list[Handoff], log: IssueLog) -> None:
    """One thread per unit, each running its unit's tasks in the issue order and starting a task only
    when what it needs is done (the previous stage's tile, the same stage's previous tile, a free
    buffer copy): the units' IPs run at the same time (a thread blocked polling its IP's ap_done
    sleeps). No deadlock: every task's needs end before it starts in :func:`issue_schedule`'s
    order, so the earliest unfinished task always has them and heads its unit's queue."""
    import threading

    writes = {b.producer: b for b in buffers}
    done = {(t.stage, t.tile): threading.Event() for t in tasks}
    lock = threading.Lock()
    errors: list[BaseException] = []
    by_unit: dict[str, list[Task]] = {}
    for tk in tasks:
        by_unit.setdefault(tk.unit, []).append(tk)

    def worker(queue):
        try:
            for tk in queue:
                i, j = tk.stage, tk.tile
                needs = ([(i - 1, j)] if i else []) + ([(i, j - 1)] if j else [])
                b = writes.get(i)
                if b is not None and j >= b.copies:
                    needs.append((b.last_reader, j - b.copies))
                for d in needs:
                    while not done[d].wait(0.5):
                        if errors:
                            return
                arg = _tile_arg(kind, j, tile_tokens, tokens)
                with lock:
                    log.tasks.append((seg_steps[i].name, seg_steps[i].unit,
                                      arg.start if isinstance(arg, slice) else arg))
                seg_steps[i].run(u, arg)
                done[(i, j)].set()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(q,), name=f"tatvpr-{unit}") for unit, q in by_unit.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def run_trunk(trunk: TrunkQ, img_q: np.ndarray, sparsity: float, units: Units | None = None, *,
              tile_tokens: int = 32, cycles: dict[str, float] | None = None,
              spilled: frozenset | set = frozenset(), threads: bool = False,
              fused: bool = False, chain: bool = False) -> tuple[np.ndarray, IssueLog]:
    """``TrunkQ.tokens`` issued under ``pipelined``: every segment's tasks in :func:`issue_schedule`'s
    order (``cycles``: each step's cycles, e.g. the simulator's; default :func:`default_cycles`).
    Returns the residual int16 tokens (equal to ``trunk.tokens(img_q, sparsity)``) and the log.

    ``threads=False``: the tasks run one after another in that order (any backend; the log is the
    order a concurrent host starts them in). ``threads=True``: one thread per unit (:func:`_run_threads`),
    so the board's IPs (``PynqUnits``) run at the same time; the log is the order they actually started.
    The backend must allow one call per unit at a time from different threads (numpy, ``PynqUnits``;
    not the C simulation's ``csim_units``, which numbers its work folders by call). ``fused``: the
    attention as one int8-unit step per block; ``chain``: the vector ops of each row chain as one step
    (:func:`trunk_steps`)."""
    from .integer import NUMPY_UNITS

    u = units or NUMPY_UNITS
    env: dict = {}
    steps = trunk_steps(trunk, img_q, sparsity, env, fused, chain)
    tokens = trunk.prefix.shape[0] + trunk.pos.shape[0]
    log = IssueLog(segments=segments(steps, tokens, tile_tokens, spilled))
    for seg in log.segments:
        seg_steps = steps[seg["first"]:seg["last"] + 1]
        n = seg["tiles"]
        per_tile = [(cycles or {}).get(s.name, default_cycles(s, tokens)) / n for s in seg_steps]
        bufs = handoffs(seg_steps, seg["kind"], tile_tokens)
        tasks = _issue_order(tuple(s.unit for s in seg_steps), tuple(per_tile), n, tuple(bufs),
                             PRIORITY.get(seg["kind"], "tile"))
        if threads and len({s.unit for s in seg_steps}) > 1:
            _run_threads(tasks, seg_steps, seg["kind"], tile_tokens, tokens, u, bufs, log)
            continue
        for tk in tasks:
            s = seg_steps[tk.stage]
            arg = _tile_arg(seg["kind"], tk.tile, tile_tokens, tokens)
            s.run(u, arg)
            log.tasks.append((s.name, s.unit, arg.start if isinstance(arg, slice) else arg))
    return env["x"], log

