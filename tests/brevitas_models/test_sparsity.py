"""Top-k activation sparsity: exact kept counts, per-tensor mode, runtime changes, gradients."""

import math

import pytest
import torch
from torch import nn

from brevitas_models.sparsity import (TopKSparsity, get_sparsity, kept_count, set_sparsity,
                                      sparsity_context)
from brevitas_models.errors import ModelInputError as UserError  # the models raise their own error type


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
    with pytest.raises(UserError, match="token, bank, tensor"):
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


# ------------------------------------------------------------------------------- bank granularity

def _bank(s, banks):
    return TopKSparsity(s, "bank", banks)


def test_bank_mask_hand_worked_c8_b2():
    # banks: b0 = channels {0, 2, 4, 6} (|x| 8, 7, 6, 5), b1 = {1, 3, 5, 7} (|x| 1, 2, 3, 4);
    # s = 0.5 keeps ceil(0.5 * 4) = 2 per bank: b0 keeps 0, 2; b1 keeps 5, 7.
    x = torch.tensor([[-8.0, 1.0, 7.0, -2.0, 6.0, 3.0, -5.0, 4.0]])
    y = _bank(0.5, 2)(x)
    assert (y != 0).int().tolist() == [[1, 0, 1, 0, 0, 1, 0, 1]]
    assert torch.equal(y, x * torch.tensor([[1.0, 0, 1, 0, 0, 1, 0, 1]]))
    # the token granularity keeps the 4 largest overall: all of bank 0
    assert (TopKSparsity(0.5, "token")(x) != 0).int().tolist() == [[1, 0, 1, 0, 1, 0, 1, 0]]


def test_bank_mask_hand_worked_uneven_groups_c7_b3():
    # C = 7 = 2 * 3 + 1: b0 = {0, 3, 6} (3 channels, keeps ceil(1.5) = 2), b1 = {1, 4} and
    # b2 = {2, 5} (2 channels, keep 1 each). |x|: b0 1, 3, 7 -> 3, 6; b1 9, 2 -> 1; b2 5, 8 -> 5.
    x = torch.tensor([1.0, -9.0, 5.0, 3.0, 2.0, -8.0, 7.0])
    y = _bank(0.5, 3)(x)
    assert (y != 0).int().tolist() == [0, 1, 0, 1, 0, 1, 1]


def test_bank_mask_fewer_channels_than_banks_keeps_all():
    # C = 3 < B = 4: three one-channel groups (keep 1 each), one empty group
    x = torch.tensor([[0.1, -0.2, 0.3]])
    assert torch.equal(_bank(0.9, 4)(x), x)


def _groups_expected(c, banks, s):
    # group b holds channels b, b + B, b + 2B, ... < C; keeps ceil((1 - s) * size) (>= 1 if size > 0)
    out = []
    for b in range(banks):
        size = len(range(b, c, banks))
        out.append(0 if size == 0 else max(1, math.ceil(round((1 - s) * size, 9))))
    return out


@pytest.mark.parametrize("c,banks", [(192, 32), (768, 32), (100, 32), (10, 4), (64, 1), (5, 8)])
@pytest.mark.parametrize("s", [0.1, 0.4, 0.6, 0.95])
def test_bank_kept_count_per_group_and_largest_kept(c, banks, s):
    torch.manual_seed(4)
    x = torch.randn(2, 3, c)
    y = _bank(s, banks)(x)
    kept = y != 0
    expected = _groups_expected(c, banks, s)
    for b in range(banks):
        grp_kept = kept[..., b::banks]
        assert torch.equal(grp_kept.sum(-1), torch.full((2, 3), expected[b])), (b, expected[b])
        if grp_kept.shape[-1] == 0:
            continue
        a = x[..., b::banks].abs()
        smallest_kept = torch.where(grp_kept, a, torch.inf).amin(-1)
        largest_dropped = torch.where(grp_kept, -torch.inf, a).amax(-1)
        assert torch.all(smallest_kept >= largest_dropped)
    assert torch.equal(y[kept], x[kept])


def test_bank_with_one_bank_is_the_token_granularity():
    torch.manual_seed(5)
    x = torch.randn(4, 7, 96)
    assert torch.equal(_bank(0.4, 1)(x), TopKSparsity(0.4, "token")(x))


def test_bank_ties_keep_exactly_k_per_group():
    x = torch.ones(2, 4, 10)
    y = _bank(0.5, 2)(x)  # two groups of 5 channels, ceil(2.5) = 3 each
    assert torch.equal((y[..., 0::2] != 0).sum(-1), torch.full((2, 4), 3))
    assert torch.equal((y[..., 1::2] != 0).sum(-1), torch.full((2, 4), 3))


def test_bank_gradient_reaches_kept_entries_only():
    torch.manual_seed(6)
    x = torch.randn(3, 5, 24, requires_grad=True)
    y = _bank(0.6, 4)(x)
    g = torch.randn_like(y)
    y.backward(g)
    kept = y != 0
    assert 0 < int(kept.sum()) < kept.numel()
    assert torch.equal(x.grad[kept], g[kept])
    assert torch.all(x.grad[~kept] == 0)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True, None])
def test_bad_banks_rejected(bad):
    with pytest.raises(UserError, match="banks must be an integer >= 1"):
        TopKSparsity(0.1, "bank", bad)
    if bad is not None:
        with pytest.raises(UserError, match="banks"):
            set_sparsity(nn.Sequential(TopKSparsity()), 0.1, banks=bad)


def test_set_sparsity_and_context_switch_granularity_at_runtime():
    torch.manual_seed(7)
    model = nn.Sequential(TopKSparsity(0.0), nn.Linear(16, 16))
    set_sparsity(model, 0.5, "bank", banks=4)
    assert model[0].granularity == "bank" and model[0].banks == 4
    with sparsity_context(model, 0.25, "token"):
        assert (model[0].sparsity, model[0].granularity) == (0.25, "token")
    assert (model[0].sparsity, model[0].granularity, model[0].banks) == (0.5, "bank", 4)
    with pytest.raises(UserError, match="token, bank, tensor"):
        set_sparsity(model, 0.5, "channel")


def test_bank_mask_exports_as_standard_onnx_ops(tmp_path):
    import onnx  # installed by the dev extra: a missing reference runtime fails, never skips
    import onnxruntime as ort
    torch.manual_seed(8)
    m = _bank(0.4, 4).eval()
    x = torch.randn(1, 6, 22)  # 22 = 5 * 4 + 2: both group sizes
    path = tmp_path / "bank.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), opset_version=17, dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"TopK", "ScatterElements"} <= ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert (got != 0).tolist() == (m(x) != 0).tolist()
    assert got.tolist() == m(x).tolist()


def test_build_model_threads_granularity_and_banks():
    from brevitas_models.model import build_model
    from tatvpr_hw.config import parse_config

    cfg = parse_config({"model": {"backbone": "vit_tiny_patch14_dinov2", "student_img_size": 28,
                                  "teacher_img_size": 28, "sparsity": {"granularity": "bank", "banks": 16}}})
    student = build_model(cfg.model, student=True)
    mods = [m for m in student.modules() if isinstance(m, TopKSparsity)]
    assert mods and all(m.granularity == "bank" and m.banks == 16 for m in mods)


def test_config_rejects_bad_banks_and_an_eval_list_without_the_trained_granularity():
    from tatvpr_hw.config import parse_config

    with pytest.raises(UserError, match=r"model\.sparsity\.banks = 0"):
        parse_config({"model": {"sparsity": {"banks": 0}}})
    with pytest.raises(UserError, match=r"lacks the model's trained granularity"):
        parse_config({"model": {"sparsity": {"granularity": "bank"}}, "eval": {"granularities": ["token"]}})
    with pytest.raises(UserError, match=r"eval\.granularities"):
        parse_config({"eval": {"granularities": ["token", "channel"]}})
    cfg = parse_config({})
    assert cfg.eval.granularities == ["token", "bank", "tensor"] and cfg.model.sparsity.banks == 32
