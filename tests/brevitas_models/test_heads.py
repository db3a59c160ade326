"""Aggregation heads: published and tiny preset sizes, L2 norm, gradients, names, errors."""

from __future__ import annotations

import math

import pytest
import torch

from brevitas_models.heads import HEADS, PRESETS, create_head, head_presets
from brevitas_models.heads.salad import sinkhorn_log_transport
from brevitas_models.errors import ModelInputError

# (head, preset, D, grid, expected descriptor_dim) — the published sizes from the papers.
PAPER = [
    ("boq", "dinov2_boq", 768, (4, 4), 12288),     # 384 channels x 32 rows
    ("boq", "resnet50_boq", 1024, (3, 3), 16384),  # 512 x 32
    ("salad", "dinov2_salad", 768, (9, 9), 8448),  # 64 x 128 + 256 (needs >= 64 patches)
    ("mixvpr", "mixvpr_4096", 768, (4, 4), 4096),  # 1024 x 4
    ("cls", "paper", 768, (2, 2), 768),
]
TINY = [("boq", 512), ("salad", 288), ("mixvpr", 256), ("cls", 192)]


def _tokens(b: int, grid: tuple[int, int], d: int, prefix: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, prefix + grid[0] * grid[1], d, generator=g)


@pytest.mark.parametrize("name,preset,d,grid,dim", PAPER)
def test_published_preset_dims(name, preset, d, grid, dim):
    torch.manual_seed(0)
    head = create_head(name, preset, in_dim=d, grid_hw=grid).eval()
    with torch.no_grad():
        y = head(_tokens(2, grid, d), grid, 1)
    assert head.descriptor_dim == dim
    assert y.shape == (2, dim)
    assert torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)


def test_paper_alias_is_the_published_preset():
    assert PRESETS["boq"]["paper"] == PRESETS["boq"]["dinov2_boq"]
    assert PRESETS["salad"]["paper"] == PRESETS["salad"]["dinov2_salad"]
    assert PRESETS["mixvpr"]["paper"] == PRESETS["mixvpr"]["mixvpr_4096"]


@pytest.mark.parametrize("name,dim", TINY)
def test_tiny_presets_l2_and_gradients(name, dim):
    torch.manual_seed(0)
    grid = (7, 7)
    head = create_head(name, "tiny", in_dim=192, grid_hw=grid).train()
    x = _tokens(3, grid, 192).requires_grad_(True)
    y = head(x, grid, 1)
    assert y.shape == (3, dim) == (3, head.descriptor_dim)
    assert torch.allclose(y.norm(dim=1), torch.ones(3), atol=1e-5)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in head.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}.{pname}"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}.{pname}"


def test_cls_head_is_normalised_class_token():
    head = create_head("cls", "tiny", in_dim=16, grid_hw=(2, 2))
    x = _tokens(2, (2, 2), 16, prefix=5)  # class token + 4 registers
    y = head(x, (2, 2), 5)
    assert torch.allclose(y, x[:, 0] / x[:, 0].norm(dim=1, keepdim=True))


@pytest.mark.parametrize("name", ["boq", "salad", "mixvpr"])
def test_spatial_heads_ignore_register_tokens_and_read_patches(name):
    """Registers (prefix tokens 1..p-1) must not change the descriptor; patch tokens must."""
    torch.manual_seed(0)
    grid = (7, 7)
    head = create_head(name, "tiny", in_dim=32, grid_hw=grid).eval()
    x = _tokens(1, grid, 32, prefix=5)
    x2 = x.clone()
    x2[:, 1:5] = torch.randn(1, 4, 32)
    x3 = x.clone()
    x3[:, 5 + 10] += 3.0
    with torch.no_grad():
        y, y2, y3 = head(x, grid, 5), head(x2, grid, 5), head(x3, grid, 5)
    assert torch.allclose(y, y2, atol=1e-6)
    assert not torch.allclose(y, y3, atol=1e-4)


def test_same_seed_same_head():
    torch.manual_seed(3)
    a = create_head("boq", "tiny", in_dim=32, grid_hw=(3, 3))
    torch.manual_seed(3)
    b = create_head("boq", "tiny", in_dim=32, grid_hw=(3, 3))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_boq_parameter_names_follow_the_release():
    head = create_head("boq", "dinov2_boq", in_dim=768, grid_hw=(16, 16))
    sd = head.state_dict()
    expected = {
        "proj_c.weight": (384, 768, 3, 3), "proj_c.bias": (384,),
        "norm_input.weight": (384,), "fc.weight": (32, 128), "fc.bias": (32,),
        "boqs.1.queries": (1, 64, 384),
        "boqs.0.encoder.self_attn.in_proj_weight": (1152, 384),
        "boqs.0.encoder.linear1.weight": (1536, 384), "boqs.0.encoder.norm2.bias": (384,),
        "boqs.1.self_attn.out_proj.weight": (384, 384), "boqs.1.norm_q.weight": (384,),
        "boqs.1.cross_attn.in_proj_bias": (1152,), "boqs.1.norm_out.bias": (384,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("boqs.2.") for k in sd)


def test_salad_and_mixvpr_parameter_names_follow_the_releases():
    salad = create_head("salad", "dinov2_salad", in_dim=768, grid_hw=(16, 16)).state_dict()
    assert tuple(salad["token_features.0.weight"].shape) == (512, 768)
    assert tuple(salad["token_features.2.weight"].shape) == (256, 512)
    assert tuple(salad["cluster_features.3.weight"].shape) == (128, 512, 1, 1)
    assert tuple(salad["score.3.weight"].shape) == (64, 512, 1, 1)
    assert salad["dust_bin"].shape == ()
    # amaralibey/MixVPR models/aggregators/mixvpr.py, main.py's setting: MixVPR(in_channels=1024,
    # in_h=20, in_w=20, out_channels=1024, mix_depth=4, mlp_ratio=1, out_rows=4).state_dict()
    mix = create_head("mixvpr", "mixvpr_4096", in_dim=1024, grid_hw=(20, 20)).state_dict()
    official = {"channel_proj.weight": (1024, 1024), "channel_proj.bias": (1024,),
                "row_proj.weight": (4, 400), "row_proj.bias": (4,)}
    for i in range(4):
        official.update({f"mix.{i}.mix.0.weight": (400,), f"mix.{i}.mix.0.bias": (400,),
                         f"mix.{i}.mix.1.weight": (400, 400), f"mix.{i}.mix.1.bias": (400,),
                         f"mix.{i}.mix.3.weight": (400, 400), f"mix.{i}.mix.3.bias": (400,)})
    assert {k: tuple(v.shape) for k, v in mix.items()} == official


def test_sinkhorn_gives_each_token_unit_mass():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 5, 12, generator=g)
    logp = sinkhorn_log_transport(scores, torch.tensor(0.5), iters=3)
    assert logp.shape == (2, 6, 12)
    assert torch.allclose(logp.exp().sum(dim=1), torch.ones(2, 12), atol=1e-5)
    # more iterations drive the cluster rows to their marginal (m+n) * 1/(m+n) = 1
    logp = sinkhorn_log_transport(scores, torch.tensor(0.5), iters=200)
    assert torch.allclose(logp.exp()[:, :5].sum(dim=2), torch.ones(2, 5), atol=1e-3)
    assert math.isclose(logp.exp()[:, 5].sum(dim=1)[0].item(), 12 - 5, rel_tol=1e-3)


def test_unknown_names_are_rejected_clearly():
    with pytest.raises(ModelInputError, match=r"unknown head 'netvlad'.*boq, cls, mixvpr, salad"):
        create_head("netvlad", "tiny", in_dim=8, grid_hw=(2, 2))
    with pytest.raises(ModelInputError, match=r"unknown preset 'huge' for head 'boq'.*dinov2_boq"):
        create_head("boq", "huge", in_dim=8, grid_hw=(2, 2))
    with pytest.raises(ModelInputError, match=r"unknown override.*'rows'.*row_dim"):
        create_head("boq", "tiny", in_dim=8, grid_hw=(2, 2), overrides={"rows": 3})
    with pytest.raises(ModelInputError, match=r"in_dim"):
        create_head("boq", "tiny", in_dim=8, grid_hw=(2, 2), overrides={"in_dim": 3})
    with pytest.raises(ModelInputError, match="unknown head"):
        head_presets("gem")
    assert set(HEADS) == set(PRESETS) == {"boq", "salad", "mixvpr", "cls"}


def test_overrides_replace_preset_values():
    head = create_head("boq", "tiny", in_dim=32, grid_hw=(3, 3), overrides={"row_dim": 3})
    assert head.descriptor_dim == 64 * 3


def test_bad_inputs_are_rejected_clearly():
    head = create_head("mixvpr", "tiny", in_dim=16, grid_hw=(3, 3))
    with pytest.raises(ModelInputError, match=r"10 tokens but grid 2x2"):
        head(torch.randn(1, 10, 16), (2, 2), 1)
    with pytest.raises(ModelInputError, match=r"built for a 3x3 patch grid, got 2x2"):
        head(torch.randn(1, 5, 16), (2, 2), 1)
    with pytest.raises(ModelInputError, match=r"built for 16-d tokens"):
        head(torch.randn(1, 10, 8), (3, 3), 1)
    with pytest.raises(ModelInputError, match="needs a class token"):
        create_head("cls", "tiny", in_dim=16, grid_hw=(3, 3))(torch.randn(1, 9, 16), (3, 3), 0)
    with pytest.raises(ModelInputError, match="fewer than the 16 clusters"):
        create_head("salad", "tiny", in_dim=16, grid_hw=(3, 3))(torch.randn(1, 10, 16), (3, 3), 1)
    with pytest.raises(ModelInputError, match="divisible by num_heads"):
        create_head("boq", "tiny", in_dim=16, grid_hw=(3, 3), overrides={"num_heads": 5})


def test_preset_table_covers_every_preset():
    from brevitas_models.heads.__main__ import preset_rows
    rows = {(r["head"], r["preset"]): r for r in preset_rows()}
    assert set(rows) == {(h, p) for h, ps in PRESETS.items() for p in ps}
    assert rows[("boq", "dinov2_boq")]["descriptor_dim"] == 12288
    assert rows[("salad", "dinov2_salad")]["descriptor_dim"] == 8448
    assert rows[("cls", "paper")]["params"] == 0 and rows[("boq", "tiny")]["params"] > 0
