"""Recall@N on hand-made cases with known answers; weight-format copies; sparsity parsing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tatvpr_hw.errors import UserError
from tatvpr_hw.evaluation import (chance_recall_at_1, fp16_weights, int8_weights, parse_sparsity_list,
                                  recall_at_n)


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_recall_known_answer():
    db = np.eye(4, dtype=np.float32)
    q = np.stack([
        _unit([1, 0, 0, 0]),            # nearest db0, positive {0}: hit at 1
        _unit([0.1, 0.8, 0.6, 0]),      # ranking db1, db2, ...; positive {2}: hit at 2
        _unit([0, 0, 1, 0.1]),          # no positive at all: always a miss
        _unit([0.2, 0, 0, 1]),          # nearest db3, positives {3, 0}: hit at 1
    ])
    positives = [np.array([0]), np.array([2]), np.array([], dtype=np.int64), np.array([3, 0])]
    r = recall_at_n(db, q, positives, ns=(1, 2, 5, 10))
    assert r == {1: 50.0, 2: 75.0, 5: 75.0, 10: 75.0}


def test_recall_counts_rank_not_order_of_positives():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(50, 8)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[[3, 7, 11]] + 0.01
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    # positives are the query's own source and one far item: R@1 = 100
    assert recall_at_n(db, q, [[49, 3], [7], [0, 11]], ns=(1,))[1] == 100.0
    # positives that are not the nearest: R@1 = 0
    assert recall_at_n(db, q, [[4], [8], [12]], ns=(1,))[1] < 100.0


def test_recall_input_checks():
    with pytest.raises(UserError, match="shapes"):
        recall_at_n(np.zeros((3, 4)), np.zeros((2, 5)), [[0], [1]])
    with pytest.raises(UserError, match="2 positive lists for 3 queries"):
        recall_at_n(np.eye(3), np.eye(3), [[0], [1]])


def test_chance_level():
    assert chance_recall_at_1([np.array([0]), np.array([1, 2])], num_db=10) == pytest.approx(15.0)


def test_int8_and_fp16_copies():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    q = int8_weights(m)
    for a, b in ((m[0], q[0]), (m[2], q[2])):
        scale = a.weight.abs().amax(dim=1, keepdim=True) / 127
        err = (a.weight - b.weight).abs()
        assert (err <= scale / 2 + 1e-7).all() and err.max() > 0
        assert len(torch.unique(torch.round(b.weight / scale))) <= 255
        assert torch.equal(a.bias, b.bias)
    h = fp16_weights(m)
    assert torch.equal(h[0].weight, m[0].weight.half().float())
    assert not torch.equal(h[0].weight, m[0].weight)
    assert h[0].weight.dtype == torch.float32


@pytest.mark.parametrize("text, want", [("0,0.2,0.4", [0.0, 0.2, 0.4]), (" 0.5 ", [0.5])])
def test_parse_sparsity(text, want):
    assert parse_sparsity_list(text) == want


@pytest.mark.parametrize("text", ["", "1.0", "0.2,x", "-0.1", "nan"])
def test_parse_sparsity_rejects(text):
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        parse_sparsity_list(text)


def test_target_check():
    from tatvpr_hw.evaluation import target_check

    def rec(s, r1, g):
        return {"model": "student", "sparsity": s, "recall@1": r1, "gmacs": g}
    ok = target_check([rec(0.0, 80.0, 1.0), rec(0.4, 79.5, 0.6)])
    assert ok["met"] and ok["r1_drop_pt"] == 0.5 and ok["macs_saved_pct"] == 40.0
    assert not target_check([rec(0.0, 80.0, 1.0), rec(0.4, 78.0, 0.6)])["met"]      # 2 pt drop
    assert not target_check([rec(0.0, 80.0, 1.0), rec(0.4, 80.0, 0.7)])["met"]      # 30 % saved
    assert target_check([rec(0.0, 80.0, 1.0)]) is None
