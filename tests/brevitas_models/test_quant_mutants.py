"""Quantizer checks added for the mutants `make mutation` found alive (docs/testing.md)."""

import pytest
import torch
from torch import nn

from brevitas_models.quant import Int8ActPerTensor, SparseTernaryLinear, act_quant
from brevitas_models.errors import ModelInputError as UserError  # the models raise their own error type


def test_act_quant_default_is_the_int8_quantizer():
    assert act_quant() is Int8ActPerTensor
    assert act_quant(8) is Int8ActPerTensor
    assert act_quant(4) is not Int8ActPerTensor


def test_from_linear_copies_bias_or_its_absence():
    torch.manual_seed(0)
    with_bias = nn.Linear(4, 3)
    m = SparseTernaryLinear.from_linear(with_bias)
    assert m.bias is not None and torch.equal(m.bias, with_bias.bias)
    assert torch.equal(m.weight, with_bias.weight)
    no_bias = SparseTernaryLinear.from_linear(nn.Linear(4, 3, bias=False))
    assert no_bias.bias is None


def test_from_linear_keeps_dtype_and_device():
    lin = nn.Linear(4, 3).to(torch.float64)
    m = SparseTernaryLinear.from_linear(lin)
    assert m.weight.dtype == torch.float64 and m.bias.dtype == torch.float64
    assert torch.equal(m.weight, lin.weight)
    # a second device without an accelerator: the meta device (shapes only)
    meta = SparseTernaryLinear.from_linear(nn.Linear(4, 3, device="meta"))
    assert meta.weight.device.type == "meta" and meta.bias.device.type == "meta"


@pytest.mark.parametrize("bits", [2, 4, 8, 9, 16])
def test_input_scale_follows_act_bits(bits):
    # threshold t = 3.5: scale = t / (2**(bits-1) - 1) -> 3.5, 0.5, 3.5/127, 3.5/255, 3.5/32767
    layer = SparseTernaryLinear(4, 2, act_bits=bits)
    with torch.no_grad():
        layer.input_threshold.fill_(3.5)
    assert layer.input_scale().item() == pytest.approx(3.5 / (2 ** (bits - 1) - 1), rel=1e-6)


def test_act_bits_range_ends():
    for bits in (2, 16):
        SparseTernaryLinear(4, 2, act_bits=bits)
    for bits in (1, 17):
        with pytest.raises(UserError, match=f"^activation bits must be in 2..16, got {bits}$"):
            act_quant(bits)


def test_bank_settings_reach_the_topk_module():
    layer = SparseTernaryLinear(8, 2, sparsity=0.5, granularity="bank", banks=4)
    assert (layer.sparsity.sparsity, layer.sparsity.granularity, layer.sparsity.banks) == (0.5, "bank", 4)


def test_extra_repr_states_scale_granularity_and_bits():
    assert SparseTernaryLinear(4, 2, per_channel=True, act_bits=6).extra_repr() == "per_channel=True, act_bits=6"
    assert SparseTernaryLinear(4, 2).extra_repr() == "per_channel=False, act_bits=8"
