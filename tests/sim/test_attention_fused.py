"""``schedule.attention: fused`` (docs/engine.md section 5a, sim/schedule.py FusedAttention): the fused
attention IP's cycles by blocks of query rows, its stage in the attention segment, its DRAM bytes and
host steps, its on-chip buffers. Expected numbers are worked out by hand here, not read from sim.schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.arch import load_arch, with_overrides
from sim.engine import dense_cycles, vector_cycles
from sim.errors import SimInputError
from sim.resources import estimate_resources
from sim.schedule import FusedAttention, HostCost, pipeline_buffers, query_cycles
from sim.simulator import simulate
from sim.trace import DenseOp, VectorOp, synthetic_vit_trace, ternary_linear_op

ROOT = Path(__file__).resolve().parents[2]
# a 4 x 4 int8 unit, 4 softmax lanes, 2 cycles an element, 33 reciprocal steps a row, pipelines 4 / 8
SMALL = dict(rows=4, cols=4, lanes=4, cycles_per_element=2.0, row_op_cycles=33, int8_pipeline_cycles=4,
             vector_pipeline_cycles=8)


def test_blocks_and_head_cycles_by_hand():
    f = FusedAttention(rows_per_block=4, **SMALL)
    # T = 10 tokens, dh = 8: blocks of 4, 4, 2 rows. QK^T: 1 row tile x ceil(10/4) = 3 col tiles x 8 = 24;
    # softmax: 4 rows x 3 lane groups x 2 + 4 x 33 = 156 (2 rows: 12 + 66 = 78); P.V: 1 x 2 x 10 = 20
    assert f.blocks(10, 8) == [(24, 156, 20), (24, 156, 20), (24, 78, 20)]
    # slots: QK0 24 | max(QK1 24, SM0 156) | max(QK2 + PV0 = 44, SM1 156) | max(PV1 20, SM2 78) | PV2 20
    assert f.head_cycles(10, 8) == 24 + 156 + 156 + 78 + 20
    assert f.cycles(2, 10, 8) == 2 * 434 + 2 * 4 + 8
    # counted per datapath: int8 2 x 3 x (24 + 20) + 2 x 4, softmax 2 x (156 + 156 + 78) + 8
    assert f.unit_cycles(2, 10, 8) == {"int8_unit": 272, "softmax": 788}


def test_counts_equal_the_split_ops_when_blocks_are_whole_row_tiles():
    f = FusedAttention(rows_per_block=8, **SMALL)
    heads, t, dh = 3, 21, 8
    qk = dense_cycles(t, dh, t, heads, 4, 4, 4)
    pv = dense_cycles(t, t, dh, heads, 4, 4, 4)
    arch = with_overrides(load_arch(ROOT / "sim" / "arch" / "kv260.yaml"), {"vector_unit.lanes": 4, "vector_unit.pipeline_cycles": 8})
    assert arch.spec.vector_unit.cycles_per_element["softmax"] == 2.0
    sm = vector_cycles(heads * t * t, "softmax", arch, t)
    assert f.unit_cycles(heads, t, dh) == {"int8_unit": qk + pv, "softmax": sm}
    # one block (R >= T): QK^T, softmax and P.V of a head in sequence, the split ops' sum
    whole = FusedAttention(rows_per_block=64, **SMALL)
    assert whole.cycles(heads, t, dh) == qk + pv + sm


def _block(t=8, d=16, heads=2):
    rng = np.random.default_rng(0)
    lin = lambda name, k, n: ternary_linear_op(name, t, k, n, sparsity=0.5, rng=rng)  # noqa: E731
    return [VectorOp("norm1", "layernorm", t * d, d), lin("qkv", d, 3 * d),
            DenseOp("qk", t, d // heads, t, batch=heads), VectorOp("softmax", "softmax", heads * t * t, t),
            DenseOp("av", t, t, d // heads, batch=heads), lin("proj", d, d), VectorOp("add1", "add", t * d),
            DenseOp("head", 1, d, 4, weights=True)]


def _recs(ops):
    units = ["vector_unit", "ternary_array", "int8_unit", "vector_unit", "int8_unit", "ternary_array",
             "vector_unit", "int8_unit"]
    cyc = [40, 300, 100, 60, 100, 200, 40, 7]
    return [{"name": o.name, "unit": u, "cycles": c} for o, u, c in zip(ops, units, cyc)]


def test_fused_stage_in_the_attention_segment_by_hand():
    ops = _block()
    f = FusedAttention(rows_per_block=4, **SMALL)
    # t = 8, dh = 8, 2 heads, blocks of 4 rows: QK^T 1 x 2 x 8 = 16, softmax 4 x 2 x 2 + 4 x 33 = 148,
    # P.V 1 x 2 x 8 = 16; slots 16 | 148 | 148 | 16 = 328 a head; the call 2 x 328 + 8 + 8 = 672
    total, segs = query_cycles(ops, _recs(ops), tokens=8, tile_tokens=4, fused=f)
    # attention, 2 heads: qkv 300, fused 672: first head (300 + 672) / 2 + one period of the IP 672 / 2 =
    # 822. norm1 40, proj + add1 220 (test_overlap), head 7
    assert total == 40 + 822 + 220 + 7
    att = segs[1]
    assert att["fused_attention"][0]["cycles"] == 672 and att["critical"] == "int8_unit"
    assert att["serial_cycles"] == 300 + 100 + 60 + 100  # the ops in sequence, as split
    split, _ = query_cycles(ops, _recs(ops), tokens=8, tile_tokens=4)
    assert split == 40 + 430 + 220 + 7


def test_fused_dram_bytes_and_no_host_steps_by_hand():
    ops = _block()
    f = FusedAttention(rows_per_block=4, **SMALL)
    host = HostCost({"widen": 10.0, "row_max": 10.0, "topk": 0.0, "topk_dense": 0.0}, 0.0, 100.0)
    kw = dict(tokens=8, tile_tokens=4, bytes_per_cycle=4.0, handoffs="dram", host=host)
    _, split = query_cycles(ops, _recs(ops), **kw)
    _, fused = query_cycles(ops, _recs(ops), fused=f, **kw)
    # qkv: reads norm1's 128 B twice (once per head) and writes 8 x 48 = 384 B: 640 B in both.
    # split: QK^T reads 384, writes 2 x 8 x 8 int32 = 512; softmax reads 512, writes 128; P.V reads 128,
    # writes 2 x 8 x 8 = 128. fused: reads Q, K, V (384) and writes the output (128)
    assert split[1]["op_handoff_bytes"] == [640, 384 + 512, 512 + 128, 128 + 128]
    assert fused[1]["op_handoff_bytes"] == [640, 384, 0, 128]
    assert fused[1]["handoff_dram_bytes"] == 640 + 512
    # host steps: split widens QK^T's (2 x (64 + 64)) and P.V's operands (2 x (64 + 64)) and takes the
    # 128 scores' maxima, 10 ns each at 100 MHz: 256, 256, 128 cycles; fused: none
    assert split[1]["op_host_cycles"][1:] == [256, 128, 256]
    assert fused[1]["op_host_cycles"] == [0, 0, 0, 0] and fused[1]["host_cycles"] == 0


@pytest.fixture(scope="module")
def small():
    tr = synthetic_vit_trace(depth=2, dim=64, tokens=17, heads=4, sparsity=0.4, patch_size=4)
    base = with_overrides(load_arch(ROOT / "sim" / "arch" / "kv260.yaml"), {
        "schedule.overlap": "pipelined", "schedule.handoffs": "dram", "int8_unit.rows": 16, "int8_unit.cols": 16})
    return tr, base


def test_simulated_query_moves_no_scores_or_probabilities(small):
    tr, base = small
    split = simulate(base, tr)
    fused = simulate(with_overrides(base, {"schedule.attention": "fused", "schedule.attention_rows": 16}), tr)
    # per block the int32 scores written and read (8 h T^2 B) and the uint8 probabilities written and read
    # (2 h T^2 B) are gone: 2 blocks x 10 x 4 heads x 17^2
    assert split["dram_handoff_bytes"] - fused["dram_handoff_bytes"] == 2 * 10 * 4 * 17 * 17
    # no widen / row_max host steps on any attention op
    for r in fused.layers:
        if r["name"].endswith(("attn.qk", "attn.softmax", "attn.av")) or r["type"] == "dense" and not r.get("weights"):
            assert not r.get("host_cycles"), r["name"]
    assert fused["schedule"]["host_cycles"] < split["schedule"]["host_cycles"]
    assert fused["cycles"] < split["cycles"]
    # R = 16 = the int8 unit's rows: the int8 unit's counted cycles are the split ops'
    assert fused["cycles_by_unit"]["int8_unit"] == split["cycles_by_unit"]["int8_unit"]
    # busy: the fused calls hold the int8 unit (softmax inside), the vector unit has no softmax or row maxima
    sb, fb = split["schedule"]["busy_cycles_by_unit"], fused["schedule"]["busy_cycles_by_unit"]
    att = [r for r in split.layers if r["name"].endswith(("attn.qk", "attn.softmax", "attn.av"))]
    assert len(att) == 6
    sm = sum(r["cycles"] + r.get("host_cycles", 0) for r in att if r["name"].endswith("softmax"))
    i8 = sum(r["cycles"] + r.get("host_cycles", 0) for r in att if not r["name"].endswith("softmax"))
    f = fused["schedule"]["fused_attention_cycles"]
    assert fb["vector_unit"] == sb["vector_unit"] - sm
    assert fb["int8_unit"] == sb["int8_unit"] - i8 + f
    assert f > 0 and fused["schedule"]["attention"] == "fused" and split["schedule"]["fused_attention_cycles"] == 0


def test_fused_needs_pipelined_and_names_the_key(small):
    _, base = small
    with pytest.raises(SimInputError, match="schedule.attention"):
        with_overrides(base, {"schedule.attention": "fused", "schedule.overlap": "none"})
    with pytest.raises(SimInputError, match="attention_rows"):
        with_overrides(base, {"schedule.attention": "fused", "schedule.attention_rows": 0})


def test_buffers_of_the_fused_attention_by_hand(small):
    _, base = small
    on = with_overrides(base, {"schedule.handoffs": "onchip", "schedule.topk": "fabric"})
    names = lambda a: [b["name"] for b in pipeline_buffers(a)]  # noqa: E731
    assert "pipe_scores" in names(on) and not any(n.startswith("attn_") for n in names(on))
    fused_on = with_overrides(on, {"schedule.attention": "fused"})
    assert "pipe_scores" not in names(fused_on) and "pipe_heads" in names(fused_on)
    fused = with_overrides(base, {"schedule.attention": "fused", "schedule.attention_rows": 32})
    bufs = {b["name"]: b for b in pipeline_buffers(fused)}  # handoffs dram: only the fused IP's
    assert sorted(bufs) == ["attn_k", "attn_probs", "attn_q", "attn_scores", "attn_v"]
    # 16 x 16 int8 unit, 16 lanes, max_tokens 257, max_head_dim 64, R = 32:
    # K, V: 16 int8 a word, 257 x 64 / 16 = 1028 deep, two halves; Q: 16 int8, 32 x 64 / 16 = 128 deep;
    # scores: max(16, 16) int32 = 512 bits, 32 x 257 / 16 = 514 deep; probabilities 128 bits, 514 deep
    got = {n: (b["width_bits"], b["depth"], b["halves"]) for n, b in bufs.items()}
    assert got == {"attn_k": (128, 1028, 2), "attn_v": (128, 1028, 2), "attn_q": (128, 128, 2),
                   "attn_scores": (512, 514, 2), "attn_probs": (128, 514, 2)}
    # every bit built is charged: bits = halves x width x depth
    assert bufs["attn_scores"]["bits"] == 2 * 512 * 514
    # the fused IP's softmax lanes: vector_unit.lanes = 16 softmax-only lanes (attention_lanes not given), 5 DSP
    # each (the softmax-only lane's 4 + 1 DSP48E2 slices, sim/boards/resource_model.yaml)
    d_split, d_fused = estimate_resources(base)["datapath"], estimate_resources(fused)["datapath"]
    assert d_fused["dsp"] - d_split["dsp"] == 16 * 5


def _yaml_lane(name: str) -> float:
    """A coefficient read from the yaml itself (not through sim.arch)."""
    import yaml

    return float(yaml.safe_load((ROOT / "sim" / "boards" / "resource_model.yaml").read_text())[name]["value"])


def test_softmax_lanes_charged_by_hand(small):
    """``schedule.attention_lanes`` softmax-only lanes (rtl/vector_lane.v SOFTMAX_ONLY) are what the fused IP
    adds to the datapath: 637 LUT, 408 FF, 5 DSP a lane (yosys, the yaml), not the full vector lane's."""
    _, base = small
    assert (_yaml_lane("lut_per_softmax_lane"), _yaml_lane("ff_per_softmax_lane"),
            _yaml_lane("dsp_per_softmax_lane")) == (637, 408, 5)
    d_split = estimate_resources(base)["datapath"]
    # + the IP's row steps (rtl/row_steps.v SOFTMAX_ONLY: 64 + 32 a lane LUT, 92 + 32 a lane FF) and the int8
    # unit's 16 row-max comparators (23 LUT, 32 FF each): 4 x 637 + 64 + 4 x 32 + 16 x 23 = 3108, ...
    for lanes, want in ((4, (3108, 2364, 20)), (12, (8460, 5884, 60))):   # 4 x 637, 4 x 408, 4 x 5; 12 x ...
        fused = with_overrides(base, {"schedule.attention": "fused", "schedule.attention_lanes": lanes})
        d = estimate_resources(fused)["datapath"]
        got = tuple(round(d[k] - d_split[k], 6) for k in ("lut", "ff", "dsp"))
        assert got == want, lanes
    # not given: the vector unit's 16 lanes' count of softmax-only lanes (16 x 637 LUT), never the full lane
    d16 = estimate_resources(with_overrides(base, {"schedule.attention": "fused"}))["datapath"]
    assert round(d16["lut"] - d_split["lut"], 6) == 16 * 637 + 64 + 16 * 32 + 16 * 23
    # split: attention_lanes charges nothing (the softmax runs on the vector unit)
    d_split8 = estimate_resources(with_overrides(base, {"schedule.attention_lanes": 8}))["datapath"]
    assert d_split8 == d_split


def test_attention_lanes_set_the_softmax_cycles_by_hand(small):
    _, base = small
    fused = with_overrides(base, {"schedule.attention": "fused", "schedule.attention_rows": 16})
    assert FusedAttention.of(fused).lanes == 16     # default: vector_unit.lanes, today's cycles
    f8 = FusedAttention.of(with_overrides(fused, {"schedule.attention_lanes": 8}))
    f5 = FusedAttention.of(with_overrides(fused, {"schedule.attention_lanes": 5}))
    # T = 50, dh = 64, R = 16: blocks of 16, 16, 16, 2 rows; softmax R_b x 2 x ceil(50 / lanes) + 33 R_b:
    # 8 lanes: 16 x 2 x 7 + 528 = 752 (2 rows: 28 + 66 = 94); 5 lanes: 16 x 2 x 10 + 528 = 848 (2 rows: 106)
    assert [b[1] for b in f8.blocks(50, 64)] == [752, 752, 752, 94]
    assert [b[1] for b in f5.blocks(50, 64)] == [848, 848, 848, 106]
    # the array's blocks do not move: 16 x 16 int8 unit, QK^T 1 x 4 x 64 = 256, P.V 1 x 4 x 50 = 200
    assert [(b[0], b[2]) for b in f5.blocks(50, 64)] == [(256, 200)] * 3 + [(256, 200)]
    # the score / probability rows are max(rows, attention lanes) wide: 32 lanes -> 32 int32 a word
    bufs = {b["name"]: b for b in pipeline_buffers(with_overrides(fused, {"schedule.attention_lanes": 32}))}
    assert bufs["attn_scores"]["width_bits"] == 32 * 32 and bufs["attn_probs"]["width_bits"] == 8 * 32


@pytest.mark.parametrize("bad", [0, -3, 4097, 2.5, "many"])
def test_attention_lanes_out_of_range_is_one_clear_error(small, bad):
    _, base = small
    with pytest.raises(SimInputError, match="attention_lanes"):
        with_overrides(base, {"schedule.attention": "fused", "schedule.attention_lanes": bad})


def test_attention_lanes_through_the_cli_exit_2(small, tmp_path, capsys):
    from sim.trace import write_trace
    from tatvpr_hw.cli import main

    tr, _ = small
    write_trace(tmp_path / "t.npz", tr)
    rc = main(["sim", "--trace", str(tmp_path / "t.npz"), "--arch", "kv260", "--set", "schedule.overlap=pipelined",
               "--set", "schedule.attention=fused", "--set", "schedule.attention_lanes=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "attention_lanes" in err and "Traceback" not in err
