"""``schedule.vector_chain: fused`` (docs/engine.md section 5a, sim/schedule.py vector_chains): a run of
consecutive vector-unit ops of one token row ([add ->] LayerNorm | GELU [-> the next linear's top-k]) as one
vector-IP call under ``handoffs: dram``. Expected bytes and cycles are worked out by hand here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.arch import load_arch, with_overrides
from sim.errors import SimInputError
from sim.schedule import pipeline_buffers, query_cycles, vector_chains
from sim.simulator import simulate
from sim.trace import DenseOp, TernaryLinearOp, VectorOp, synthetic_vit_trace, ternary_linear_op

ROOT = Path(__file__).resolve().parents[2]
T, D, H = 8, 16, 64  # tokens, width, hidden: E = T x D = 128, T x H = 512


class FixedTopk:
    """A fabric top-k of 10 cycles that reads M x K int8 and writes M x K int8 (the dense variant)."""

    def cycles(self, op, record):
        return 10

    def dram_bytes(self, op, record):
        return 2 * op.m * op.k


def _ops():
    rng = np.random.default_rng(1)
    lin = lambda name, k, n: ternary_linear_op(name, T, k, n, sparsity=0.5, rng=rng)  # noqa: E731
    return [lin("proj", D, D), VectorOp("add1", "add", T * D), VectorOp("norm2", "layernorm", T * D, D),
            lin("fc1", D, H), VectorOp("gelu", "gelu", T * H), lin("fc2", H, D), VectorOp("add2", "add", T * D),
            VectorOp("norm1", "layernorm", T * D, D), lin("qkv", D, 3 * D),
            DenseOp("qk", T, D // 2, T, batch=2), VectorOp("softmax", "softmax", 2 * T * T, T),
            DenseOp("av", T, T, D // 2, batch=2), lin("proj2", D, D), VectorOp("add3", "add", T * D),
            DenseOp("head", 1, D, 4, weights=True)]


def _recs(ops, vec=100, other=50):
    return [{"name": o.name, "unit": "vector_unit" if isinstance(o, VectorOp) else
             "ternary_array" if isinstance(o, TernaryLinearOp) else "int8_unit",
             "cycles": vec if isinstance(o, VectorOp) else other} for o in ops]


def test_chains_found():
    ops = _ops()
    tk = [10 if isinstance(o, TernaryLinearOp) else 0 for o in ops]
    got = [(c["ops"], c["topk"], c["keep_residual"]) for c in vector_chains(ops, _recs(ops), T, tk)]
    # add1 -> norm2 -> fc1's top-k (add3 reads the residual later), gelu -> fc2's, add2 -> norm1 -> qkv's;
    # add3 alone (followed by a dense op) is no chain
    assert got == [([1, 2], 3, True), ([4], 5, False), ([6, 7], 8, True)]
    # without a top-k (schedule.topk host) nothing chains: a run must feed a top-k (the board issues it so)
    assert vector_chains(ops, _recs(ops), T, [0] * len(ops)) == []


def test_row_segment_bytes_by_hand():
    ops = _ops()
    kw = dict(tokens=T, tile_tokens=4, handoffs="dram", topk=FixedTopk())
    _, split = query_cycles(ops, _recs(ops), **kw)
    _, fused = query_cycles(ops, _recs(ops), chain=True, **kw)
    row_s, row_f = split[0], fused[0]
    assert (row_s["kind"], row_s["first"], row_s["last"]) == ("row", 0, 7)
    # split (E = 128, hidden 512): proj writes 128, its top-k reads + writes 256; add1 reads 128, writes
    # 256, reads the residual 256; norm2 reads 256, writes 128; fc1 reads 128, writes 512, top-k 256;
    # gelu reads 512, writes 512; fc2 reads 512, writes 128, top-k 1024; add2 640; norm1 384
    assert row_s["op_handoff_bytes"] == [384, 640, 384, 896, 1024, 1664, 640, 384]
    # fused: norm2 neither reads the add's int16 nor writes int8 (0) but its call writes fc1's top-k
    # output (128); fc1 keeps its read and write (640); gelu reads 512 and writes fc2's top-k output 512,
    # fc2 640; add2 still writes the residual (add3 reads it); norm1 writes qkv's top-k output (128)
    assert row_f["op_handoff_bytes"] == [384, 640, 128, 640, 1024, 640, 640, 128]
    assert row_s["handoff_dram_bytes"] - row_f["handoff_dram_bytes"] == 7 * 128 + 2 * 512 - 128
    # the qkv projection's top-k ran in norm1's chain: its segment keeps only qkv's own bytes
    att_s, att_f = split[1], fused[1]
    assert att_s["op_handoff_bytes"][0] - att_f["op_handoff_bytes"][0] == 256
    assert [c["ops"] for c in row_f["vector_chains"]] == [
        ["add1", "norm2", "fc1.topk"], ["gelu", "fc2.topk"], ["add2", "norm1", "qkv.topk"]]
    # the whole query: each [add ->] LayerNorm -> top-k chain saves the LayerNorm's int16 read (2E), its
    # int8 write (E) and the top-k's read (E); gelu -> top-k the GELU's write and the top-k's read (2 x 512)
    assert sum(s["handoff_dram_bytes"] for s in split) - sum(s["handoff_dram_bytes"] for s in fused) == 8 * 128 + 2 * 512


def test_cycles_by_hand():
    ops = _ops()
    recs = _recs(ops)
    kw = dict(tokens=T, tile_tokens=4, handoffs="dram", topk=FixedTopk())
    # no DRAM port: the row segment (2 tiles) in split: stages proj.topk 10, proj 50, add1 100, norm2 100,
    # fc1.topk 10, fc1 50, gelu 100, fc2.topk 10, fc2 50, add2 100, norm1 100; vector 530, array 150:
    # fill 680, (680 + 530) / 2 = 605. fused: the same cycles in 5 vector stages plus qkv's top-k (10) in
    # norm1's: fill 690, vector 540: (690 + 540) / 2 = 615
    _, split = query_cycles(ops, recs, **kw)
    _, fused = query_cycles(ops, recs, chain=True, **kw)
    assert split[0]["cycles"] == 605 and fused[0]["cycles"] == 615
    # the attention segment loses qkv's top-k before it (10 cycles, not overlapped)
    assert split[1]["cycles"] - fused[1]["cycles"] == 10
    # overlap none, 1 byte a cycle: the chain add1 -> norm2 -> fc1.topk is one segment, max(210, 640 + 128)
    _, none = query_cycles(ops, recs, bytes_per_cycle=1.0, overlap="none", chain=True, **kw)
    seg = [s for s in none if s["first"] == 1][0]
    assert seg["last"] == 2 and seg["cycles"] == 768
    _, none_s = query_cycles(ops, recs, bytes_per_cycle=1.0, overlap="none", **kw)
    assert [s["cycles"] for s in none_s if s["first"] in (1, 2)] == [640, 384]


@pytest.fixture(scope="module")
def small():
    tr = synthetic_vit_trace(depth=2, dim=64, tokens=17, heads=4, sparsity=0.4, patch_size=4)
    base = with_overrides(load_arch(ROOT / "sim" / "arch" / "kv260.yaml"), {
        "schedule.overlap": "pipelined", "schedule.handoffs": "dram", "compute.skip_mode": "none"})
    return tr, base


def test_simulated_query_bytes_and_vector_cycles(small):
    tr, base = small
    split = simulate(base, tr)
    fused = simulate(with_overrides(base, {"schedule.vector_chain": "fused"}), tr)
    e, h = 17 * 64, 17 * 256  # one token row x D, x hidden (mlp ratio 4)
    # block 0's norm1 -> qkv top-k (after the patch embedding): norm1's int8 write + the top-k's read, 2E;
    # add -> LayerNorm -> top-k (add1 -> norm2, and block 0's add2 -> block 1's norm1): the LayerNorm's int16
    # read 2E + its write E + the top-k's read E, 4E, three of them; gelu -> top-k: 2H, two; block 1's add2
    # -> the final norm feeds no top-k: not chained
    d, depth = split["dram_handoff_bytes"] - fused["dram_handoff_bytes"], 2
    assert d == 2 * e + 3 * 4 * e + 2 * 2 * h
    # the passes still run: every unit's counted cycles are the split ops'
    assert fused["cycles_by_unit"] == split["cycles_by_unit"]
    assert fused["schedule"]["busy_cycles_by_unit"] == split["schedule"]["busy_cycles_by_unit"]
    assert fused["schedule"]["vector_chain"] == "fused" and fused["schedule"]["vector_chains"] == 3 * depth
    assert split["schedule"]["vector_chains"] == 0
    assert fused["energy_mj"] < split["energy_mj"]


def test_needs_dram_handoffs(small):
    _, base = small
    with pytest.raises(SimInputError, match="schedule.vector_chain"):
        with_overrides(base, {"schedule.vector_chain": "fused", "schedule.handoffs": "onchip"})


def test_row_buffer_by_hand(small):
    _, base = small
    assert "chain_row" not in [b["name"] for b in pipeline_buffers(base)]
    a = with_overrides(base, {"schedule.vector_chain": "fused", "vector_unit.lanes": 16, "schedule.max_dim": 768})
    (b,) = [b for b in pipeline_buffers(a) if b["name"] == "chain_row"]
    # 768 int16 a row, 16 int16 a word: 256 bits x 48 deep, ping-pong
    assert (b["width_bits"], b["depth"], b["halves"], b["bits"]) == (256, 48, 2, 2 * 256 * 48)
