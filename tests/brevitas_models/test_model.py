"""VPRModel face and build_model on the tiny configuration."""

from __future__ import annotations

import pytest
import torch

from brevitas_models.model import VPRModel, build_model
from tatvpr_hw.config import ModelConfig, load_config
from brevitas_models.errors import ModelInputError

TINY = load_config("configs/tiny.yaml").model


def _cfg(head: str = "boq", **kw) -> ModelConfig:
    data = TINY.model_dump()
    data["head"] = {"name": head, "preset": "tiny", "overrides": {}}
    data.update(kw)
    return ModelConfig.model_validate(data)


def _images(b: int = 2, px: int = 98, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, px, px, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("head,dim", [("boq", 512), ("salad", 288), ("mixvpr", 256), ("cls", 192)])
def test_teacher_face_every_head(head, dim):
    torch.manual_seed(0)
    model = build_model(_cfg(head), student=False).eval()
    assert isinstance(model, VPRModel)
    assert model.descriptor_dim == dim and model.img_size == 98
    x = _images()
    with torch.no_grad():
        tokens = model.forward_features(x)
        y = model(x)
    p = model.backbone.num_prefix_tokens
    assert tokens.shape == (2, p + 49, model.backbone.embed_dim)
    assert y.shape == (2, dim)
    assert torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(model.forward_head(tokens), y, atol=1e-6)


def test_final_norm_follows_the_head_release():
    """BoQ sees the last block's tokens (no final norm, as released); CLS sees normed tokens."""
    torch.manual_seed(0)
    x = _images(1)
    boq = build_model(_cfg("boq"), student=False).eval()
    cls = build_model(_cfg("cls"), student=False).eval()
    with torch.no_grad():
        raw = boq.forward_features(x)
        assert torch.allclose(boq.backbone.norm(raw), boq.backbone.forward_features(x), atol=1e-5)
        assert not torch.allclose(raw, boq.backbone.forward_features(x), atol=1e-3)
        assert torch.allclose(cls.forward_features(x), cls.backbone.forward_features(x))


def test_same_seed_same_descriptors():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_model(_cfg("boq"), student=False).eval()
        with torch.no_grad():
            outs.append(model(_images()))
    assert torch.equal(outs[0], outs[1])


def test_gradients_reach_backbone_and_head():
    torch.manual_seed(0)
    model = build_model(_cfg("salad"), student=False).train()
    model(_images()).sum().backward()
    assert model.backbone.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert model.head.dust_bin.grad is not None


def test_bad_inputs_named():
    model = build_model(_cfg("cls"), student=False)
    with pytest.raises(ModelInputError, match=r"images \[B, 3, H, W\]"):
        model(torch.randn(2, 98, 98))
    with pytest.raises(ModelInputError, match="not a multiple of the patch size 14"):
        model(torch.randn(1, 3, 100, 98))
    with pytest.raises(ModelInputError, match="unknown backbone"):
        build_model(_cfg("cls", backbone="vit_huge_patch99"), student=False)
    with pytest.raises(ModelInputError, match="cannot tell the patch grid"):
        model.forward_head(torch.randn(1, 1 + 7 * 5, 192))
    # an explicit grid works for non-square inputs
    y = model.forward_head(torch.randn(1, 1 + 7 * 5, 192), grid_hw=(7, 5))
    assert y.shape == (1, 192)


def test_student_build_sets_default_sparsity_and_ternary_head():
    from brevitas_models.quant import SparseTernaryLinear
    from brevitas_models.sparsity import get_sparsity

    data = _cfg("boq").model_dump()
    data["ternary"]["head"] = True
    data["sparsity"]["default"] = 0.3
    torch.manual_seed(0)
    student = build_model(ModelConfig.model_validate(data), student=True).eval()
    assert get_sparsity(student) == pytest.approx(0.3)
    ternary_in_head = {n for n, m in student.head.named_modules() if isinstance(m, SparseTernaryLinear)}
    assert {"fc", "boqs.0.encoder.linear1", "boqs.1.encoder.linear2"} <= ternary_in_head
    assert any(isinstance(m, SparseTernaryLinear) for m in student.backbone.blocks[0].modules())
    with torch.no_grad():
        y = student(_images())
    assert y.shape == (2, 512) and torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)


def test_register_backbone_prefix_tokens():
    torch.manual_seed(0)
    model = build_model(_cfg("salad", backbone="vit_small_patch14_reg4_dinov2", teacher_img_size=126),
                        student=False).eval()
    assert model.backbone.num_prefix_tokens == 5
    with torch.no_grad():
        tokens = model.forward_features(_images(1, 126))
        y = model.forward_head(tokens)
    assert tokens.shape == (1, 5 + 81, 384) and y.shape == (1, 288)
