"""The ``pipelined`` overlap as the host issues it (hls/driver/tatvpr_pynq/pipeline.py, docs/hls.md):

- the segment cut equals the simulator's (``sim.schedule.segments``) on the paper-size ViT-B trace
  and on the tiny demo student's own trace, spills included;
- the issue rule, stepped with the simulator's per-op cycles, takes the simulator's charge of every
  segment of the paper trace (row segments exactly, attention within the charge's rounding), and
  the hand-off buffers it needs (3 copies of a head's Q, K, V; the sim builds 2) are checked;
- a query issued tile by tile and head by head equals the integer model bit for bit, in numpy and
  in the C simulation of the HLS units (tiny demo student, whole query with its BoQ head).
Hand-worked expectations are derived in the comments; the flow-shop recurrence is stepped here."""

from __future__ import annotations

import numpy as np
import pytest

from tatvpr_hw.lower.hls.paths import driver_package

driver_package()
from tatvpr_pynq import integer as iq  # noqa: E402
from tatvpr_pynq.pipeline import (PRIORITY, SIM_UNIT, Handoff, handoffs, head_major_rows,  # noqa: E402
                                  issue_schedule, makespan, run_trunk, segments, trunk_steps)


# --------------------------------------------------------------------------- model builders
def random_trunk(seed=0, d=32, heads=2, hidden=64, depth=2, grid=4, patch=2, prefix=1):
    """A small random integer trunk (numpy only)."""
    rng = np.random.default_rng(seed)

    def ln():
        return iq.layernorm_params(rng.normal(1, .2, d), rng.normal(0, .1, d), 1e-6, 0.01, 0.05)

    def lin(n, k):
        m, s = iq.quantize_multiplier(1.0 / (4 * np.sqrt(k)))
        return iq.LinearQ(rng.choice(np.array([-1, 0, 1], np.int8), size=(n, k)),
                          rng.integers(-200, 200, size=n).astype(np.int64), m, s)

    blocks = [iq.BlockQ(heads, ln(), lin(3 * d, d), 1518500250, 38, 1518500250, 40, lin(d, d),
                        rng.integers(2 ** 29, 2 ** 30, size=d), rng.integers(28, 31, size=d), ln(), lin(hidden, d),
                        iq.gelu_table(0.05, 0.04), lin(d, hidden), rng.integers(2 ** 29, 2 ** 30, size=d),
                        rng.integers(28, 31, size=d)) for _ in range(depth)]
    em, es = iq.quantize_multiplier(1 / 40.)
    return iq.TrunkQ(patch=patch, img_scale=0.02,
                     embed_w=rng.integers(-127, 128, size=(d, 3 * patch * patch)).astype(np.int8),
                     embed_bias=rng.integers(-500, 500, size=d).astype(np.int64), embed_mult=em, embed_shift=es,
                     prefix=rng.integers(-2000, 2000, size=(prefix, d)).astype(np.int16),
                     pos=rng.integers(-2000, 2000, size=(grid * grid, d)).astype(np.int16), blocks=blocks,
                     res_scale=0.01)


def shape_trunk(d=768, heads=12, hidden=3072, depth=12, grid=16, patch=14):
    """ViT-B/14 at 224 px as shapes only (zero weights, no memory for the codes): for the cut."""
    def lin(n, k):
        return iq.LinearQ(np.broadcast_to(np.int8(0), (n, k)), None, 1, 1)

    ln = iq.LayerNormQ(np.zeros(d, np.int64), np.zeros(d, np.int64), 1)
    blocks = [iq.BlockQ(heads, ln, lin(3 * d, d), 1, 1, 1, 1, lin(d, d), np.ones(d), np.ones(d), ln, lin(hidden, d),
                        np.zeros(256, np.int8), lin(d, hidden), np.ones(d), np.ones(d)) for _ in range(depth)]
    return iq.TrunkQ(patch=patch, img_scale=1.0, embed_w=np.zeros((d, 3 * patch * patch), np.int8),
                     embed_bias=np.zeros(d, np.int64), embed_mult=1, embed_shift=1,
                     prefix=np.zeros((1, d), np.int16), pos=np.zeros((grid * grid, d), np.int16), blocks=blocks,
                     res_scale=1.0)


def _image(trunk, seed=5):
    side = int(np.sqrt(trunk.pos.shape[0])) * trunk.patch
    return np.random.default_rng(seed).integers(-128, 128, size=(3, side, side)).astype(np.int8)


def board_ops(steps):
    """The steps the fabric runs (the position-embedding add is the host's)."""
    return [s for s in steps if s.unit != "host"]


def cut(segs, names):
    return [(s["kind"], s["tiles"], tuple(names[s["first"]:s["last"] + 1])) for s in segs]


# --------------------------------------------------------------------------- hand-worked issue
def _flow_shop(per_tile, tiles):
    """Makespan of identical tiles through stages on distinct units (each finishes tile j after
    tile j - 1 and after the previous stage's tile j): the classic recurrence, stepped."""
    done = [0] * len(per_tile)
    for _ in range(tiles):
        prev = 0
        for i, t in enumerate(per_tile):
            done[i] = max(done[i], prev) + t
            prev = done[i]
    return done[-1]


def test_issue_on_distinct_units_is_the_flow_shop_by_hand():
    # 3 units, 4 tiles, 5 / 3 / 4 cycles per tile: first tile 12, then the 5-cycle unit sets the
    # pace: 12 + 3 * 5 = 27, with double buffers or none, either priority
    for bufs in ((), (Handoff("a", 0, 1, 2, 0), Handoff("b", 1, 2, 2, 0))):
        for pri in ("tile", "stage"):
            tasks = issue_schedule(["a", "b", "c"], [5, 3, 4], 4, bufs, pri)
            assert makespan(tasks) == 27
            assert sorted((t.stage, t.tile) for t in tasks) == [(i, j) for i in range(3) for j in range(4)]


@pytest.mark.parametrize("seed", range(40))
def test_charge_and_issue_on_distinct_units_equal_the_flow_shop(seed):
    """On stages of distinct units the simulator's charge (``sim.schedule.pipeline_cycles``) and the
    host's issue rule both equal the flow-shop recurrence stepped above (one derivation, two machines)."""
    from sim.schedule import pipeline_cycles

    rng = np.random.default_rng(seed)
    n, tiles = int(rng.integers(1, 4)), int(rng.integers(1, 21))
    per = [int(v) for v in rng.integers(1, 51, size=n)]
    units = ["ternary_array", "int8_unit", "vector_unit"][:n]
    want = _flow_shop(per, tiles)
    assert pipeline_cycles([(u, t * tiles) for u, t in zip(units, per)], tiles) == want
    assert makespan(issue_schedule(units, per, tiles)) == want


def test_one_copy_between_units_makes_them_alternate_by_hand():
    # producer 1 cycle, consumer 10 cycles per tile, 3 tiles. Double buffer: the producer runs
    # ahead; makespan 1 + 3 * 10 = 31. One copy: tile j + 1 can only be written once the consumer has
    # finished tile j: tile 1 written 11..12, consumed 12..22; tile 2 written 22..23, consumed
    # 23..33 -> 33. The buffer rule bites.
    assert makespan(issue_schedule(["a", "b"], [1, 10], 3, [Handoff("x", 0, 1, 2, 0)])) == 31
    tasks = issue_schedule(["a", "b"], [1, 10], 3, [Handoff("x", 0, 1, 1, 0)])
    assert makespan(tasks) == 33
    assert [(t.stage, t.tile, t.start) for t in tasks] == [(0, 0, 0), (1, 0, 1), (0, 1, 11), (1, 1, 12),
                                                          (0, 2, 22), (1, 2, 23)]


def test_shared_unit_priority_by_hand():
    # qkv (array), QK^T (int8), softmax (vector), P.V (int8), 1 cycle each, 3 heads. The array
    # writes heads 0, 1, 2 at 0..1, 1..2, 2..3; the int8 unit runs qk0 1..2, qk1 2..3, the vector unit
    # sm0 2..3. At 3 the int8 unit may start av0 or qk2. Stage first: qk2 3..4 (sm1 3..4), av0 4..5
    # (sm2 4..5), av1 5..6, av2 6..7 -> 7, the int8 unit's 6 tasks back to back from 1 (the bound).
    # Tile first: av0 3..4, av1 4..5, then qk2 5..6, sm2 6..7, av2 7..8 -> 8.
    units = ["array", "int8", "vector", "int8"]
    stage = issue_schedule(units, [1, 1, 1, 1], 3, priority="stage")
    assert makespan(stage) == 7
    assert [(t.stage, t.tile) for t in stage if t.unit == "int8"] == [(1, 0), (1, 1), (1, 2), (3, 0), (3, 1), (3, 2)]
    assert makespan(issue_schedule(units, [1, 1, 1, 1], 3, priority="tile")) == 8


# --------------------------------------------------------------------------- the cut = the simulator's
def test_paper_cut_and_issue_equal_the_simulator():
    """ViT-B/14, 257 tokens, s = 0.4 on the KV260 point under ``pipelined``: the host's segments are
    the simulator's, op for op, and the issue rule stepped with the simulator's cycles takes each
    segment's charge (row: exactly; attention: within the charge's rounding up to whole cycles)."""
    from sim.arch import load_arch, with_overrides
    from sim.schedule import pipeline_cycles
    from sim.schedule import segments as sim_segments
    from sim.simulator import simulate
    from sim.trace import synthetic_vit_trace

    trace = synthetic_vit_trace(sparsity=0.4)
    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined"})
    res = simulate(arch, trace)
    recs = res.layers
    tile = arch.spec.schedule.tile_tokens
    trunk = shape_trunk()
    steps = board_ops(trunk_steps(trunk, _image(trunk), 0.4, {}))
    ops = trace.ops[:-1]  # the trace ends with the final LayerNorm: the head's, not the trunk's
    assert [SIM_UNIT[s.unit] for s in steps] == [r["unit"] for r in recs[:-1]]
    names = [r["name"] for r in recs[:-1]]
    mine = segments(steps, 257, tile)
    theirs = sim_segments(ops, recs[:-1], 257, tile)
    assert cut(mine, names) == cut(theirs, names)
    # by hand: patch embedding alone, block 0's norm1, then per block attention and the row segment
    # proj .. add2 + the next block's norm1 (the last one ends at add2): 1 + 1 + 12 x 2 = 26
    assert [s["kind"] for s in mine[:4]] == ["single", "row", "attention", "row"] and len(mine) == 26
    # issue: per segment the makespan of the rule = the simulator's charge
    total = 0
    for seg in mine:
        ss = steps[seg["first"]:seg["last"] + 1]
        rr = recs[seg["first"]:seg["last"] + 1]
        n = seg["tiles"]
        tasks = issue_schedule([s.unit for s in ss], [r["cycles"] / n for r in rr], n,
                               handoffs(ss, seg["kind"], tile), PRIORITY.get(seg["kind"], "tile"))
        charge = pipeline_cycles([(r["unit"], r["cycles"]) for r in rr], n)
        ms = makespan(tasks)
        if seg["kind"] == "attention":
            # the charge is the busiest unit's period plus a fill counted in full; the issue rule hides
            # part of the softmax's row steps under the int8 unit's work: never above the charge, at
            # most 2 % below it (docs/engine.md section 5a: 472,410 issued vs 478,510 charged)
            assert 0.98 * charge <= ms <= charge, seg
        else:  # exactly, up to the charge's rounding up to a whole cycle
            assert charge - 1 < ms <= charge, seg
        total += charge
    # the trunk's segments are all of the query but the final LayerNorm, which the simulator pipelines
    # with the last row segment (so it adds less than its own cycles), and each ternary linear's top-k
    # on the vector unit (schedule.topk fabric, the default; a stage of its segment the host's issue here
    # leaves out), which adds at most its own cycles
    topk = sum(r.get("topk_cycles", 0) for r in recs)
    assert topk > 0 and total < res["cycles"] < total + recs[-1]["cycles"] + topk


def test_two_copies_of_the_heads_buffer_starve_the_int8_unit():
    """The mismatch reported to the schedule's owner: with the 2 copies of ``pipe_heads`` the
    simulator builds, the array must wait for P.V of head h - 2 before it writes head h, the int8
    unit (the busiest) runs dry and the attention segment of ViT-B on the KV260 point takes about
    a fifth more than the charge; 3 copies stay within it."""
    from sim.arch import load_arch, with_overrides
    from sim.schedule import pipeline_cycles
    from sim.simulator import simulate
    from sim.trace import synthetic_vit_trace

    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined"})
    recs = simulate(arch, synthetic_vit_trace(sparsity=0.4, depth=1)).layers[2:6]
    assert [r["name"].split(".")[-1] for r in recs] == ["qkv", "qk", "softmax", "av"]
    units = [r["unit"] for r in recs]
    per = [r["cycles"] / 12 for r in recs]
    charge = pipeline_cycles([(r["unit"], r["cycles"]) for r in recs], 12)
    scores = Handoff("scores", 1, 3, 3, 0)
    two = makespan(issue_schedule(units, per, 12, [Handoff("heads", 0, 3, 2, 0), scores], "stage"))
    three = makespan(issue_schedule(units, per, 12, [Handoff("heads", 0, 3, 3, 0), scores], "stage"))
    assert two > 1.15 * charge and 0.98 * charge <= three <= charge


def test_handoff_buffers_of_a_vit_b_block():
    """Bytes per copy, by hand (ViT-B, 16-token tiles, 257 tokens, head dim 64): row hand-offs carry
    the producer's tile as the IPs store it: int8 (768 B / token) after a ternary linear or a
    LayerNorm, int16 (1536 B) after a residual add, 3072 B after fc1 and GELU; attention: one head's
    Q, K, V 257 x 192 B; one head's int32 scores 4 x 257^2 B."""
    trunk = shape_trunk(depth=2)
    steps = trunk_steps(trunk, _image(trunk), 0.4, {})
    segs = segments(steps, 257, 16)
    row = next(s for s in segs if s["kind"] == "row" and s["last"] > s["first"])
    hs = handoffs(steps[row["first"]:row["last"] + 1], "row", 16)
    assert [h.bytes_per_copy // 16 for h in hs] == [768, 1536, 768, 3072, 3072, 768, 1536]
    assert all(h.copies == 2 for h in hs)
    att = next(s for s in segs if s["kind"] == "attention")
    ha = handoffs(steps[att["first"]:att["last"] + 1], "attention", 16)
    assert [(h.name, h.copies, h.bytes_per_copy) for h in ha] == [("heads", 3, 257 * 192), ("scores", 3, 4 * 257 ** 2)]
    # through DDR these bytes are written once and read once per tile: the simulator's hand-off bytes
    # (tests/sim/test_overlap.py::test_handoff_bytes_of_the_paper_query_by_hand)


def test_tiny_student_cut_equals_the_simulators(student_and_images):
    """The demo student's own trace (``tatvpr_hw.tracing.trace_query``) cut by the simulator, spills
    included, equals the host's cut of its integer trunk, once the trace's ops the integer model folds
    (LayerScale ``ls1``/``ls2``: into the adds' multipliers) or runs on the host (the position-embedding
    add) are set aside: they sit inside row segments or at a segment's start and change no cut."""
    from sim.arch import load_arch, with_overrides
    from sim.schedule import segments as sim_segments
    from sim.simulator import simulate
    from tatvpr_hw.integer import export_trunk
    from tatvpr_hw.tracing import trace_query

    student, images = student_and_images
    trace = trace_query(student, images[0])
    trunk = export_trunk(student, images, sparsity=0.4)
    steps = board_ops(trunk_steps(trunk, trunk.quantize_image(images[0].double().numpy()), 0.4, {}))
    tokens = trunk.prefix.shape[0] + trunk.pos.shape[0]
    last = max(i for i, op in enumerate(trace.ops) if op.name.endswith(f"blocks.{len(trunk.blocks) - 1}.add2"))
    for outputs_kb in (896, 8):  # the KV260 point, and an output buffer so small that outputs spill
        arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined", "schedule.tile_tokens": 16,
                                                   "buffers.outputs_kb": outputs_kb})
        recs = simulate(arch, trace).layers
        theirs = sim_segments(trace.ops, recs, tokens, 16)
        folded = {i for i, op in enumerate(trace.ops[:last + 1])
                  if op.name.endswith((".ls1", ".ls2", "pos_embed.add"))}
        kept = [i for i in range(last + 1) if i not in folded]
        assert len(kept) == len(steps)
        assert [recs[i]["unit"] for i in kept] == [SIM_UNIT[s.unit] for s in steps]
        spilled = {steps[kept.index(i)].name for i in kept
                   if recs[i].get("spill_cycles", 0) or recs[i].get("readback_cycles", 0)}
        mine = segments(steps, tokens, 16, spilled)
        pos = {i: k for k, i in enumerate(kept)}
        mapped = []
        for s in theirs:
            idx = [pos[i] for i in range(s["first"], s["last"] + 1) if i in pos]
            if idx and idx[0] <= len(steps) - 1:
                mapped.append((s["kind"], s["tiles"], idx[0], idx[-1]))
        assert [(s["kind"], s["tiles"], s["first"], s["last"]) for s in mine] == mapped
        if outputs_kb == 8:
            assert spilled and any(s["kind"] == "single" and steps[s["first"]].name in spilled for s in mine)


# --------------------------------------------------------------------------- bit for bit
@pytest.mark.parametrize("tile_tokens", [1, 3, 5, 16, 64])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_issued_query_equals_the_integer_model(tile_tokens, heads):
    trunk = random_trunk(seed=heads, heads=heads)
    img = _image(trunk)
    ref = trunk.tokens(img, 0.4)
    got, log = run_trunk(trunk, img, 0.4, tile_tokens=tile_tokens)
    assert np.array_equal(got, ref)
    tokens = 17
    # every op of every segment ran once per tile: rows in tiles of tile_tokens, attention per head
    counts = {}
    for name, _, tile in log.tasks:
        counts[name] = counts.get(name, 0) + 1
    n_row = -(-tokens // tile_tokens)
    assert counts["blocks.0.fc1"] == n_row and counts["blocks.1.attn.softmax"] == heads
    assert counts["blocks.0.norm1"] == n_row and counts["patch_embed"] == 1
    # the issue order respects the data: a tile's fc2 after its fc1, head h's P.V after its QK^T
    order = {(n, t): i for i, (n, _, t) in enumerate(log.tasks)}
    for j in range(n_row):
        assert order[("blocks.0.fc1", j * tile_tokens)] < order[("blocks.0.fc2", j * tile_tokens)]
    for h in range(heads):
        assert order[("blocks.1.attn.qk", h)] < order[("blocks.1.attn.av", h)]


@pytest.mark.parametrize("tile_tokens", [2, 7])
def test_issued_with_one_thread_per_unit_equals_the_integer_model(tile_tokens):
    """``threads=True``: each unit's tasks on its own thread, waiting only for what they need."""
    trunk = random_trunk(seed=7, heads=4, depth=3)
    img = _image(trunk)
    got, log = run_trunk(trunk, img, 0.4, tile_tokens=tile_tokens, threads=True)
    assert np.array_equal(got, trunk.tokens(img, 0.4))
    seq, log_seq = run_trunk(trunk, img, 0.4, tile_tokens=tile_tokens)
    assert sorted(map(str, log.tasks)) == sorted(map(str, log_seq.tasks))   # the same tasks, once each


def test_a_failing_ip_stops_the_threaded_issue():
    """An IP error on one unit's thread ends the issue with that error (no thread left waiting)."""
    trunk = random_trunk(seed=8, heads=2)

    class Broken(iq.Units):
        def softmax(self, name, scores, mult, shift):
            if name == "blocks.1.attn.softmax":
                raise RuntimeError("vector IP did not finish")
            return super().softmax(name, scores, mult, shift)

    with pytest.raises(RuntimeError, match="vector IP did not finish"):
        run_trunk(trunk, _image(trunk), 0.4, Broken(), tile_tokens=4, threads=True)


def test_head_major_qkv_rows_by_hand():
    # D = 4, 2 heads of 2: [Q0 K0 V0 Q1 K1 V1] = channels [0 1 | 4 5 | 8 9 | 2 3 | 6 7 | 10 11]
    assert head_major_rows(4, 2).tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]


def test_a_wrong_issue_order_is_caught():
    """Plant the bug: run every attention head's P.V on head 0's probabilities -> not bit-exact."""
    trunk = random_trunk(seed=1, heads=2)
    img = _image(trunk)
    ref = trunk.tokens(img, 0.4)

    class WrongHead(iq.Units):
        def gemm(self, name, a, b, bias=None, *, out="int32", mult=0, shift=0):
            if name.endswith("attn.av"):
                b = np.zeros_like(b)
            return super().gemm(name, a, b, bias, out=out, mult=mult, shift=shift)

    got, _ = run_trunk(trunk, img, 0.4, WrongHead(), tile_tokens=4)
    assert not np.array_equal(got, ref)


# --------------------------------------------------------------------------- the demo student in C simulation
# student_and_images: tests/hls/conftest.py


def test_whole_query_issued_pipelined_in_csim_is_bit_exact(student_and_images, tmp_path):
    """The tiny demo student's whole query (trunk issued tile by tile and head by head, final norm,
    BoQ head) on the C-simulated HLS units gives the integer model's Q15 descriptor bit for bit, and
    each unit's counted cycles equal those of the same query run op by op (tiling moves no work
    between units; tests/hls/test_integer_model.py ties those to the simulator's)."""
    from sim.arch import load_arch
    from tatvpr_hw.integer import export_head_q, export_trunk
    from tatvpr_hw.lower.hls.query_csim import csim_query, csim_units

    student, images = student_and_images
    s = 0.4
    trunk = export_trunk(student, images, sparsity=s)
    head = export_head_q(student, trunk, images, sparsity=s)
    img = trunk.quantize_image(images[3].double().numpy())
    c = load_arch("kv260").spec.compute
    tokens = trunk.prefix.shape[0] + trunk.pos.shape[0]
    widest = max([trunk.pos.shape[1]] + [b.fc1.codes.shape[0] for b in trunk.blocks])
    units = csim_units(tmp_path / "pipe", pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports, fmt="ternary2",
                       lanes=16, rows=16, cols=16, kmax=-(-widest // c.simd) * c.simd, mmax=tokens)
    x, log = run_trunk(trunk, img, s, units, tile_tokens=16)
    y = units.layernorm("norm", trunk.norm, x) if head.uses_final_norm else x
    desc = head(y, units)
    assert np.array_equal(x, trunk.tokens(img, s))
    assert np.array_equal(desc, iq.query_descriptor(trunk, head, img, s))
    assert any(k == "row" and n > 1 for k, n in ((g["kind"], g["tiles"]) for g in log.segments))
    seq = csim_query(trunk, head, img, s, tmp_path / "seq", pe=c.pe, simd=c.simd, banks=c.banks, ports=c.ports)
    piped = {}
    for op in units.ops:
        if op.get("csim", True):
            piped[op["unit"]] = piped.get(op["unit"], 0) + int(op["cycles"])
    assert piped == seq.unit_cycles()
    # issued in pieces: more unit calls than op by op
    assert len(units.ops) > len(seq.ops)


def test_handoffs_are_the_buffers_the_simulator_charges():
    """The hand-off buffers the host's issue needs are the pipeline buffers ``sim.schedule`` charges
    (KV260 point, ``pipelined``, 16-token tiles, ViT-B): the same 7 row hand-offs per block by kind
    (array -> vector unit, hidden-wide or not; vector -> array; vector -> vector), 2 copies each, the
    same bytes per copy; the vector -> array ones hold the compress unit's (value, index) slots on chip
    (8 + 12 index bits for K_max = 3072) where the host hands over int8; 3 copies of a head's Q, K, V
    (257 x 192 B) and of its int32 scores (257^2 x 4 B, the simulator's rounded up to whole 16-score words)."""
    from sim.arch import load_arch, with_overrides
    from sim.schedule import pipeline_buffers

    arch = with_overrides(load_arch("kv260"), {"schedule.overlap": "pipelined", "schedule.tile_tokens": 16})
    sim_bufs = {b["name"]: b for b in pipeline_buffers(arch)}
    trunk = shape_trunk(depth=2)
    steps = trunk_steps(trunk, _image(trunk), 0.4, {})
    segs = segments(steps, 257, 16)
    row = next(s for s in segs if s["kind"] == "row" and s["last"] > s["first"])
    ss = steps[row["first"]:row["last"] + 1]
    mine: dict[str, list[int]] = {}
    for h in handoffs(ss, "row", 16):
        a, b = ss[h.producer].unit, ss[h.last_reader].unit
        kind = {("ternary", "vector"): "pipe_a2v", ("vector", "ternary"): "pipe_v2a",
                ("vector", "vector"): "pipe_v2v"}[(a, b)]
        hidden = kind != "pipe_v2v" and h.bytes_per_copy // 16 == 3072
        mine.setdefault(kind + ("_hidden" if hidden else ""), []).append(h.bytes_per_copy)
        assert h.copies == sim_bufs[kind + ("_hidden" if hidden else "")]["halves"] == 2
    index_bits = 12  # ceil(log2(3072))
    for name, sizes in mine.items():
        b = sim_bufs[name]
        assert len(sizes) == b["banks"], name                      # one memory pair per hand-off
        per_copy = b["bits"] // 8 // b["halves"] // b["banks"]
        expect = sizes[0] * (8 + index_bits) // 8 if name.startswith("pipe_v2a") else sizes[0]
        assert set(sizes) == {sizes[0]} and per_copy == expect, (name, per_copy, sizes)
    assert sorted(mine) == sorted(n for n in sim_bufs if n.startswith(("pipe_a2v", "pipe_v2a", "pipe_v2v")))
    att = next(s for s in segs if s["kind"] == "attention")
    heads, scores = handoffs(steps[att["first"]:att["last"] + 1], "attention", 16)
    h, sc = sim_bufs["pipe_heads"], sim_bufs["pipe_scores"]
    assert (heads.copies, h["halves"], h["bits"] // 8 // 3) == (3, 3, heads.bytes_per_copy)
    assert (scores.copies, sc["halves"]) == (3, 3)
    # a word holds max(int8 rows, lanes) = 16 scores: ceil(66,049 / 16) = 4,129 words of 64 B
    assert sc["bits"] // 8 // 3 == 4129 * 64 == 264_256 and scores.bytes_per_copy == 4 * 257 ** 2 == 264_196
