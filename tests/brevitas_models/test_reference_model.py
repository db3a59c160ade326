"""The Sparse-TeTRA reference student's model switches (configs/sparse_tetra_reference.yaml):
ViT-B/16 structure, block 11's FFN float and dense, no activation quantization, the
authors' FLOP convention. Expected values are worked by hand here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brevitas_models.config import ModelConfig, TernaryConfig
from brevitas_models.errors import ModelInputError
from brevitas_models.model import build_model
from brevitas_models.ops import authors_flops, authors_rule
from brevitas_models.quant import SparseTernaryLinear, ternary_layers
from brevitas_models.sparsity import TopKSparsity
from brevitas_models.vit import create_backbone

REF_TERNARY = TernaryConfig(act_quant=False, float_ffn_blocks=[-1])


def test_reference_vit_b16_has_46_ternary_linears_197_tokens_and_the_reference_param_count():
    b = create_backbone("vit_base_patch16_sparse_tetra", 224, ternary=REF_TERNARY, device="meta")
    names = [n for n, _ in ternary_layers(b)]
    assert len(names) == 12 * 4 - 2 == 46
    assert "blocks.11.mlp.fc1" not in names and "blocks.11.attn.qkv" in names and "blocks.10.mlp.fc2" in names
    assert b.forward_features(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 14 * 14 + 1, 768)
    # The reference model (model/models.py SparseTernaryViT, model/blocks.py), by hand:
    #  patch embedding LN(768) + Linear(768, 768) + LN(768)        = 1536 + 590592 + 1536 = 593664
    #  position embedding 197 x 768 + class token 768              = 151296 + 768
    #  blocks 0..10: attention LN 1536 + qkv 768*2304 (no bias) + out 768*768+768 = 2361600
    #                FFN LN 1536 + fc1 768*3072+3072 + mid LN 2*3072 + fc2 3072*768+768 = 4730112
    #  block 11: attention 2361600 + FFN without the mid LN 4723968; final norm 1536
    expect = 593664 + 151296 + 768 + 11 * (2361600 + 4730112) + 2361600 + 4723968 + 1536
    assert expect == 85_841_664
    assert sum(p.numel() for p in create_backbone("vit_base_patch16_sparse_tetra", 224, device="meta").parameters()) == expect
    # the project's default student (ViT-B/14, every block linear ternary): 48
    assert len(ternary_layers(create_backbone("vit_base_patch14_dinov2", 224, ternary=TernaryConfig(), device="meta"))) == 48


def test_float_ffn_block_keeps_float_dense_linears():
    b = create_backbone("vit_tiny_patch16_sparse_tetra", 112, ternary=REF_TERNARY)
    for lin in ("fc1", "fc2"):
        m = getattr(b.blocks[3].mlp, lin)
        assert type(m) is nn.Linear and m.weight.dtype == torch.float32
        assert not any(isinstance(x, TopKSparsity) for x in m.modules())
        # float weights: not only three values
        assert m.weight.unique().numel() > 3
    assert isinstance(b.blocks[2].mlp.fc1, SparseTernaryLinear) and isinstance(b.blocks[3].attn.qkv, SparseTernaryLinear)
    assert len(ternary_layers(b)) == 4 * 4 - 2
    with pytest.raises(ModelInputError, match="float_ffn_blocks: block 4 does not exist; the backbone has 4 blocks"):
        create_backbone("vit_tiny_patch16_sparse_tetra", 112, ternary=TernaryConfig(float_ffn_blocks=[4]))


def test_no_activation_quantization_feeds_the_float_topk_output():
    torch.manual_seed(0)
    lin = SparseTernaryLinear(6, 3, sparsity=0.5)
    with torch.no_grad():
        lin.input_threshold.fill_(0.5)  # coarse int8 step 0.5 / 127 when quantizing
    x = torch.tensor([[0.3, -0.011, 0.2, -0.4, 0.013, 0.1]])
    w = lin.linear.weight.detach()
    gamma = w.abs().mean()
    wq = gamma * torch.clamp(torch.round(w / gamma), -1, 1)   # absmean ternary weights by hand
    xs = torch.tensor([[0.3, 0.0, 0.2, -0.4, 0.0, 0.0]])       # top ceil(0.5 * 6) = 3 of |x|
    expect_float = xs @ wq.T + lin.linear.bias.detach()
    from brevitas_models.vit import set_act_quant

    assert set_act_quant(lin, False) == 1
    assert torch.allclose(lin(x), expect_float, atol=1e-6)
    assert float(lin.input_scale()) == pytest.approx(0.5 / 127)  # still readable for tracing
    set_act_quant(lin, True)
    q = torch.round(xs / (0.5 / 127)) * (0.5 / 127)             # int8-rounded inputs
    assert torch.allclose(lin(x), q @ wq.T + lin.linear.bias.detach(), atol=1e-6)
    assert not torch.allclose(lin(x), expect_float, atol=1e-6)


def test_student_backbone_and_head_switches():
    cfg = ModelConfig(backbone="vit_tiny_patch14_dinov2", teacher_img_size=98, student_img_size=112,
                      student_backbone="vit_tiny_patch16_sparse_tetra", ternary=REF_TERNARY,
                      student_head={"name": "boq", "preset": "tiny", "overrides": {"num_queries": 8},
                                    "final_norm": "always"},
                      sparsity={"granularity": "batch", "gradient": "straight_through"})
    s, t = build_model(cfg, student=True), build_model(cfg, student=False)
    assert s.backbone.patch_size == 16 and s.grid_hw() == (7, 7) and t.grid_hw() == (7, 7)
    assert s.final_norm is True and t.final_norm is False      # BoQ's release: no final norm
    # BoQ's row projection takes num_layers x num_queries = 2 x 8 (student) vs 2 x 16 (teacher);
    # the descriptor is proj_channels x row_dim = 64 x 8 = 512 for both
    assert (s.head.fc.in_features, t.head.fc.in_features) == (16, 32)
    assert s.descriptor_dim == t.descriptor_dim == 512
    assert {(m.granularity, m.gradient) for m in s.modules() if isinstance(m, TopKSparsity)} == \
        {("batch", "straight_through")}


def test_authors_rule_scales_addmm_and_linear_events_only():
    ev = [("aten::addmm", 1000), ("aten::linear", 0), ("aten::mm", 300), ("aten::bmm", 200), ("aten::mul", 7)]
    r = authors_rule(ev, 0.4)
    assert r["authors_flops"] == pytest.approx(1000 * 0.6 + 300 + 200 + 7)


def test_authors_flops_on_a_two_layer_model_by_hand():
    # Linear(4, 3) with bias on 5 tokens runs as aten::addmm: 2 * 5 * 4 * 3 = 120 FLOPs (scaled);
    # Linear(3, 2) without bias runs as aten::mm: 2 * 5 * 3 * 2 = 60 FLOPs (not scaled).
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))
    x = torch.randn(2, 5, 4)  # only the first image is profiled, as the reference's batch of 1
    assert authors_flops(m, x, 0.0)["authors_flops"] == pytest.approx(180.0)
    assert authors_flops(m, x, 0.5)["authors_flops"] == pytest.approx(120 * 0.5 + 60)


def test_sparse_tetra_init_draws_tokens_from_n01_and_layers_from_pytorch_defaults():
    """The reference's random student (model/models.py: torch.randn position embedding and class
    token, nn.Linear / nn.LayerNorm defaults) vs timm's init that create_backbone gives."""
    from brevitas_models.vit import init_sparse_tetra_

    torch.manual_seed(0)
    b = create_backbone("vit_tiny_patch16_sparse_tetra", 112, ternary=REF_TERNARY).requires_grad_(False)
    fc1 = b.blocks[0].mlp.fc1.linear            # ternary: the latent float weights
    ffn3 = b.blocks[3].mlp.fc1                  # block 3's float FFN
    # timm's: pos embedding std 0.02 (7 x 7 + 1 = 50 x 192 values), class token std 1e-6, zero biases
    assert b.pos_embed.shape == (1, 50, 192)
    assert 0.018 < float(b.pos_embed.std()) < 0.022 and float(b.cls_token.abs().max()) < 1e-4
    assert float(fc1.bias.abs().max()) == 0.0 and 0.018 < float(fc1.weight.std()) < 0.022
    init_sparse_tetra_(b, torch.Generator().manual_seed(1))
    # N(0, 1): 9600 draws, std within 5 standard errors (1 / sqrt(2 * 9600) = 0.007) of 1
    assert abs(float(b.pos_embed.std()) - 1.0) < 0.036 and abs(float(b.pos_embed.mean())) < 0.05
    assert 0.7 < float(b.cls_token.std()) < 1.3                     # 192 draws
    # nn.Linear default: weight and bias U(-1/sqrt(fan_in), +1/sqrt(fan_in)) (fan_in 192: 0.0722)
    for lin in (fc1, ffn3, b.blocks[2].attn.qkv.linear, b.patch_embed.proj):
        fan_in = lin.in_features
        bound = 1 / fan_in ** 0.5
        assert float(lin.weight.abs().max()) <= bound
        # uniform: std = bound / sqrt(3) (0.0417 at fan_in 192, twice timm's 0.02)
        assert abs(float(lin.weight.std()) - bound / 3 ** 0.5) < 0.05 * bound
        if lin.bias is not None:
            assert float(lin.bias.abs().max()) <= bound and float(lin.bias.abs().max()) > 0.5 * bound
    assert b.blocks[2].attn.qkv.linear.bias is None                 # the reference's qkv has no bias
    ln = b.blocks[1].mlp.norm
    assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and torch.equal(ln.bias, torch.zeros_like(ln.bias))
    # the generator fixes the tokens
    again = create_backbone("vit_tiny_patch16_sparse_tetra", 112, ternary=REF_TERNARY)
    init_sparse_tetra_(again, torch.Generator().manual_seed(1))
    assert torch.equal(again.pos_embed, b.pos_embed) and torch.equal(again.cls_token, b.cls_token)
