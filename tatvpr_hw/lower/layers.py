"""One linear layer of the student as a standalone, exportable Brevitas module.

The hls4ml and FINN routes lower single GEMMs. :func:`standalone_linear` rebuilds a layer as a
``brevitas.nn.QuantLinear`` with exactly the student's quantizers and parameters (ternary
weight quantizer and its gamma, the int8 input quantizer and its calibrated threshold, the
bias); its input is the layer's activation *after* the top-k (the sparsity is applied by the
activation stream in hardware). Optionally an int8 output quantizer (FINN's MVAU emits int8).

A float ``nn.Linear`` of the aggregation head (``ternary.head: false``) is quantized for
export: int8 per-tensor weights, int8 input threshold = max |x| of the real activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tatvpr_hw.errors import UserError


@dataclass
class LayerExport:
    """A standalone layer and what the routes need to know about it."""

    name: str
    module: nn.Module  # brevitas QuantLinear, eval mode
    inputs: torch.Tensor  # [rows, K] float, already sparsified
    ternary: bool
    weight_bits: int
    act_bits: int
    in_features: int
    out_features: int
    float_output: torch.Tensor | None = None  # the float layer's output (head nn.Linear only)
    tokens: int = 1  # M: rows of one image's input (tokens of a [B, M, K] activation)

    @torch.no_grad()
    def reference(self) -> torch.Tensor:
        return self.module(self.inputs)

    @torch.no_grad()
    def input_scale(self) -> float:
        return float(self.module.input_quant.scale().reshape(()))

    @torch.no_grad()
    def weight_scale(self) -> torch.Tensor:
        return self.module.quant_weight().scale.detach().reshape(-1)

    @torch.no_grad()
    def int_weight(self) -> torch.Tensor:
        qw = self.module.quant_weight()
        return torch.round(qw.value / qw.scale).to(torch.int8)


def _set_threshold(quant_proxy, value: float) -> None:
    t = quant_proxy.fused_activation_quant_proxy.tensor_quant.scaling_impl.value
    with torch.no_grad():
        t.copy_(torch.clamp(torch.as_tensor(float(value)), min=1e-8).to(t))


@torch.no_grad()
def standalone_linear(name: str, mod: nn.Module, raw_inputs: torch.Tensor, *,
                      output_quant: bool = False, tokens: int = 1) -> LayerExport:
    """Rebuild ``mod`` (SparseTernaryLinear or nn.Linear) as an exportable QuantLinear.

    Args:
        name: the layer's name in the model (for messages and the report).
        mod: the student's layer.
        raw_inputs: ``[rows, K]`` inputs the layer received on real images (before top-k).
        output_quant: add an int8 output quantizer with threshold = max |y| on these inputs.
        tokens: the layer's token count M per image (``raw_inputs`` holds whole images).
    """
    from brevitas.nn import QuantLinear
    from brevitas.quant import Int8WeightPerTensorFloat

    from brevitas_models.quant import SparseTernaryLinear, act_quant

    if isinstance(mod, SparseTernaryLinear):
        inputs = mod.sparsity(raw_inputs)
        src = mod.linear
        weight_quant = src.weight_quant.quant_injector
        act_bits, weight_bits, ternary = mod.act_bits, 2, True
        threshold = float(mod.input_threshold)
    elif type(mod) is nn.Linear:
        inputs = raw_inputs
        src = mod
        weight_quant = Int8WeightPerTensorFloat
        act_bits, weight_bits, ternary = 8, 8, False
        threshold = float(inputs.abs().max())
    else:
        raise UserError(f"layer {name} is a {type(mod).__name__}; export handles ternary linears "
                        "and nn.Linear")
    out_q = act_quant(8) if output_quant else None
    q = QuantLinear(src.in_features, src.out_features, bias=src.bias is not None,
                    weight_quant=weight_quant, input_quant=act_quant(act_bits),
                    output_quant=out_q, return_quant_tensor=False)
    q.weight.copy_(src.weight)
    if src.bias is not None:
        q.bias.copy_(src.bias)
    _set_threshold(q.input_quant, threshold)
    q.eval()
    if output_quant:
        _set_threshold(q.output_quant, 1.0)
        q.output_quant.disable_quant = True
        y = q(inputs)
        q.output_quant.disable_quant = False
        _set_threshold(q.output_quant, float(y.abs().max()))
    return LayerExport(name=name, module=q, inputs=inputs.contiguous(), ternary=ternary,
                       weight_bits=weight_bits, act_bits=act_bits,
                       in_features=src.in_features, out_features=src.out_features,
                       float_output=None if ternary else mod(inputs).detach(), tokens=tokens)
