"""Top-k activation sparsity: exact kept counts, per-tensor mode, runtime changes, gradients."""

import math

import pytest
import torch
from torch import nn

from brevitas_models.sparsity import (TopKSparsity, get_sparsity, kept_count, set_sparsity,
                                      sparsity_context)
from tatvpr_hw.errors import UserError


@pytest.mark.parametrize("c", [1, 7, 10, 192, 768])
@pytest.mark.parametrize("s", [0.0, 0.1, 0.2, 0.4, 0.6, 0.95])
def test_kept_count_per_token_is_exact(c, s):
    torch.manual_seed(0)
    x = torch.randn(3, 5, c)
    y = TopKSparsity(s, "token")(x)
    k = max(1, math.ceil(round((1 - s) * c, 9)))
    assert kept_count(c, s) == k
    assert torch.equal((y != 0).sum(-1), torch.full((3, 5), k))
    # the kept entries are the largest |x| of each token and keep their values
    kept = y != 0
    assert torch.equal(y[kept], x[kept])
    smallest_kept = torch.where(kept, x.abs(), torch.inf).amin(-1)
    largest_dropped = torch.where(kept, -torch.inf, x.abs()).amax(-1)
    assert torch.all(smallest_kept >= largest_dropped)


def test_kept_count_float_edge():
    # (1 - 0.4) * 10 = 6.000000000000001 in floating point: must keep 6, not 7
    assert kept_count(10, 0.4) == 6
    assert kept_count(10, 0.45) == 6
    assert kept_count(3, 0.99) == 1


def test_ties_still_keep_exactly_k():
    x = torch.ones(2, 4, 10)
    y = TopKSparsity(0.5)(x)
    assert torch.equal((y != 0).sum(-1), torch.full((2, 4), 5))


def test_per_tensor_mode_is_topk_over_each_sample():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 8)
    x[0, 0] *= 50  # one loud token in sample 0 takes most of its budget
    s = 0.75
    y = TopKSparsity(s, "tensor")(x)
    k = kept_count(6 * 8, s)
    for b in range(2):
        assert int((y[b] != 0).sum()) == k
        thr = x[b].abs().flatten().topk(k).values[-1]
        assert torch.equal(y[b] != 0, x[b].abs() >= thr)
    # per-token counts differ in tensor mode (the loud token keeps all 8 channels)
    assert int((y[0, 0] != 0).sum()) == 8
    assert len(set((y[0] != 0).sum(-1).tolist())) > 1
    # samples are independent of each other
    y1 = TopKSparsity(s, "tensor")(x[1:])
    assert torch.equal(y1, y[1:])


def test_gradient_reaches_kept_entries_only():
    torch.manual_seed(2)
    x = torch.randn(4, 16, requires_grad=True)
    m = TopKSparsity(0.5)
    y = m(x)
    g = torch.randn_like(y)
    y.backward(g)
    kept = (y != 0)
    assert torch.equal(x.grad[kept], g[kept])
    assert torch.all(x.grad[~kept] == 0)


def test_zero_sparsity_is_identity():
    x = torch.randn(2, 3, 5)
    assert torch.equal(TopKSparsity(0.0)(x), x)


@pytest.mark.parametrize("bad", [1.0, -0.1, 2, "x", float("nan")])
def test_bad_sparsity_rejected(bad):
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        TopKSparsity(bad)
    with pytest.raises(UserError):
        set_sparsity(nn.Sequential(TopKSparsity()), bad)


def test_bad_granularity_rejected():
    with pytest.raises(UserError, match="token, tensor"):
        TopKSparsity(0.1, "channel")


def test_set_sparsity_on_whole_model_at_runtime():
    torch.manual_seed(3)
    model = nn.Sequential(TopKSparsity(), nn.Linear(20, 20), TopKSparsity(), nn.Linear(20, 20))
    params_before = [p.data_ptr() for p in model.parameters()]
    x = torch.randn(5, 20)
    y0 = model(x)
    assert get_sparsity(model) == 0.0
    assert set_sparsity(model, 0.6) == 2
    assert get_sparsity(model) == 0.6
    y6 = model(x)
    assert not torch.allclose(y0, y6)
    assert [p.data_ptr() for p in model.parameters()] == params_before
    with sparsity_context(model, 0.0):
        assert torch.equal(model(x), y0)
    assert get_sparsity(model) == 0.6
    set_sparsity(model, 0.3, granularity="tensor")
    assert all(m.granularity == "tensor" for m in model if isinstance(m, TopKSparsity))
    model[0].sparsity = 0.1
    with pytest.raises(UserError, match="different sparsities"):
        get_sparsity(model)
    assert get_sparsity(nn.Linear(2, 2)) is None
