"""The overlap schedule (docs/engine.md section 5a, sim/schedule.py): hand-worked pipelines, the
segment cut of a ViT block, the bounds every schedule obeys, the buffers it adds, the arch and
sweep keys, hand-offs through DRAM and the host steps. Expected numbers are worked out by hand here,
never taken from sim.schedule (the charge on distinct units = the flow-shop recurrence = the host's
issue: tests/hls/test_pipeline.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from sim.arch import load_arch, with_overrides
from sim.dse import check_axes, parse_sweep
from sim.errors import SimInputError
from sim.resources import estimate_resources
from sim.packing import pack_ternary2
from sim.schedule import (HostCost, TopkFabric, critical_resource, handoff_bytes, host_steps, op_classes,
                          pipeline_cycles, query_cycles, segments)
from sim.simulator import simulate
from sim.trace import DenseOp, TernaryLinearOp, Trace, VectorOp, synthetic_vit_trace, ternary_linear_op

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- hand-worked pipelines

def test_row_pipeline_shared_array_by_hand():
    # proj (array, 400) -> add (vector, 200) -> fc1 (array, 800), 4 token tiles:
    # t = 100, 50, 200 per tile; the array is busy 100 + 200 = 300 per tile, the vector unit 50.
    # First tile through all stages 100 + 50 + 200 = 350, then 3 more tiles at the array's 300:
    # 350 + 3 * 300 = 1250 (in sequence: 1400). A model taking the largest *stage* (200) instead
    # of the busiest *unit* would say 350 + 600 = 950.
    assert pipeline_cycles([("ternary_array", 400), ("vector_unit", 200), ("ternary_array", 800)], 4) == 1250


def test_attention_per_head_by_hand():
    # 12 heads: QK^T (int8, 1200) -> softmax (vector, 1800) -> P.V (int8, 1200):
    # t = 100, 150, 100; int8 busy 200 per head, vector 150: 350 + 11 * 200 = 2550 (in sequence 4200)
    assert pipeline_cycles([("int8_unit", 1200), ("vector_unit", 1800), ("int8_unit", 1200)], 12) == 2550


def test_three_units_and_rounding_by_hand():
    # ternary 1000, vector 600, int8 200 over 10 tiles: 100 + 60 + 20 + 9 * 100 = 1080
    assert pipeline_cycles([("ternary_array", 1000), ("vector_unit", 600), ("int8_unit", 200)], 10) == 1080
    # 10 and 5 cycles over 3 tiles: 10/3 + 5/3 + 2 * 10/3 = 35/3 = 11.67 -> 12 whole cycles
    assert pipeline_cycles([("ternary_array", 10), ("vector_unit", 5)], 3) == 12


@pytest.mark.parametrize("seed", range(60))
def test_bounds_hold_for_any_chain(seed):
    # never faster than the busiest unit, never slower than the ops in sequence
    rng = random.Random(1000 + seed)
    stages = [(rng.choice(["ternary_array", "int8_unit", "vector_unit"]), rng.randint(1, 10_000))
              for _ in range(rng.randint(1, 6))]
    tiles = rng.randint(1, 40)
    busy: dict[str, int] = {}
    for u, c in stages:
        busy[u] = busy.get(u, 0) + c
    got = pipeline_cycles(stages, tiles)
    assert max(busy.values()) <= got <= sum(c for _, c in stages)
    if tiles == 1 or len(busy) == 1:
        assert got == sum(c for _, c in stages)


# ------------------------------------------------------------------------ the shared DRAM port

def test_shared_dram_port_by_hand():
    # two units, 4 tiles, each stage 800 cycles of which 600 move DRAM bytes (its own transfers,
    # hidden behind its compute when it has the port alone). Per tile: t = 200 and 200, the units
    # are busy 200 each, but the one port must move 150 + 150 = 300 cycles of bytes per tile:
    # 400 + 3 * 300 = 1300. Each unit as if it had the port alone: 400 + 3 * 200 = 1000.
    stages = [("ternary_array", 800, 600), ("int8_unit", 800, 600)]
    assert pipeline_cycles(stages, 4) == 1300
    assert pipeline_cycles([(u, c) for u, c, _ in stages], 4) == 1000  # contention-free: what the port rule adds
    assert critical_resource(stages, 4) == "dram"
    # below the units' period the port changes nothing: 100 + 100 DRAM cycles of 800 each
    assert pipeline_cycles([("ternary_array", 800, 100), ("int8_unit", 800, 100)], 4) == 1000
    assert critical_resource([("ternary_array", 800, 100), ("int8_unit", 800, 100)], 4) == "ternary_array"


def test_first_tile_waits_for_its_own_transfer_by_hand():
    # a stage whose cycles do not cover its bytes (a host-mode op: ns per element): 100 cycles but
    # 600 on the port, after an array stage of 300 (no DRAM), 3 tiles. The first tile through the
    # chain: 300 / 3 + 600 / 3 (its transfer) = 300, then 2 periods of the port's 600 / 3 = 200: 700.
    # Charging the first tile only 100 / 3 would give 100 + 33.3 + 400 = 533.3 -> 534 cycles, fewer
    # than the 600 the port needs for the segment's bytes.
    assert pipeline_cycles([("ternary_array", 300, 0), ("vector_unit", 100, 600)], 3) == 700


@pytest.mark.parametrize("seed", range(60))
def test_bounds_with_the_dram_port(seed):
    # never faster than the busiest unit or the port's total, never slower than every stage's
    # max(cycles, transfer) in sequence; a stage whose cycles cover its transfers (every fabric
    # op) keeps 'never slower than in sequence'
    rng = random.Random(2000 + seed)
    stages = []
    for _ in range(rng.randint(1, 6)):
        c = rng.randint(1, 10_000)
        stages.append((rng.choice(["ternary_array", "int8_unit", "vector_unit"]), c, rng.randint(0, 2 * c)))
    tiles = rng.randint(1, 40)
    busy: dict[str, int] = {}
    for u, c, _ in stages:
        busy[u] = busy.get(u, 0) + c
    got = pipeline_cycles(stages, tiles)
    assert max(max(busy.values()), sum(d for *_, d in stages)) <= got <= sum(max(c, d) for _, c, d in stages)
    covered = [(u, c, min(c, d)) for u, c, d in stages]
    assert pipeline_cycles(covered, tiles) <= sum(c for _, c, _ in covered)


def test_query_cycles_charge_the_port_from_dram_counts():
    # records as the simulator writes them: the port's cycles come from every DRAM bit the counts hold
    ops = _block()
    recs = [{"name": o.name, "unit": u, "cycles": c, "counts": {}} for o, u, c in
            zip(ops, ["vector_unit", "ternary_array", "int8_unit", "vector_unit", "int8_unit", "ternary_array",
                      "vector_unit", "int8_unit"], [40, 300, 100, 60, 100, 200, 40, 7])]
    # proj moves 640 bytes, add1 (a host op) 320: at 4 bytes per cycle 160 + 80 = 240 port cycles
    recs[5]["counts"] = {"dram_weight_bits": 640 * 8}
    recs[6]["counts"] = {"dram_act_bits": 320 * 8}
    free, _ = query_cycles(ops, recs, tokens=8, tile_tokens=4)
    total, segs = query_cycles(ops, recs, tokens=8, tile_tokens=4, bytes_per_cycle=4.0)
    row = segs[2]
    assert (row["first"], row["last"], row["dram_cycles"], row["critical"]) == (5, 6, 240, "dram")
    # proj+add1, 2 tiles: first tile max(200, 160) / 2 + max(40, 80) / 2 = 140, then one period of
    # the port's 240 / 2 = 120: 260 (without the port: 100 + 20 + 100 = 220, as in the test above)
    assert row["cycles"] == 260 and total - free == 260 - 220


# ------------------------------------------------------------------------- segments of a query

def _block(t=8, d=16, heads=2):
    rng = np.random.default_rng(0)
    lin = lambda name, k, n: ternary_linear_op(name, t, k, n, sparsity=0.5, rng=rng)  # noqa: E731
    return [VectorOp("norm1", "layernorm", t * d, d), lin("qkv", d, 3 * d),
            DenseOp("qk", t, d // heads, t, batch=heads), VectorOp("softmax", "softmax", heads * t * t, t),
            DenseOp("av", t, t, d // heads, batch=heads), lin("proj", d, d), VectorOp("add1", "add", t * d),
            DenseOp("head", 1, d, 4, weights=True)]


def test_block_cut_and_cycles_by_hand():
    ops = _block()
    units = ["vector_unit", "ternary_array", "int8_unit", "vector_unit", "int8_unit", "ternary_array",
             "vector_unit", "int8_unit"]
    cyc = [40, 300, 100, 60, 100, 200, 40, 7]
    recs = [{"name": o.name, "unit": u, "cycles": c} for o, u, c in zip(ops, units, cyc)]
    segs = segments(ops, recs, tokens=8, tile_tokens=4)
    # norm1 alone (the qkv after it starts the attention), qkv..av by head, proj+add1 by token tile,
    # the head's linear (1 row, not the 8 tokens) alone
    assert [(s["kind"], s["first"], s["last"], s["tiles"]) for s in segs] == [
        ("row", 0, 0, 2), ("attention", 1, 4, 2), ("row", 5, 6, 2), ("single", 7, 7, 1)]
    total, _ = query_cycles(ops, recs, tokens=8, tile_tokens=4)
    # norm1: 40 (one stage). attention, 2 heads: qkv 150, qk 50, softmax 30, av 50 per head; array 150,
    # int8 100, vector 30 -> 280 + 1 * 150 = 430. proj+add1, 2 tiles: 100 + 20 + 1 * 100 = 220. head 7.
    assert total == 40 + 430 + 220 + 7


def test_a_spilling_op_is_its_own_segment():
    ops = _block()
    recs = [{"name": o.name, "unit": "vector_unit" if isinstance(o, VectorOp) else "int8_unit", "cycles": 10}
            for o in ops]
    recs[6]["readback_cycles"] = 5  # add1 reads proj's spilled output back from DRAM
    segs = segments(ops, recs, tokens=8, tile_tokens=4)
    assert [(s["kind"], s["first"], s["last"]) for s in segs][2:4] == [("row", 5, 5), ("single", 6, 6)]


# -------------------------------------------------------------------------------- the simulator

@pytest.fixture(scope="module")
def small():
    tr = synthetic_vit_trace(depth=2, dim=64, tokens=17, heads=4, sparsity=0.4, patch_size=4)
    base = load_arch(ROOT / "sim" / "arch" / "kv260.yaml")
    return tr, base


def test_none_is_the_sum_and_pipelined_is_bounded(small):
    tr, base = small
    none = simulate(base, tr)
    assert none["overlap"] == "none" and none["schedule"]["topk"] == "fabric"  # the default: top-k on the vector unit

    def serial(r):  # every op's cycles + each ternary linear's top-k on the vector unit
        return sum(x["cycles"] + x.get("topk_cycles", 0) for x in r.layers)

    assert none["cycles"] == serial(none) == none["serial_cycles"] > sum(r["cycles"] for r in none.layers)
    pip = simulate(with_overrides(base, {"schedule.overlap": "pipelined", "schedule.tile_tokens": 4}), tr)
    busy = pip["cycles_by_unit"]
    assert max(busy.values()) <= pip["cycles"] < pip["serial_cycles"] == serial(pip)
    assert pip["queries_per_s"] > none["queries_per_s"]


def test_pipelined_array_reloads_weights_per_tile(small):
    # row-segment ternary layers run token_outer over tiles: every fold's weights once per tile
    tr, base = small
    pip = simulate(with_overrides(base, {"schedule.overlap": "pipelined", "schedule.tile_tokens": 4}), tr)
    fc1 = next(r for r in pip.layers if r["name"] == "blocks.0.mlp.fc1")
    qkv = next(r for r in pip.layers if r["name"] == "blocks.0.attn.qkv")
    assert fc1["token_blocks"] == 5 and fc1["loop_order"] == "token_outer"  # ceil(17 / 4)
    # fc1: N = 256 -> 8 folds of PE 32 x K 64 x 2 bits = 512 B each, 5 passes: 20,480 B
    assert fc1["counts"]["dram_weight_bits"] == 5 * 8 * 512 * 8
    assert qkv["token_blocks"] == 1  # qkv feeds the attention by head, not by token tile


def test_trace_longer_than_max_tokens_is_refused(small):
    tr, base = small
    arch = with_overrides(base, {"schedule.overlap": "pipelined", "schedule.max_tokens": 16})
    with pytest.raises(SimInputError, match=r"schedule.max_tokens = 16 .*17 tokens"):
        simulate(arch, tr)
    wide = with_overrides(base, {"schedule.overlap": "pipelined", "schedule.max_dim": 32})
    with pytest.raises(SimInputError, match=r"schedule.max_dim = 32 is below the trace's width 64"):
        simulate(wide, tr)
    simulate(with_overrides(base, {"schedule.max_dim": 32}), tr)  # in sequence no tile is built


# ----------------------------------------------------------------------------- buffers and keys

PIPE = ("pipe_a2v", "pipe_a2v_hidden", "pipe_v2a", "pipe_v2a_hidden", "pipe_v2v", "pipe_scores", "pipe_heads")


def test_pipeline_buffers_charged_only_when_pipelined():
    base = load_arch(ROOT / "sim" / "arch" / "kv260.yaml")  # PE 32, SIMD 32, act, K_max 3072, int8 16 x 16
    names = lambda a: {b["name"]: b for b in estimate_resources(a)["buffers"]}  # noqa: E731
    assert not set(PIPE) & set(names(base))
    arch = with_overrides(base, {"schedule.overlap": "pipelined", "schedule.tile_tokens": 16})
    b = names(arch)
    got = {n: (b[n]["memories"], b[n]["width_bits"], b[n]["depth"]) for n in PIPE}
    assert got == {
        # array -> vector unit, 2 halves per hand-off, 16 tokens per tile: the vector unit reads 16 lanes
        # a cycle; the array's 32 outputs per token come every ceil(768 / 32) = 24 cycles (2 int8 a cycle),
        # so 16 int8 a word: proj -> add1 and fc2 -> add2 of 768 channels (16 x 768 / 16 = 768 words),
        # fc1 -> GELU of K_max = 3072 (3072 words)
        "pipe_a2v": (2 * 2, 128, 768), "pipe_a2v_hidden": (2, 128, 3072),
        # vector unit -> array: SIMD = 32 channels a word of 8 + ceil(log2 3072) = 20 bits (act: as the
        # activation buffer): norm2 -> fc1 (16 x 768 / 32 = 384 words), GELU -> fc2 (1536)
        "pipe_v2a": (2, 640, 384), "pipe_v2a_hidden": (2, 640, 1536),
        # inside the vector unit: add1 -> norm2, add2 -> norm1, int16 residual, 16 lanes a word: 768 words
        "pipe_v2v": (2 * 2, 256, 768),
        # 3 copies of 257 x 257 int32 scores, max(rows 16, lanes 16) a word: ceil(66049 / 16) = 4129
        "pipe_scores": (3, 512, 4129),
        # 3 copies of 257 x 3 x 64 Q, K, V int8, max(rows, cols) = 16 a word: ceil(49344 / 16) = 3084
        "pipe_heads": (3, 128, 3084)}
    assert b["pipe_heads"]["ports"] == 2
    # URAM (>= 2048 words deep, 4096 x 72 each): hidden a2v 128 bits = 2 wide x 1 deep x 2 = 4,
    # scores 512 bits = 8 wide x 2 deep x 3 = 48, heads 2 x 1 x 3 = 6; the shallower ones map to BRAM / LUTRAM
    used = estimate_resources(arch)["used"]["uram"] - estimate_resources(base)["used"]["uram"]
    assert used == 58 and sum(b[n]["uram"] for n in PIPE) == 58
    # hand-offs through DRAM: no pipeline buffers at all
    dram = with_overrides(arch, {"schedule.handoffs": "dram"})
    assert not set(PIPE) & set(names(dram))


def test_row_segment_with_more_edges_than_built_is_refused():
    # array -> vector unit tiles are built for 3 edges (2 of max_dim channels, 1 of K_max)
    rng = np.random.default_rng(0)
    lin = lambda name, n: ternary_linear_op(name, 8, 32, n, sparsity=0.5, rng=rng)  # noqa: E731
    v = lambda name, w: VectorOp(name, "add", 8 * w)  # noqa: E731

    def run(ops, max_dim=32):
        recs = [{"name": o.name, "unit": "ternary_array" if isinstance(o, type(ops[0])) else "vector_unit",
                 "cycles": 10} for o in ops]
        return query_cycles(ops, recs, tokens=8, tile_tokens=4, max_dim=max_dim)

    three = [lin("a", 32), v("x", 32), lin("b", 32), v("y", 32), lin("c", 32), v("z", 32)]
    run(three)  # 3 narrow edges: two narrow tiles and the hidden one
    with pytest.raises(SimInputError, match=r"a \.\. w has 4 array -> vector unit tile edges \(0 wider than "
                                             r"schedule.max_dim = 32 channels\); the pipeline is built for 3"):
        run(three + [lin("d", 32), v("w", 32)])
    two_wide = [lin("a", 64), v("x", 64), lin("b", 64), v("y", 64)]
    with pytest.raises(SimInputError, match=r"has 2 array -> vector unit tile edges \(2 wider than"):
        run(two_wide)
    run(two_wide, max_dim=64)


def test_bad_overlap_value_is_named():
    base = load_arch(ROOT / "sim" / "arch" / "kv260.yaml")
    with pytest.raises(SimInputError, match=r"schedule.overlap.*'none'.*'pipelined'"):
        with_overrides(base, {"schedule.overlap": "fast"})


def test_query_sweep_parses_new_keys():
    spec = parse_sweep({"arch": "kv260", "axes": {"int8_rows": [16, 32], "int8_cols": [16], "overlap": ["none", "pipelined"],
                                                  "tile_tokens": [8, 16]}}, base_dir=ROOT / "sim" / "sweeps")
    assert spec.paths == {"int8_rows": "int8_unit.rows", "int8_cols": "int8_unit.cols",
                          "overlap": "schedule.overlap", "tile_tokens": "schedule.tile_tokens"}
    assert spec.grid_size() == 8
    assert {"int8_unit.rows": 32, "schedule.overlap": "pipelined"}.items() <= {
        spec.paths[k]: v for k, v in spec.points()[-1].items()}.items()
    bad = parse_sweep({"arch": "kv260", "axes": {"overlap": ["none", "eager"]}}, base_dir=ROOT / "sim" / "sweeps")
    with pytest.raises(SimInputError, match=r"axes.overlap value 'eager'"):
        check_axes(bad)


def test_builtin_query_sweeps_load():
    from sim.dse import load_sweep
    for name in ("kv260_query.yaml", "zcu104_query.yaml"):
        spec = load_sweep(ROOT / "sim" / "sweeps" / name)
        # 3 x 2 x 2 x 2 x 3 x 2 x 3 x 2 x 2 x 2 = 3,456 over the axes below (a sweep's run time: at most 6,144)
        mine = {"pe": 3, "simd": 2, "skip_mode": 2, "clock_mhz": 1, "int8_rows": 2, "int8_cols": 1,
                "vector_unit.lanes": 3, "overlap": 2, "tile_tokens": 3, "schedule.buffer_memory": 1,
                "schedule.handoffs": 2, "schedule.topk": 1, "schedule.attention": 2, "schedule.attention_rows": 1,
                "schedule.attention_lanes": 1, "schedule.vector_chain": 2, "buffers.weights_kb": 1,
                "buffers.outputs_kb": 1, "buffers.int8_weights_memory": 1}
        assert {k: len(spec.axes[k]) for k in spec.axes} == mine
        assert spec.grid_size() == 3456 <= 6144
        assert spec.paths["overlap"] == "schedule.overlap" and spec.paths["int8_rows"] == "int8_unit.rows"
        # the host's top-k needs hand-offs through DRAM: crossed with onchip it is only invalid rows
        assert spec.axes["schedule.topk"] == ["fabric"] and spec.axes["schedule.handoffs"] == ["onchip", "dram"]


def test_piped_outputs_do_not_spill(small):
    # 1 KiB of output buffer: every op output of the 17 x 64 trace (>= 1,088 B) spills in sequence;
    # pipelined, only the outputs that leave a segment (norm1 -> qkv, av -> proj, the last add ->
    # the next norm1... ) still use the buffer
    tr, base = small
    tiny = {"buffers.outputs_kb": 1}
    none = simulate(with_overrides(base, tiny), tr)
    pip = simulate(with_overrides(base, {**tiny, "schedule.overlap": "pipelined", "schedule.tile_tokens": 4}), tr)
    spilled = lambda r: {x["name"] for x in r.layers if x["spill_cycles"]}  # noqa: E731
    assert {"blocks.0.attn.qk", "blocks.0.mlp.fc1", "blocks.0.attn.qkv"} <= spilled(none)
    assert not {"blocks.0.attn.qk", "blocks.0.attn.softmax", "blocks.0.mlp.fc1", "blocks.0.attn.qkv"} & spilled(pip)
    assert {"blocks.0.norm1", "blocks.0.attn.av"} <= spilled(pip)


# ------------------------------------------------------- the shared port in the simulator, by hand

def _port_case(overlap: str):
    # 8 tokens: a ternary linear (K = N = 64) then a residual add on the host, one row segment
    rng = np.random.default_rng(1)
    tr = Trace(1, {"tokens": 8}, [ternary_linear_op("lin", 8, 64, 64, sparsity=0.5, rng=rng),
                                  VectorOp("add", "add", 8 * 64)])
    base = load_arch(ROOT / "sim" / "arch" / "kv260.yaml")
    arch = with_overrides(base, {
        "compute.pe": 16, "compute.simd": 16, "compute.skip_mode": "none", "compute.weight_format": "ternary2",
        "clock_mhz": 250, "dram.bandwidth_gb_per_s": 1.0, "dram.efficiency": 1.0, "dram.latency_ns": 0,
        "vector_unit.mode": "host", "vector_unit.host_call_overhead_us": 0,
        "vector_unit.host_ns_per_element": {k: 2.0 for k in ("softmax", "layernorm", "gelu", "add", "other", "topk")},
        "schedule.overlap": overlap, "schedule.tile_tokens": 4})
    return simulate(arch, tr)


def test_shared_port_in_the_simulator_by_hand():
    # D = 1 GB/s x 1.0 / 250 MHz = 4 bytes per cycle. Pipelined, 2 tiles of 4 tokens:
    # lin: 4 folds of PE 16; token_outer over the tiles reloads every fold's weights per tile:
    #   8 steps, each X = 16 x 64 x 2 bit / 8 = 256 B / 4 = 64 cycles, C = 4 tokens x ceil(64/16) = 16:
    #   64 + 7 x max(16, 64) + 16 + fill (log2 16 + 2 = 6) = 534 cycles; port 8 x 256 B = 512 cycles.
    # add (host): 512 elements x 2 ns = 1024 ns = 256 cycles; it reads and writes 2 x 512 B = 256 port cycles.
    # lin's top-k (schedule.topk fabric, the default) on this host-mode vector unit: 8 x 64 = 512 elements
    #   x 2 ns = 256 cycles, no port bytes on chip: a vector-unit stage before lin, tile by tile.
    # segment: first tile (256 + 534 + 256) / 2 = 523, then one period max(array 267, vector (256 + 256) / 2
    #   = 256, port 384) = 384: 907 cycles. These ops in sequence: 256 + 534 + 256 = 1046.
    pip = _port_case("pipelined")
    lin, add = pip.layers
    assert (lin["cycles"], lin["counts"]["dram_weight_bits"], lin["topk_cycles"]) == (534, 2048 * 8, 256)
    assert (add["cycles"], add["counts"]["dram_act_bits"]) == (256, 1024 * 8)
    assert pip["cycles"] == 907
    s = pip["schedule"]
    assert (s["dram_cycles"], s["critical"], s["serial_cycles"], s["saved_cycles"]) == (768, "dram", 1046, 139)
    assert s["cycles_by_critical"]["dram"] == 907 and s["segments_by_critical"]["dram"] == 1
    # in sequence the array is not tiled: one block of 8 tokens, each fold's weights once,
    # 64 + 3 x max(8 x 4, 64) + 32 + 6 = 294, + the top-k 256 + the add 256: 806. Faster without overlap.
    assert _port_case("none")["cycles"] == 256 + 294 + 256


def test_int8_linear_with_weights_runs_alone():
    # its weights stream through two column slices: tiling its rows would stream them once per tile
    ops = [VectorOp("ln", "layernorm", 8 * 16, 16), DenseOp("lin", 8, 16, 16, weights=True),
           VectorOp("gelu", "gelu", 8 * 16)]
    assert op_classes(ops, 8) == ["row", "single", "row"]


def test_schedule_summary_explains_the_rate(small):
    tr, base = small
    pip = simulate(with_overrides(base, {"schedule.overlap": "pipelined", "schedule.tile_tokens": 4}), tr)
    none = simulate(base, tr)
    s, n = pip["schedule"], none["schedule"]
    assert (s["overlap"], s["tile_tokens"], n["overlap"], n["tile_tokens"]) == ("pipelined", 4, "none", None)
    # busy cycles are the records' sums; saved = in sequence - pipelined
    # (the vector unit's: its ops and every ternary linear's top-k, schedule.topk fabric)
    for u in ("ternary_array", "int8_unit", "vector_unit"):
        topk = sum(r.get("topk_cycles", 0) for r in pip.layers) if u == "vector_unit" else 0
        assert s["busy_cycles_by_unit"][u] == sum(r["cycles"] for r in pip.layers if r["unit"] == u) + topk
    assert s["saved_cycles"] == s["serial_cycles"] - pip["cycles"] > 0 and n["saved_cycles"] == 0
    # every segment's cycles go to what bound it; together they are the query
    assert sum(s["cycles_by_critical"].values()) == pip["cycles"]
    assert sum(n["cycles_by_critical"].values()) == none["cycles"]
    assert s["critical"] in ("ternary_array", "int8_unit", "vector_unit", "dram")
    # the ViT body: inside every multi-unit segment only the array moves DRAM bytes, so the port never binds
    assert s["segments_by_critical"]["dram"] == 0 and s["cycles_by_critical"]["dram"] == 0
    assert s["dram_cycles"] <= pip["cycles"] and s["bound_cycles"] <= pip["cycles"]


# ------------------------------------------------------------------------------ the CLI

def test_cli_prints_and_refuses_schedule(tmp_path, capsys):
    from sim.trace import write_trace
    from tatvpr_hw.cli import main

    tp = tmp_path / "t.npz"
    write_trace(tp, synthetic_vit_trace(depth=1, dim=32, tokens=5, heads=2, sparsity=0.4, seed=0))
    assert main(["sim", "--trace", str(tp), "--set", "schedule.overlap=pipelined", "--set", "schedule.tile_tokens=2"]) == 0
    text = capsys.readouterr().out
    assert "schedule: pipelined" in text and "tiles of 2 tokens" in text and "bound by" in text
    assert main(["sim", "--trace", str(tp), "--json", "--set", "schedule.overlap=pipelined"]) == 0
    d = json.loads(capsys.readouterr().out)["schedule"]
    assert d["overlap"] == "pipelined" and d["tile_tokens"] == 16 and d["segments"]
    for bad, named in ((["schedule.overlap=eager"], "schedule.overlap = 'eager'"),
                       (["schedule.tile_tokens=0"], "schedule.tile_tokens = 0"),
                       (["schedule.buffer_memory=lutram"], "schedule.buffer_memory = 'lutram'"),
                       (["schedule.overlap=pipelined", "schedule.max_tokens=4"], "schedule.max_tokens = 4"),
                       (["schedule.max_dim=0"], "schedule.max_dim = 0"),
                       (["schedule.overlapp=pipelined"], "schedule.overlapp")):
        sets = [x for s in bad for x in ("--set", s)]
        assert main(["sim", "--trace", str(tp), *sets]) == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_handoffs_through_dram_by_hand():
    # the port case with a fabric vector unit: lin (534 cycles, 512 port cycles of weights, as above)
    # hands its 8 x 64 int8 output to the add (16 lanes: 512 / 16 = 32 groups + 8 pipeline = 40 cycles)
    rng = np.random.default_rng(1)
    tr = Trace(1, {"tokens": 8}, [ternary_linear_op("lin", 8, 64, 64, sparsity=0.5, rng=rng),
                                  VectorOp("add", "add", 8 * 64)])
    base = with_overrides(load_arch(ROOT / "sim" / "arch" / "kv260.yaml"), {
        "compute.pe": 16, "compute.simd": 16, "compute.skip_mode": "none", "compute.weight_format": "ternary2",
        "clock_mhz": 250, "dram.bandwidth_gb_per_s": 1.0, "dram.efficiency": 1.0, "dram.latency_ns": 0,
        "vector_unit.lanes": 16, "vector_unit.pipeline_cycles": 8,
        "vector_unit.cycles_per_element": {k: 1.0 for k in ("softmax", "layernorm", "gelu", "add", "other")},
        "schedule.overlap": "pipelined", "schedule.tile_tokens": 4, "vector_unit.host_call_overhead_us": 0.0})
    # lin's input is top-k'd on the vector unit (schedule.topk fabric, the default; skip mode none: the
    # dense variant, no emit pass): 8 rows x ceil(64 / 16) = 32 lane groups x 2 cycles (topk's default
    # cycles_per_element, untouched above) + 8 x 128 scan steps + 8 pipeline = 1096 cycles, a vector-unit
    # stage before lin, tile by tile
    on = simulate(base, tr)
    assert [r["cycles"] for r in on.layers] == [534, 40] and on.layers[0]["topk_cycles"] == 1096
    # on chip: first tile (1096 + 534 + 40) / 2 = 835, one period of the vector unit's (1096 + 40) / 2 = 568
    # (array 267, port 256): 1403
    assert on["cycles"] == 1403 and on["schedule"]["critical"] == "vector_unit"
    off = simulate(with_overrides(base, {"schedule.handoffs": "dram"}), tr)
    # through DRAM: the top-k reads lin's 512 B input and writes 512 B (256 port cycles); lin writes its
    # 512 B (128 port cycles), the add reads them and the int16 residual stream (2 x 512 B): 1536 B, 384
    # cycles. Per stage max(cycles, port): top-k 1096, lin 512 + 128 = 640 > 534, add 384 > 40: first tile
    # (1096 + 640 + 384) / 2 = 1060, then one period of the port's (256 + 640 + 384) / 2 = 640 (vector
    # unit 568): 1700 cycles
    assert off["cycles"] == 1700
    s = off["schedule"]
    assert (s["handoffs"], s["handoff_dram_bytes"], s["dram_cycles"], s["critical"]) == ("dram", 2048 + 1024, 1280, "dram")
    assert on["schedule"]["handoff_dram_bytes"] == 0 and on["schedule"]["handoffs"] == "onchip"


def test_handoff_bytes_of_the_paper_query_by_hand():
    # ViT-B/14, 257 tokens, 12 blocks, D = 768, 12 heads, 64 x 64 `none` on the KV260 (no output spills at
    # 256 KiB). Per block: the row segment's 7 hand-offs (the host's, tests/hls/test_pipeline.py):
    # 257 x (768 + 1536 + 768 + 3072 + 3072 + 768 + 1536) = 2,960,640 B; the attention's: qkv 257 x 2304,
    # int32 scores 4 x 12 x 257^2, probabilities 12 x 257^2 = 4,555,068 B; the two segment boundaries
    # (norm1 -> qkv, P.V -> proj) 2 x 197,376 B; each written once and read once. Plus the residual
    # adds' int16 reads 2 x 394,752 B and qkv's input read again for 11 more heads 11 x 197,376 B.
    # Before block 0: the patch embedding's 256 x 768 B to norm1, written and read.
    per_block = 2 * (2_960_640 + 4_555_068 + 2 * 197_376) + 2 * 394_752 + 11 * 197_376
    want = 12 * per_block + 2 * 256 * 768
    tr = synthetic_vit_trace(sparsity=0.4)
    arch = with_overrides(load_arch(ROOT / "sim" / "arch" / "kv260.yaml"), {
        "compute.pe": 64, "compute.simd": 64, "compute.skip_mode": "none", "clock_mhz": 400,
        "int8_unit.rows": 32, "int8_unit.cols": 32, "buffers.weights_kb": 192, "buffers.outputs_kb": 256,
        "schedule.overlap": "pipelined", "schedule.tile_tokens": 32, "schedule.handoffs": "dram",
        "schedule.topk": "host"})  # the hand-offs between the ops alone: the top-k on the ARM moves no bytes
    r = simulate(arch, tr)
    assert not any(x["spill_cycles"] for x in r.layers)
    assert r["schedule"]["handoff_dram_bytes"] == want == 225_771_936
    # schedule.topk fabric: the vector unit reads each ternary linear's M x K int8 input and writes it back
    # top-k'd (`none`: dense int8, M x K), 2 x 257 x (3 x 768 + 3072) = 2,763,264 B a block (qkv, proj, fc1,
    # fc2; the patch embedding is not a ternary linear of this trace)
    fab = simulate(with_overrides(arch, {"schedule.topk": "fabric"}), tr)
    assert fab["schedule"]["handoff_dram_bytes"] == want + 12 * 2 * 257 * (3 * 768 + 3072) == 258_931_104


# ------------------------------------- handoffs: dram, the machine the IPs build (issue 15 item 2)

def _act_case(overlap: str = "pipelined", **extra):
    # 4 tokens: a LayerNorm (rows of 32) then a ternary linear K = 32, N = 16 in `act`, SIMD 16 with 16
    # banks (one lane a bank, q = 1: a token's chunks = its fullest bank). Channel c is in bank c mod 16:
    # token 0 holds channels 0..15 (one a bank): 1 chunk; token 1 channels 0 and 16 (bank 0 twice): 2;
    # token 2 all 32: 2; token 3 none: 1 (the accumulator write). 6 chunks.
    m, k, n = 4, 32, 16
    mask = np.zeros((m, k), bool)
    mask[0, :16] = True
    mask[1, [0, 16]] = True
    mask[2, :] = True
    lin = TernaryLinearOp("lin", m, k, n, pack_ternary2(np.ones((n, k), np.int8)), mask)
    tr = Trace(1, {"tokens": m}, [VectorOp("ln", "layernorm", m * k, k), lin])
    arch = with_overrides(load_arch(ROOT / "sim" / "arch" / "kv260.yaml"), {
        "compute.pe": 16, "compute.simd": 16, "compute.skip_mode": "act", "compute.weight_format": "ternary2",
        "clock_mhz": 250, "dram.bandwidth_gb_per_s": 1.0, "dram.efficiency": 1.0, "dram.latency_ns": 0,
        "vector_unit.host_call_overhead_us": 0, "schedule.host_ns_per_element": {"topk": 10.0},
        "schedule.overlap": overlap, "schedule.tile_tokens": 2, "schedule.handoffs": "dram", "schedule.max_dim": 32,
        "schedule.topk": "host", **extra})  # the driver's top-k on the ARM unless extra says fabric
    return simulate(arch, tr)


def test_act_stream_handoff_host_step_and_energy_by_hand():
    r = _act_case()
    ln, lin = r.layers
    # ln: 4 rows x ceil(32 / 16) lane groups x 2 cycles + 4 x 144 row steps + 12 = 604; lin 45 cycles
    assert (ln["cycles"], lin["cycles"]) == (604, 45)
    # hand-offs: ln writes 4 x 32 int8 = 128 B; lin reads the act stream its IP is built for:
    # 6 chunks x 16 uint32 slots + 4 uint16 counts = 384 + 8 = 392 B (not 128): 520 B in all
    assert lin["counts"]["dram_handoff_bits"] == 392 * 8 and ln["counts"]["dram_handoff_bits"] == 128 * 8
    assert r["schedule"]["handoff_dram_bytes"] == r["dram_handoff_bytes"] == 520
    # dram_bytes: lin's own weights (one fold of 16 x 32 x 2 bit = 128 B) + the hand-offs: 648 B
    assert r["dram_bytes"] == 128 + 520
    # their energy: (128 + 520) x 8 bits x 20.3 pJ (ultrascale_plus dram_pj_per_bit) = 105,235.2 pJ
    assert r["energy_by_component_mj"]["dram"] == pytest.approx(648 * 8 * 20.3e-9, rel=1e-12)
    # per op: lin's weights and its stream read (128 + 392 B), ln's write (128 B)
    assert lin["energy_pj"]["dram"] == pytest.approx(520 * 8 * 20.3, rel=1e-12)
    assert ln["energy_pj"]["dram"] == pytest.approx(128 * 8 * 20.3, rel=1e-12)
    assert r["energy_by_layer_mj"]["lin"] == pytest.approx(sum(lin["energy_pj"].values()) * 1e-9, rel=1e-12)
    # host step before lin's IP call: top-k + scheduling of 4 x 32 = 128 elements x 10 ns = 1,280 ns
    # = 320 cycles at 250 MHz (no call overhead here), in the array's thread
    assert lin["host_cycles"] == 320 and "host_cycles" not in ln
    # the port at 4 B / cycle: ln 128 / 4 = 32, lin 128 / 4 + 392 / 4 = 130. Row segment of 2 tiles:
    # first tile (max(604, 32) + max(45 + 320, 130)) / 2 = 484.5, then one period of the busiest:
    # vector 604 / 2 = 302 (array 182.5, host 160, port 81): 786.5, rounded up to 787 cycles
    s = r["schedule"]
    assert r["cycles"] == 787 and s["critical"] == "vector_unit" and s["dram_cycles"] == 162
    assert s["busy_cycles_by_unit"] == {"ternary_array": 365, "int8_unit": 0, "vector_unit": 604, "host": 320}
    assert s["host_cycles"] == 320 and s["serial_cycles"] == 604 + 365
    # overlap none with hand-offs through DRAM (the host issuing op by op): each op alone, its cycles
    # (host step included) or its transfers, whichever is longer: 604 + max(365, 130) = 969
    none = _act_case("none")
    assert none["cycles"] == 969 and none["dram_bytes"] == 648 and none["schedule"]["handoffs"] == "dram"


def test_the_host_can_set_the_period_by_hand():
    # the host steps run in their unit's thread (inside its cycles) and share the host: array 200 + 200
    # host, int8 100 + 300 host, 4 tiles. Per tile: array 100, int8 100, host (200 + 300) / 4 = 125.
    # First tile (400 + 400) / 4 = 200, then 3 periods of the host's 125: 575 (without the host as a
    # unit 200 + 3 x 100 = 500)
    stages = [("ternary_array", 400, 0, 200), ("int8_unit", 400, 0, 300)]
    assert pipeline_cycles(stages, 4) == 575 and critical_resource(stages, 4) == "host"
    assert pipeline_cycles([s[:3] for s in stages], 4) == 500


def _chunks_by_hand(mask: np.ndarray, simd: int) -> int:
    """Chunks of an `act` input with one lane a bank (banks = SIMD): per token its fullest bank, at least 1."""
    m, k = mask.shape
    pad = np.zeros((m, -k % simd), bool)
    per_bank = np.concatenate([mask, pad], axis=1).reshape(m, -1, simd).sum(axis=1)
    return int(np.maximum(per_bank.max(axis=1), 1).sum())


def test_act_handoffs_of_a_small_vit_are_the_streams(small):
    # against int8 hand-offs, each ternary linear's input read is its act stream instead of M x K int8
    # (qkv: once per head), chunks counted from the masks here: 32 lanes, 32 banks (the KV260 point)
    tr, base = small
    arch = with_overrides(base, {"schedule.overlap": "pipelined", "schedule.tile_tokens": 4,
                                 "schedule.handoffs": "dram", "schedule.topk": "host"})
    r = simulate(arch, tr)
    segs = segments(tr.ops, r.layers, 17, 4)
    int8 = sum(handoff_bytes(tr.ops, r.layers, segs, 17))  # the same records, inputs read as int8
    want = int8
    for i, op in enumerate(tr.ops):
        if isinstance(op, TernaryLinearOp) and i > 0:
            reads = 4 if op.name.endswith("qkv") else 1  # 4 heads
            stream = _chunks_by_hand(op.act_mask, 32) * 32 * 4 + op.m * 2
            want += reads * (stream - op.m * op.k)
    assert r["schedule"]["handoff_dram_bytes"] == r["dram_handoff_bytes"] == want > int8
    # every DRAM byte is reported once: the ops' own + the hand-offs
    own = sum(r[k] for k in ("dram_weight_bytes", "dram_act_bytes", "dram_int8_weight_bytes", "dram_spill_bytes"))
    assert r["dram_bytes"] == own + want


def test_host_steps_of_a_vit_block_by_hand():
    # handoffs: dram on the _block ops (8 tokens, D 16, 2 heads): qkv's input top-k'd once per head
    # (the driver calls the IP per head with the whole input): 2 x 8 x 16; proj 8 x 16; QK^T widens
    # 2 x (8 x 8 + 8 x 8), P.V 2 x (8 x 8 + 8 x 8); the softmax's row maxima 2 x 8 x 8; the head's
    # int8 linear 1 x 16 + 16 x 4. At 1 ns each, no call overhead, 1000 MHz: cycles = elements
    ops = _block()
    segs = segments(ops, [{"name": o.name, "unit": "x", "cycles": 1} for o in ops], 8, 4)
    assert host_steps(ops, segs, act=True) == [
        [], [("topk", 256)], [("widen", 256)], [("row_max", 128)], [("widen", 256)], [("topk", 128)], [],
        [("widen", 80)]]
    assert host_steps(ops, segs, act=False)[1] == []  # no act IP, no top-k on the host
    # the `none` IP (dense int8 input): the host's top-k alone, qkv's once per head: 2 x 8 x 16; proj 8 x 16
    dense = host_steps(ops, segs, act=False, dense=True)
    assert (dense[1], dense[5], dense[2]) == ([("topk_dense", 256)], [("topk_dense", 128)], [("widen", 256)])
    assert host_steps(ops, segs, act=False, topk_on_host=False, dense=True)[1] == []
    # an op the trace marks host (SALAD's Sinkhorn part) makes no IP call: no host step of its own
    host_op = [DenseOp("sinkhorn", 8, 8, 8, host=True), VectorOp("sm", "softmax", 64, 8, host=True)]
    assert host_steps(host_op, segments(host_op, [{"name": o.name, "unit": "x", "cycles": 1} for o in host_op],
                                        8, 4), act=True) == [[], []]
    cost = HostCost({"topk": 1.0, "row_max": 1.0, "widen": 1.0}, 0.0, 1000.0)
    assert [cost.cycles(s) for s in host_steps(ops, segs, act=True)] == [0, 256, 256, 128, 256, 128, 0, 80]
    # the call overhead once per op: 2 us = 2,000 cycles at 1000 MHz
    assert HostCost({"topk": 1.0}, 2.0, 1000.0).cycles([("topk", 256)]) == 2256


def test_bad_host_step_key_or_value_is_named():
    base = load_arch(ROOT / "sim" / "arch" / "kv260.yaml")
    assert base.spec.schedule.host_ns_per_element == {"topk": 380.0, "row_max": 0.73, "widen": 0.2, "topk_dense": 153.0}
    # a kind left out keeps its default
    one = with_overrides(base, {"schedule.host_ns_per_element": {"topk": 95.0}})
    assert one.spec.schedule.host_ns_per_element == {"topk": 95.0, "row_max": 0.73, "widen": 0.2, "topk_dense": 153.0}
    with pytest.raises(SimInputError, match=r"unknown host step 'sort'; allowed: topk, row_max, widen, topk_dense"):
        with_overrides(base, {"schedule.host_ns_per_element": {"sort": 1.0}})
    with pytest.raises(SimInputError, match=r"topk = -1.0: must be a finite number of ns"):
        with_overrides(base, {"schedule.host_ns_per_element": {"topk": -1.0}})


# ------------------------------------- schedule.topk: fabric, the top-k and scheduling on the vector unit

def test_fabric_topk_cycles_bytes_and_energy_by_hand():
    """_act_case (4 tokens, K 32, SIMD 16 = banks, 16 lanes, pipeline 12, 6 chunks) with the top-k on the
    vector unit: per row 2 x ceil(32 / 16) = 4 pass cycles + 128 scan steps: 4 x 132 = 528, + 12, + 6
    chunks x ceil(16 / 16) emit cycles = 546. Under dram it reads ln's 4 x 32 = 128 B and writes the
    392 B stream (520 B, 130 port cycles at 4 B / cycle); lin still reads the stream (392 B), no host step."""
    r = _act_case(**{"schedule.topk": "fabric"})
    ln, lin = r.layers
    assert (ln["cycles"], lin["cycles"], lin["topk_cycles"]) == (604, 45, 546)
    assert "host_cycles" not in lin and r["schedule"]["host_cycles"] == 0
    assert lin["counts"]["dram_handoff_bits"] == (392 + 520) * 8
    assert r["dram_handoff_bytes"] == r["schedule"]["handoff_dram_bytes"] == 128 + 520 + 392
    # 2 tiles: stages ln (604, port 32), top-k (546, port 130), lin (45, port 32 weights + 98 stream);
    # fill 604 + 546 + 130 = 1280, period: the vector unit's 604 + 546 = 1150 (port 292, array 45):
    # (1280 + 1150) / 2 = 1215
    s = r["schedule"]
    assert r["cycles"] == 1215 and s["critical"] == "vector_unit" and s["dram_cycles"] == 292
    assert s["busy_cycles_by_unit"]["vector_unit"] == 1150 and s["topk_cycles"] == 546
    assert r["cycles_by_unit"]["vector_unit"] == 604 + 546
    # energy: 128 elements x 2 x add32 (0.896 pJ) + 4 x 128 scan steps x 0.896 pJ (vector_row_step_pj)
    # = 573.44 pJ on the vector unit; static 0.6 W (kv260.yaml) over 546 cycles at 250 MHz = 1,310,400 pJ
    assert lin["energy_pj"]["vector_unit"] == pytest.approx(128 * 0.896 + 512 * 0.896, rel=1e-12)
    assert lin["topk_energy_pj"] == pytest.approx(573.44 + 1_310_400, rel=1e-12)
    host = _act_case()
    assert r["energy_mj"] - host["energy_mj"] == pytest.approx((573.44 + 1_310_400 + 520 * 8 * 20.3) * 1e-9, rel=1e-9)
    # overlap none: ln 604, then the top-k (546 > its 130 port cycles) and lin (its 130 port cycles > 45)
    none = _act_case("none", **{"schedule.topk": "fabric"})
    assert none["cycles"] == 604 + 546 + 130 == none["serial_cycles"] - 45 + 130
    # on chip, one op after another: the top-k's cycles join the sum, no DRAM bytes
    onchip = _act_case("none", **{"schedule.topk": "fabric", "schedule.handoffs": "onchip"})
    assert onchip["cycles"] == 604 + 546 + 45 == onchip["serial_cycles"]
    assert onchip.layers[1]["topk_cycles"] == 546 and onchip["dram_handoff_bytes"] == 0
    # the host's top-k with on-chip hand-offs is no machine (the ARM never sees the activations): refused
    for overlap in ("none", "pipelined"):
        with pytest.raises(SimInputError, match=r"schedule.topk = 'host' needs schedule.handoffs = 'dram'"):
            _act_case(overlap, **{"schedule.handoffs": "onchip"})


def test_fabric_topk_of_qkv_is_made_once_before_its_attention_by_hand():
    """_block with the KV260 vector unit (16 lanes, pipeline 12) serving SIMD 32: qkv's input (8 x 16,
    10 chunks) 8 x (2 x 1 + 128) + 12 + 10 x 2 = 1072 cycles, once before the attention segment (not per
    head); proj's (9 chunks) 1070, a vector-unit stage of its row segment. Onchip, pipelined:
    norm1 40; attention 1072 + 430; proj + add1 in 2 tiles: fill (1070 + 200 + 40) / 2, period the
    vector unit's (1070 + 40) / 2: 1210; head 7."""
    ops = _block()
    units = ["vector_unit", "ternary_array", "int8_unit", "vector_unit", "int8_unit", "ternary_array",
             "vector_unit", "int8_unit"]
    cyc = [40, 300, 100, 60, 100, 200, 40, 7]
    recs = [{"name": o.name, "unit": u, "cycles": c, "counts": {}} for o, u, c in zip(ops, units, cyc)]
    recs[1]["counts"]["acc_updates"] = 48 * 10
    recs[5]["counts"]["acc_updates"] = 16 * 9
    arch = load_arch(ROOT / "sim" / "arch" / "kv260.yaml")
    assert (arch.spec.compute.simd, arch.spec.vector_unit.lanes, arch.spec.vector_unit.pipeline_cycles) == (32, 16, 12)
    topk = TopkFabric.of(arch)
    assert (topk.cycles(ops[1], recs[1]), topk.cycles(ops[5], recs[5])) == (1072, 1070)
    total, segs = query_cycles(ops, recs, tokens=8, tile_tokens=4, topk=topk)
    assert [s["cycles"] for s in segs] == [40, 1072 + 430, 1210, 7] and total == 2759
    assert segs[1]["op_topk_cycles"] == [1072, 0, 0, 0] and segs[1]["busy_cycles_by_unit"]["vector_unit"] == 1132
    assert query_cycles(ops, recs, tokens=8, tile_tokens=4)[0] == 40 + 430 + 220 + 7  # host: as before
    # handoffs dram: no topk host step with the fabric top-k (the other steps stay)
    steps = host_steps(ops, segs, act=True, topk_on_host=False)
    assert [s for s in steps if s and s[0][0] == "topk"] == [] and steps[2] == [("widen", 256)]


def test_fabric_topk_on_a_small_vit_adds_its_cycles_and_keeps_the_rest(small):
    """overlap none, on chip (the default arch, schedule.topk fabric by default): the query = its ops'
    cycles + every ternary linear's top-k cycles (sim.engine.vector_topk_cycles on its chunks, counted
    here from the masks: 32 banks of one lane); the ops' own cycles are those of the top-k on the ARM
    under hand-offs through DRAM (the top-k is no op of the trace)."""
    from sim.engine import vector_cycles

    tr, base = small
    assert base.spec.schedule.topk == "fabric"
    fab = simulate(base, tr)
    want = 0
    for op in tr.ops:
        if isinstance(op, TernaryLinearOp):
            want += vector_cycles(op.m * op.k, "topk", base, op.k) + 2 * _chunks_by_hand(op.act_mask, 32)
    assert want == sum(r.get("topk_cycles", 0) for r in fab.layers) > 0
    assert fab["cycles"] == sum(r["cycles"] for r in fab.layers) + want == fab["serial_cycles"]
    assert fab["schedule"]["topk"] == "fabric" and fab["schedule"]["topk_cycles"] == want
    host = simulate(with_overrides(base, {"schedule.topk": "host", "schedule.handoffs": "dram"}), tr)
    assert [r["cycles"] for r in fab.layers] == [r["cycles"] for r in host.layers]


def test_none_mode_host_top_k_by_hand():
    """Skip mode none under handoffs dram with the top-k on the host: the driver top-k's the dense IP's
    input (topk_int, no scheduling) in the array's thread, charged topk_dense ns per element; with
    schedule.topk fabric the vector unit's dense variant instead (no emit pass): _act_case's layers in
    `none` (ln 348 cycles, K 32, 4 tokens; lin reads 4 x 32 int8)."""
    r = _act_case("none", **{"compute.skip_mode": "none", "schedule.host_ns_per_element": {"topk_dense": 10.0}})
    ln, lin = r.layers
    # 128 elements x 10 ns = 1,280 ns = 320 cycles at 250 MHz, no call overhead
    assert lin["host_cycles"] == 320 and r["schedule"]["host_cycles"] == 320
    f = _act_case("none", **{"compute.skip_mode": "none", "schedule.topk": "fabric"})
    # the dense variant: 4 x (2 x 2 + 128) + 12 = 540 cycles, no emit pass; reads 128 B, writes 128 B
    assert f.layers[1]["topk_cycles"] == 540 and "host_cycles" not in f.layers[1]
    assert f["dram_handoff_bytes"] == r["dram_handoff_bytes"] + 256
