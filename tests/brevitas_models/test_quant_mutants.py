"""Quantizer checks added for the mutants `make mutation` found alive (docs/testing.md)."""

import torch
from torch import nn

from brevitas_models.quant import Int8ActPerTensor, SparseTernaryLinear, act_quant


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
