"""Model-side tracer on the tiny student: masks, op order and shapes, trace files B1 reads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim.packing import unpack_ternary2
from sim.trace import DenseOp, TernaryLinearOp, VectorOp, read_trace
from tatvpr_hw.config import load_config

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"

S = 0.5
TOKENS = 50  # 98 px / 14 = 7 x 7 patches + CLS
D, HEADS, DEPTH, HIDDEN = 192, 3, 4, 768


def kept(k: int, s: float) -> int:
    return math.ceil((1 - s) * k - 1e-9)


def _write_eval_set(root, n_queries=2):
    from tatvpr_hw.data.vpr import vpr_image_name

    rng = np.random.default_rng(0)
    for split, n in (("database", 2), ("queries", n_queries)):
        d = root / "eval" / "images" / "test" / split
        d.mkdir(parents=True)
        for i in range(n):
            img = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
            img.save(d / vpr_image_name(1000.0 + 50 * i, 2000.0, f"{split}{i}"))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from tatvpr_hw import tracing

    root = tmp_path_factory.mktemp("data")
    _write_eval_set(root)
    cfg = load_config(TINY)
    cfg.data.root = root
    return tracing._Session(cfg, None, 2, seed=0)


@pytest.fixture(scope="module")
def trace(session):
    return session.trace(S, 0)


def test_token_mode_masks_keep_ceil_1_minus_s_k(trace):
    tern = trace.ternary_ops()
    assert len(tern) == 4 * DEPTH
    for op in tern:
        nnz = op.act_mask.sum(axis=1)
        assert op.act_mask.shape == (TOKENS, op.k)
        assert (nnz <= kept(op.k, S)).all(), op.name  # top-k, then int8 rounding can only drop
        if op.name.endswith(("qkv", "fc1")):  # LayerNorm-fed: no kept value rounds to zero
            assert (nnz == kept(op.k, S)).all(), (op.name, nnz.min(), nnz.max())
    assert trace.meta["act_density"] == pytest.approx(
        sum(int(o.act_mask.sum()) for o in tern) / sum(o.m * o.k for o in tern))


def test_op_order_and_shapes(trace):
    ops = trace.ops
    assert isinstance(ops[0], DenseOp) and ops[0].name == "backbone.patch_embed.proj"
    assert (ops[0].m, ops[0].k, ops[0].n) == (49, 3 * 14 * 14, D)
    assert ops[0].weights  # the patch embedding's second operand is its weights (streamed from DRAM)
    assert ops[1].name == "backbone.pos_embed.add" and ops[1].elements == TOKENS * D
    block0 = [(type(o).__name__, o.name.split(".", 3)[-1]) for o in ops[2:18]]
    assert block0 == [
        ("VectorOp", "norm1"), ("TernaryLinearOp", "attn.qkv"), ("DenseOp", "attn.qk"),
        ("VectorOp", "attn.softmax"), ("DenseOp", "attn.av"), ("TernaryLinearOp", "attn.proj"),
        ("VectorOp", "ls1"), ("VectorOp", "add1"), ("VectorOp", "norm2"),
        ("TernaryLinearOp", "mlp.fc1"), ("VectorOp", "mlp.act"), ("TernaryLinearOp", "mlp.fc2"),
        ("VectorOp", "ls2"), ("VectorOp", "add2"), ("VectorOp", "norm1"), ("TernaryLinearOp", "attn.qkv")]
    qkv, qk, sm, av, proj = ops[3:8]
    assert (qkv.m, qkv.k, qkv.n) == (TOKENS, D, 3 * D) and (proj.k, proj.n) == (D, D)
    assert (qk.m, qk.k, qk.n, qk.batch) == (TOKENS, D // HEADS, TOKENS, HEADS)
    assert (av.m, av.k, av.n, av.batch) == (TOKENS, TOKENS, D // HEADS, HEADS)
    assert sm.kind == "softmax" and sm.elements == HEADS * TOKENS * TOKENS
    fc1, gelu, fc2 = ops[11:14]
    assert (fc1.n, fc2.k, gelu.kind, gelu.elements) == (HIDDEN, HIDDEN, "gelu", TOKENS * HIDDEN)
    # the head follows the backbone: dense products and vector ops named head.*
    head = [o for o in ops if o.name.startswith("head")]
    assert head and ops.index(head[0]) == len(ops) - len(head)
    assert any(isinstance(o, DenseOp) for o in head)
    # weights (linears, convolutions) vs two activations (BoQ's query x token products, attention)
    assert not qk.weights and not av.weights
    assert {o.weights for o in head if isinstance(o, DenseOp)} == {True, False}
    assert any(isinstance(o, VectorOp) and o.kind == "softmax" for o in head)  # BoQ attention
    # the final L2 normalisation: F.normalize's three ATen ops as the vector unit's one l2norm, one row
    # of the descriptor; the head's int16 -> int8 input requantisation (BoQ) first
    assert (head[-1].name, head[-1].kind, head[-1].row) == ("head.l2norm", "l2norm", head[-1].elements)
    assert head[-1].elements == trace.meta["descriptor_dim"]
    assert (head[0].name, head[0].kind, head[0].elements) == ("head.input", "requant", (TOKENS - 1) * D)
    assert not any(o.host for o in ops if not isinstance(o, TernaryLinearOp))  # BoQ: no host work


def test_packed_weights_and_scales_match_the_module(session, trace):
    from brevitas_models.quant import ternary_layers

    layers = dict(ternary_layers(session.model))
    op = next(o for o in trace.ops if o.name == "backbone.blocks.1.mlp.fc2")
    mod = layers["backbone.blocks.1.mlp.fc2"]
    codes, scale = mod.ternary_weight()
    assert np.array_equal(unpack_ternary2(op.weights_packed, op.k), codes.numpy())
    assert op.weight_scale == pytest.approx(float(scale.reshape(-1)[0]))
    assert op.act_scale == pytest.approx(float(mod.input_scale()))


def test_written_traces_read_back(session, tmp_path):
    from sim.trace import write_trace
    from tatvpr_hw.tracing import output_paths

    paths = output_paths(tmp_path / "t.npz", 2)
    assert [p.name for p in paths] == ["t_0.npz", "t_1.npz"]
    traces = [session.trace(0.2, i) for i in range(2)]
    for p, t in zip(paths, traces):
        write_trace(p, t)
    back = [read_trace(p) for p in paths]
    assert back[0].meta["input"] == "benchmark queries" and back[0].meta["sparsity"] == 0.2
    assert back[0].meta["image"] != back[1].meta["image"]
    for t, b in zip(traces, back):
        assert [o.name for o in b.ops] == [o.name for o in t.ops]
        for o, q in zip(t.ops, b.ops):
            if isinstance(o, TernaryLinearOp):
                assert np.array_equal(o.act_mask, q.act_mask)
                assert np.array_equal(o.weights_packed, q.weights_packed)
    # different queries give different masks, same weights
    a0, a1 = traces[0].ternary_ops()[0], traces[1].ternary_ops()[0]
    assert not np.array_equal(a0.act_mask, a1.act_mask)
    assert np.array_equal(a0.weights_packed, a1.weights_packed)


def test_cli_trace_bad_sparsity(tmp_path, capsys):
    from tatvpr_hw.cli import main

    rc = main(["trace", "--config", str(TINY), "--sparsity", "1.2", "--out", str(tmp_path / "t.npz")])
    assert rc == 2 and "sparsity" in capsys.readouterr().err


def test_trace_from_checkpoint_keeps_its_scales(session, tmp_path):
    from brevitas_models.checkpoint import save_checkpoint
    from brevitas_models.quant import ternary_layers
    from tatvpr_hw.config import config_to_dict
    from tatvpr_hw.errors import UserError
    from tatvpr_hw.tracing import trace_model

    cfg = session.cfg
    session.trace(0.3, 0)  # calibrates the session's student at s = 0.3
    meta = {"config": config_to_dict(cfg), "role": "student", "stage": "finetune", "step": 7,
            "seed": 0, "rng": None, "teacher_checkpoint": None}
    save_checkpoint(tmp_path / "student", session.model, meta)
    [path] = trace_model(cfg, checkpoint=tmp_path / "student", sparsity=0.3, out=tmp_path / "t.npz")
    tr = read_trace(path)
    assert tr.meta["checkpoint"] == str(tmp_path / "student") and tr.meta["stage"] == "finetune"
    assert tr.meta["calibrated"] is False
    scales = {n: float(m.input_scale()) for n, m in ternary_layers(session.model)}
    for op in tr.ternary_ops():
        assert op.act_scale == pytest.approx(scales[op.name])
    save_checkpoint(tmp_path / "teacher", session.model, dict(meta, role="teacher", stage="teacher"))
    with pytest.raises(UserError, match="teacher checkpoint"):
        trace_model(cfg, checkpoint=tmp_path / "teacher", sparsity=0.3, out=tmp_path / "x.npz")
