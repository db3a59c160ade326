"""The Sparse-TeTRA reference switches of the top-k: granularity ``batch`` (one top-k over the
whole [B, N, C] tensor, k = int((1 - s) * numel)) and ``gradient: straight_through``.

Expected values are worked by hand in each test (reference: OliverGrainge/Sparse-TeTRA
model/layers.py ``sparsify``: ``k = int((1.0 - sparsity) * flat.numel())``, ``y = x * mask +
(1 - mask) * (x - x.detach())``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brevitas_models.errors import ModelInputError
from brevitas_models.sparsity import TopKSparsity, set_sparsity


def _x():
    # sample 0 holds magnitudes 7..12, sample 1 magnitudes 1..6 (signs alternate)
    a = torch.tensor([[[7.0, -8.0, 9.0], [-10.0, 11.0, -12.0]],
                      [[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]]])
    return a


def test_batch_topk_keeps_int_k_over_the_whole_batch():
    # 12 entries, s = 0.4: k = int(0.6 * 12) = int(7.199999999999999) = 7: the 6 entries of
    # sample 0 (7..12) and the largest of sample 1 (|-6|).
    y = TopKSparsity(0.4, "batch")(_x())
    expect = torch.tensor([[[7.0, -8.0, 9.0], [-10.0, 11.0, -12.0]],
                           [[0.0, 0.0, 0.0], [0.0, 0.0, -6.0]]])
    assert torch.equal(y, expect)
    assert int((y != 0).sum()) == 7
    # the per-sample `tensor` granularity keeps ceil(0.6 * 6) = 4 of EACH sample (8 in all)
    t = TopKSparsity(0.4, "tensor")(_x())
    assert int((t != 0).sum()) == 8 and int((t[1] != 0).sum()) == 4


def test_batch_topk_rounds_down():
    # 7 entries at s = 0.5: int(3.5) = 3 kept (ceil would keep 4); at s = 0.9: int(0.7) = 0
    x = torch.tensor([[1.0, 7.0, -3.0, 5.0, -6.0, 2.0, 4.0]])
    assert torch.equal(TopKSparsity(0.5, "batch")(x), torch.tensor([[0.0, 7.0, 0.0, 5.0, -6.0, 0.0, 0.0]]))
    assert int((TopKSparsity(0.9, "batch")(x) != 0).sum()) == 0


def test_straight_through_passes_gradient_to_dropped_entries():
    w = torch.arange(1.0, 13.0).reshape(2, 2, 3)
    grads = {}
    for g in ("masked", "straight_through"):
        x = _x().requires_grad_(True)
        y = TopKSparsity(0.4, "batch", gradient=g)(x)
        (y * w).sum().backward()
        grads[g] = (y.detach(), x.grad)
    kept = torch.tensor([[[1.0, 1, 1], [1, 1, 1]], [[0, 0, 0], [0, 0, 1]]])
    assert torch.equal(grads["masked"][0], grads["straight_through"][0])  # same forward value
    assert torch.equal(grads["masked"][1], w * kept)                      # d/dx = mask
    assert torch.equal(grads["straight_through"][1], w)                   # d/dx = 1 everywhere


def test_straight_through_with_token_granularity():
    x = torch.tensor([[3.0, -1.0, 0.5, -4.0]], requires_grad=True)
    y = TopKSparsity(0.5, "token", gradient="straight_through")(x)
    y.sum().backward()
    assert torch.equal(y.detach(), torch.tensor([[3.0, 0.0, 0.0, -4.0]]))
    assert torch.equal(x.grad, torch.ones(1, 4))


def test_gradient_switch_is_checked_and_set_model_wide():
    with pytest.raises(ModelInputError, match="gradient must be one of masked, straight_through, got 'ste'"):
        TopKSparsity(0.1, gradient="ste")
    model = nn.Sequential(TopKSparsity(0.1), TopKSparsity(0.2))
    assert set_sparsity(model, 0.3, "batch", gradient="straight_through") == 2
    assert [(m.sparsity, m.granularity, m.gradient) for m in model] == [(0.3, "batch", "straight_through")] * 2
    with pytest.raises(ModelInputError, match="gradient"):
        set_sparsity(model, 0.3, gradient="none")
