"""Unit tests of the training parts: schedule, data order, losses, stage parameter selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tatvpr_hw.errors import UserError
from tatvpr_hw.training.data import StepBatchSampler, steps_per_epoch
from tatvpr_hw.training.losses import MultiSimilarity, distill_loss, match_grid
from tatvpr_hw.training.modules import resolve_layers, step_sparsity, trainable_names
from tatvpr_hw.training.schedule import warmup_cosine_factor


def test_warmup_then_cosine():
    f = [warmup_cosine_factor(s, 4, 20) for s in range(25)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == 1.0 and math.isclose(f[12], 0.5) and f[20] == 0.0 and f[24] == 0.0
    assert all(a >= b for a, b in zip(f[4:], f[5:]))  # non-increasing after warm-up
    assert warmup_cosine_factor(20, 0, 20, min_ratio=0.1) == pytest.approx(0.1)


def _drain(sampler, n):
    out = []
    while len(out) < n:
        for b in sampler:
            out.append(b)
            if len(out) == n:
                break
    return out


def test_sampler_resume_at_any_step_matches_uninterrupted():
    full = _drain(StepBatchSampler(10, 3, seed=7), 9)  # 3 steps/epoch, 3 epochs
    for start in range(9):
        resumed = _drain(StepBatchSampler(10, 3, seed=7, start_step=start), 9 - start)
        assert resumed == full[start:]
    # epochs are different permutations, each place at most once per epoch
    for e in range(3):
        places = [p for b in full[3 * e:3 * e + 3] for p, _ in b]
        assert len(set(places)) == 9
    assert full[:3] != full[3:6]
    assert _drain(StepBatchSampler(10, 3, seed=8), 3) != full[:3]


def test_sampler_ranks_are_disjoint_and_cover_the_epoch():
    ranks = [list(StepBatchSampler(12, 2, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert all(len(r) == 2 for r in ranks)  # 12 places / (2 x 3)
    seen = [p for r in ranks for b in r for p, _ in b]
    assert sorted(seen) == list(range(12))


def test_too_few_places_is_a_clear_error():
    with pytest.raises(UserError, match="places_per_batch"):
        steps_per_epoch(5, 4, world_size=2)


def test_match_grid_keeps_prefix_and_resamples_patches():
    torch.manual_seed(0)
    x = torch.randn(2, 1 + 4 * 4, 8)
    assert match_grid(x, 1, (4, 4), (4, 4)) is x
    y = match_grid(x, 1, (4, 4), (2, 2))
    assert y.shape == (2, 1 + 4, 8)
    assert torch.equal(y[:, 0], x[:, 0])
    # a constant patch map stays constant under bilinear resampling
    c = torch.cat([x[:, :1], torch.full((2, 16, 8), 3.0)], dim=1)
    assert torch.allclose(match_grid(c, 1, (4, 4), (6, 6))[:, 1:], torch.tensor(3.0))
    with pytest.raises(UserError, match="grid"):
        match_grid(x, 1, (3, 3), (2, 2))


def test_distill_loss_is_sum_of_layer_mse():
    torch.manual_seed(0)
    t = [torch.randn(2, 5, 4) for _ in range(2)]
    assert distill_loss(t, t, num_prefix=1, student_grid=(2, 2), teacher_grid=(2, 2)) == 0
    s = [t[0] + 1.0, t[1] + 2.0]
    loss = distill_loss(s, t, num_prefix=1, student_grid=(2, 2), teacher_grid=(2, 2))
    assert loss.item() == pytest.approx(1.0 + 4.0)
    with pytest.raises(UserError):
        distill_loss(s[:1], t, num_prefix=1, student_grid=(2, 2), teacher_grid=(2, 2))


def test_multi_similarity_prefers_separated_places():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(2)
    crit = MultiSimilarity()
    good = torch.nn.functional.normalize(torch.eye(8)[labels * 2] + 0.05 * torch.randn(8, 8), dim=1)
    bad = torch.nn.functional.normalize(torch.randn(8, 8), dim=1)
    assert crit(good, labels)[0] < crit(bad, labels)[0]
    x = bad.clone().requires_grad_(True)
    crit(x, labels)[0].backward()
    assert x.grad.abs().sum() > 0


def test_step_sparsity_in_range_and_reproducible():
    draws = [step_sparsity(3, s, (0.1, 0.6)) for s in range(200)]
    assert all(0.1 <= d <= 0.6 for d in draws)
    assert draws == [step_sparsity(3, s, (0.1, 0.6)) for s in range(200)]
    assert np.std(draws) > 0.1  # spread over the range (uniform: 0.144)
    assert step_sparsity(3, 5, (0.3, 0.3)) == 0.3


def test_resolve_layers():
    assert resolve_layers("all", 4) == [0, 1, 2, 3]
    assert resolve_layers([3, -1, 0], 4) == [0, 3]
    with pytest.raises(UserError, match="block 4 does not exist"):
        resolve_layers([4], 4)


@pytest.fixture(scope="module")
def student():
    from brevitas_models.model import build_model
    from tatvpr_hw.config import ModelConfig

    return build_model(ModelConfig(teacher_img_size=28, student_img_size=28), student=True)


def test_finetune_trains_head_and_last_blocks_only(student):
    names = trainable_names(student, "finetune", trainable_blocks=2)
    depth = len(student.backbone.blocks)
    assert any(n.startswith("head.") for n in names)
    blocks = {int(n.split(".")[2]) for n in names if n.startswith("backbone.blocks.")}
    assert blocks == {depth - 2, depth - 1}
    assert not any(n.startswith(("backbone.patch_embed", "backbone.pos_embed", "backbone.cls_token"))
                   for n in names)
    head_only = trainable_names(student, "finetune", trainable_blocks=0)
    assert head_only and all(n.startswith("head.") for n in head_only)
    everything = set(trainable_names(student, "finetune", trainable_blocks=-1))
    assert "backbone.patch_embed.proj.weight" in everything


def test_distill_trains_backbone_up_to_last_layer(student):
    names = trainable_names(student, "distill", distill_layers=[0, 1])
    assert not any(n.startswith("head.") for n in names)
    blocks = {int(n.split(".")[2]) for n in names if n.startswith("backbone.blocks.")}
    assert blocks == {0, 1}
    assert "backbone.patch_embed.proj.weight" in names
