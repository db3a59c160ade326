"""Trace format: round trip, validation errors naming op and field, synthetic generator."""

import json
import math

import numpy as np
import pytest

from sim.errors import SimInputError
from sim.packing import pack_ternary2
from sim.trace import (VERSION, DenseOp, TernaryLinearOp, Trace, VectorOp, read_trace, synthetic_vit_trace,
                       topk_mask, write_trace)


def small_trace(seed=0, sparsity=0.3):
    return synthetic_vit_trace(depth=2, dim=24, tokens=5, heads=3, mlp_ratio=2, sparsity=sparsity, seed=seed)


def test_round_trip(tmp_path):
    tr = small_trace()
    p = write_trace(tmp_path / "t.npz", tr)
    back = read_trace(p)
    assert back.version == VERSION and back.meta == tr.meta
    assert [type(o) for o in back.ops] == [type(o) for o in tr.ops]
    for a, b in zip(tr.ops, back.ops):
        assert a.name == b.name
        if isinstance(a, TernaryLinearOp):
            assert np.array_equal(a.weights(), b.weights())
            assert np.array_equal(a.act_mask, b.act_mask)
            assert (a.m, a.k, a.n) == (b.m, b.k, b.n)
        elif isinstance(a, DenseOp):
            assert (a.m, a.k, a.n, a.batch, a.weights) == (b.m, b.k, b.n, b.batch, b.weights)
        else:
            assert (a.kind, a.elements) == (b.kind, b.elements)


def test_synthetic_shapes_and_sparsity():
    tr = synthetic_vit_trace(depth=1, dim=40, tokens=7, heads=4, mlp_ratio=4, sparsity=0.4, seed=1)
    lins = tr.ternary_ops()
    assert [(o.k, o.n) for o in lins] == [(40, 120), (40, 40), (40, 160), (160, 40)]
    for o in lins:
        assert np.all(o.act_nnz_per_row() == math.ceil(0.6 * o.k))
        w = o.weights()
        assert set(np.unique(w)) <= {-1, 0, 1}
        assert np.array_equal(o.weight_nnz_per_row(), (w != 0).sum(1))
        assert np.array_equal(o.intersections(), o.act_mask.astype(int) @ (w != 0).astype(int).T)
    assert tr.meta["sparsity"] == 0.4


def test_synthetic_default_is_vit_b14_at_224_px():
    tr = synthetic_vit_trace(depth=1, sparsity=0.0)
    # 224 / 14 = 16 patches a side: 256 patches + the class token
    assert tr.meta["tokens"] == 257
    pe = tr.ops[0]
    assert isinstance(pe, DenseOp) and pe.weights and pe.name == "patch_embed"
    assert (pe.m, pe.k, pe.n) == (256, 3 * 14 * 14, 768)
    # attention matmuls multiply two activations: not weights
    assert not any(o.weights for o in tr.ops[1:] if isinstance(o, DenseOp))
    assert all(o.m == 257 for o in tr.ternary_ops())


def test_dense_weights_flag_round_trip_and_version_1_files_without_it(tmp_path):
    tr = Trace(VERSION, {}, [DenseOp("head", 1, 8, 4, weights=True), DenseOp("qk", 3, 2, 3, batch=2)])
    back = read_trace(write_trace(tmp_path / "t.npz", tr))
    assert [o.weights for o in back.ops] == [True, False]
    # a file written before the field existed (no "weights" key) reads as weights = false
    out = _rewrite(tmp_path / "t.npz", tmp_path / "old.npz", lambda h: [o.pop("weights") for o in h["ops"]])
    assert [o.weights for o in read_trace(out).ops] == [False, False]
    bad = _rewrite(tmp_path / "t.npz", tmp_path / "bad.npz", lambda h: h["ops"][0].update(weights="yes"))
    with pytest.raises(SimInputError, match="op 0 \\('head'\\).*'weights' = 'yes'.*true or false"):
        read_trace(bad)
    with pytest.raises(SimInputError, match="'weights'"):
        write_trace(tmp_path / "w.npz", Trace(VERSION, {}, [DenseOp("head", 1, 8, 4, weights=1)]))


def test_same_seed_same_trace():
    a, b, c = small_trace(5), small_trace(5), small_trace(6)
    assert all(np.array_equal(x.act_mask, y.act_mask) for x, y in zip(a.ternary_ops(), b.ternary_ops()))
    assert not all(np.array_equal(x.weights(), y.weights()) for x, y in zip(a.ternary_ops(), c.ternary_ops()))


def test_topk_mask_keeps_ceil():
    rng = np.random.default_rng(0)
    m = topk_mask(4, 10, 0.25, rng)
    assert np.all(m.sum(1) == 8)


def _rewrite(path, out, edit_header=None, drop=None, replace=None):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    h = json.loads(arrays["__header__"].tobytes())
    if edit_header:
        edit_header(h)
    arrays["__header__"] = np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)
    for k in drop or []:
        del arrays[k]
    arrays.update(replace or {})
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("case,needle", [
    ("version", "version"),
    ("format", "format"),
    ("type", "'type'"),
    ("m", "'m'"),
    ("kind", "'kind'"),
    ("missing_array", "missing"),
    ("shape", "act_mask"),
    ("dtype", "weights_packed"),
    ("badcode", "0b10"),
    ("scale", "act_scale"),
])
def test_malformed_traces_named(tmp_path, case, needle):
    p = write_trace(tmp_path / "t.npz", small_trace())
    i = 2  # op 0 is patch_embed (dense), op 1 blocks.0.norm1 (vector), op 2 blocks.0.attn.qkv (ternary)
    out = tmp_path / "bad.npz"
    if case == "version":
        _rewrite(p, out, lambda h: h.update(version=99))
    elif case == "format":
        _rewrite(p, out, lambda h: h.update(format="other"))
    elif case == "type":
        _rewrite(p, out, lambda h: h["ops"][0].update(type="conv"))
    elif case == "m":
        _rewrite(p, out, lambda h: h["ops"][i].update(m=-3))
    elif case == "kind":
        _rewrite(p, out, lambda h: h["ops"][1].update(kind="relu"))
    elif case == "missing_array":
        _rewrite(p, out, drop=[f"ops/{i}/act_mask"])
    elif case == "shape":
        _rewrite(p, out, replace={f"ops/{i}/act_mask": np.ones((3, 3), bool)})
    elif case == "dtype":
        _rewrite(p, out, replace={f"ops/{i}/weights_packed": np.zeros((72, 6), np.int16)})
    elif case == "badcode":
        _rewrite(p, out, replace={f"ops/{i}/weights_packed": np.full((72, 6), 0b10, np.uint8)})
    elif case == "scale":
        _rewrite(p, out, lambda h: h["ops"][i].update(act_scale=0))
    with pytest.raises(SimInputError, match=needle) as ei:
        read_trace(out)
    assert "bad.npz" in str(ei.value)


def test_not_a_trace(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("hello")
    with pytest.raises(SimInputError, match="not a trace file"):
        read_trace(bad)
    with pytest.raises(SimInputError, match="not found"):
        read_trace(tmp_path / "nope.npz")


def test_write_rejects_inconsistent_op(tmp_path):
    w = pack_ternary2(np.zeros((4, 8), np.int8))
    op = TernaryLinearOp("l", 2, 8, 5, w, np.ones((2, 8), bool))  # n=5 but 4 rows
    with pytest.raises(SimInputError, match="'l'.*weights_packed"):
        write_trace(tmp_path / "t.npz", Trace(VERSION, {}, [op]))
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("m,k,n,block", [(7, 13, 9, 1 << 15), (5, 100, 37, 60), (1, 1, 1, 1),
                                         (20, 513, 70, 20 * 3), (3, 64, 5, 3)])
def test_intersection_counts_exact_in_blocks(monkeypatch, m, k, n, block):
    """The tiled AND + popcount equals the integer count, for tile sizes that split N unevenly."""
    import sim.trace as st

    monkeypatch.setattr(st, "_TILE_ELEMS", block)
    rng = np.random.default_rng(m * k + n)
    for density in (0.0, 0.3, 1.0):
        a = rng.random((m, k)) < density
        b = rng.random((n, k)) < max(density, 0.5)
        got = st.intersection_counts(a, b)
        assert got.dtype == np.int32
        assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64).T)


def test_weight_nnz_from_packed_bytes_counts_only_nonzero_codes():
    w = np.array([[1, -1, 0, 1, 0, 0, -1], [0, 0, 0, 0, 0, 0, 0]], dtype=np.int8)
    op = TernaryLinearOp("t", 1, 7, 2, pack_ternary2(w), np.ones((1, 7), bool))
    assert op.weight_nnz_per_row().tolist() == [4, 0]
    assert np.array_equal(op.weight_nz_mask(), w != 0)
    assert op.intersections().tolist() == [[4, 0]]


def test_nz_bytes_straight_from_packed_weights():
    from sim.trace import ternary2_nz_bytes

    rng = np.random.default_rng(5)
    for k in (1, 3, 4, 7, 8, 9, 64, 65, 130):
        w = rng.integers(-1, 2, size=(6, k)).astype(np.int8)
        want = np.packbits(w != 0, axis=1, bitorder="little")
        got = ternary2_nz_bytes(pack_ternary2(w))
        assert np.array_equal(got[:, :want.shape[1]], want), k
        assert not got[:, want.shape[1]:].any()


def test_synthetic_bank_granularity_keeps_per_group_counts():
    """Bank top-k: ceil((1-s) * group size) kept in every channel group c mod B, for every token."""
    from sim.trace import synthetic_vit_trace, topk_mask
    rng = np.random.default_rng(0)
    # K = 10, B = 4: groups {0,4,8}, {1,5,9}, {2,6}, {3,7}; s = 0.5 keeps 2, 2, 1, 1 (6 in all)
    mask = topk_mask(5, 10, 0.5, rng, banks=4)
    for b, want in enumerate((2, 2, 1, 1)):
        assert (mask[:, b::4].sum(axis=1) == want).all(), b
    tr = synthetic_vit_trace(depth=1, dim=64, tokens=9, heads=2, sparsity=0.4, granularity="bank", banks=8)
    for op in tr.ternary_ops():
        groups = op.act_mask.reshape(op.m, op.k // 8, 8).sum(axis=1)  # column b = bank b's kept count
        assert (groups == math.ceil(0.6 * op.k / 8 - 1e-9)).all(), op.name
    assert tr.meta["granularity"] == "bank" and tr.meta["banks"] == 8
