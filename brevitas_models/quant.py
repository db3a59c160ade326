"""Brevitas quantizers of the ternary student and its sparse ternary linear layer.

Weights (absmax-mean, BitNet b1.58): ``gamma = mean(|W|)`` per tensor (or per output channel),
``W~ = clip(round(W / gamma), -1, 1)``, dequantized weight ``gamma * W~``. Brevitas expresses it
as a 2-bit narrow-range signed integer quantizer (integer range ``[-1, 1]``) whose scale is the
``mean(|W|)`` statistic; the scale is taken from a detached copy of ``W`` and round/clip use
straight-through estimators, so ``dL/dW = dL/dW_dequant`` exactly (BitNet's STE). Exported by
``brevitas.export.export_qonnx`` as a QONNX ``Quant`` node with ``bitwidth=2, narrow=1``.

Activations: a signed int8 (``act_bits``) per-tensor quantizer in front of every ternary linear
with a learned clipping threshold ``t`` (scale ``t / (2**(bits-1) - 1)``), set from data by
:func:`calibrate_input_scales` (absmax of the sparsified inputs) before use.

:class:`SparseTernaryLinear` = :class:`~brevitas_models.sparsity.TopKSparsity` -> brevitas
``QuantLinear`` (ternary weights, int8 input)::

    x --TopK(|x|, k)--> x * M --int8--> q --(q . W~^T) * s_x * gamma + b--> y
"""

from __future__ import annotations

import logging
from typing import Iterable

import brevitas.jit
import torch
from brevitas.core.function_wrapper import TensorClampSte
from brevitas.inject.enum import RestrictValueType, ScalingImplType, ScalingPerOutputType, StatsOp
from brevitas.nn import QuantLinear
from brevitas.quant.base import NarrowIntQuant
from brevitas.quant.scaled_int import Int8ActPerTensorFloat
from brevitas.quant.solver import WeightQuantSolver
from torch import nn

from brevitas_models.sparsity import DEFAULT_BANKS, Granularity, TopKSparsity
from brevitas_models.errors import ModelInputError

log = logging.getLogger(__name__)

SCALE_MIN = 1e-8  # lower bound of gamma (an all-zero weight tensor stays all zero)


class DetachedAbsAve(brevitas.jit.ScriptModule):
    """``mean(|x|)`` over ``stats_reduce_dim`` (all of it when ``None``), without gradient."""

    __constants__ = ["stats_reduce_dim"]

    def __init__(self, stats_reduce_dim: int | None = None) -> None:
        super().__init__()
        self.stats_reduce_dim = stats_reduce_dim

    @brevitas.jit.script_method
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if self.stats_reduce_dim is None:
            return torch.mean(torch.abs(x))
        return torch.mean(torch.abs(x), dim=self.stats_reduce_dim)


class TernaryWeightPerTensor(NarrowIntQuant, WeightQuantSolver):
    """Ternary {-1, 0, +1} weights, per-tensor scale gamma = mean|W| (absmean), STE."""

    bit_width = 2  # narrow signed 2-bit = integer range [-1, 1]
    scaling_impl_type = ScalingImplType.STATS
    scaling_stats_op = StatsOp.AVE
    scaling_stats_impl = DetachedAbsAve
    restrict_scaling_type = RestrictValueType.FP
    scaling_per_output_type = ScalingPerOutputType.TENSOR
    scaling_min_val = SCALE_MIN
    tensor_clamp_impl = TensorClampSte


class TernaryWeightPerChannel(TernaryWeightPerTensor):
    """Ternary weights with one absmean scale per output channel (row of W)."""

    scaling_per_output_type = ScalingPerOutputType.CHANNEL


class Int8ActPerTensor(Int8ActPerTensorFloat):
    """Signed int8 activations, one learned per-tensor clipping threshold (a plain parameter).

    The threshold is always in the state dict (unlike brevitas' stats-collecting default), so
    checkpoints load exactly; set it from data with :func:`calibrate_input_scales`.
    """

    scaling_impl_type = ScalingImplType.PARAMETER
    scaling_init = 1.0
    narrow_range = True  # symmetric [-127, 127]: the hardware negates codes freely


def act_quant(bits: int = 8):
    """The per-tensor activation quantizer with ``bits`` bits (2..16)."""
    if not 2 <= int(bits) <= 16:
        raise ModelInputError(f"activation bits must be in 2..16, got {bits}")
    return Int8ActPerTensor if bits == 8 else Int8ActPerTensor.let(bit_width=int(bits))


class SparseTernaryLinear(nn.Module):
    """Top-k activation sparsity followed by a ternary-weight, int8-input brevitas QuantLinear.

    Args:
        in_features, out_features, bias: as :class:`torch.nn.Linear`.
        per_channel: absmean scale per output channel instead of per tensor.
        act_bits: bits of the signed per-tensor input quantizer.
        sparsity, granularity, banks: initial settings of the :class:`TopKSparsity` in front.

    Parameters are ``.linear.weight`` / ``.linear.bias`` (float latent weights, the
    ``nn.Linear`` layout ``[out, in]``); the input clipping threshold is
    ``.linear.input_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 per_channel: bool = False, act_bits: int = 8, sparsity: float = 0.0,
                 granularity: Granularity = "token", banks: int = DEFAULT_BANKS) -> None:
        super().__init__()
        self.sparsity = TopKSparsity(sparsity, granularity, banks)
        self.linear = QuantLinear(
            in_features, out_features, bias=bias,
            weight_quant=TernaryWeightPerChannel if per_channel else TernaryWeightPerTensor,
            input_quant=act_quant(act_bits), return_quant_tensor=False)
        self.per_channel = per_channel
        self.act_bits = int(act_bits)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "SparseTernaryLinear":
        """A ternary copy of a float ``nn.Linear`` (its latent weights and bias copied)."""
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)
        m.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            m.linear.weight.copy_(linear.weight)
            if linear.bias is not None:
                m.linear.bias.copy_(linear.bias)
        return m

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    @property
    def weight(self) -> nn.Parameter:
        return self.linear.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.linear.bias

    def extra_repr(self) -> str:
        return f"per_channel={self.per_channel}, act_bits={self.act_bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.sparsity(x))

    @torch.no_grad()
    def ternary_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, scale)``: int8 codes ``[N, K]`` in {-1, 0, 1} and gamma (``[]`` or ``[N, 1]``)."""
        qw = self.linear.quant_weight()
        scale = qw.scale.detach()
        codes = torch.round(qw.value.detach() / scale).clamp_(-1, 1).to(torch.int8)
        return codes, scale

    def _act_proxy(self):
        return self.linear.input_quant

    @property
    def input_threshold(self) -> torch.Tensor:
        """The learned clipping threshold parameter of the input quantizer."""
        return self._act_proxy().fused_activation_quant_proxy.tensor_quant.scaling_impl.value

    @torch.no_grad()
    def input_scale(self) -> torch.Tensor:
        """Scale of the int input quantizer (threshold / (2**(bits-1) - 1)), a 0-d float tensor."""
        proxy = self._act_proxy()
        off = proxy.disable_quant  # a switched-off quantizer (ternary.act_quant: false) reports no scale
        proxy.disable_quant = False
        try:
            return proxy.scale().detach().reshape(())
        finally:
            proxy.disable_quant = off

    @torch.no_grad()
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (int32) the linear sees for float input ``x`` (after top-k)."""
        qmax = 2 ** (self.act_bits - 1) - 1
        xs = self.sparsity(x)
        return torch.clamp(torch.round(xs / self.input_scale()), -qmax, qmax).to(torch.int32)


def ternary_layers(model: nn.Module) -> list[tuple[str, SparseTernaryLinear]]:
    """``(name, module)`` of every :class:`SparseTernaryLinear` in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SparseTernaryLinear)]


@torch.no_grad()
def calibrate_input_scales(model: nn.Module, batches: Iterable[torch.Tensor],
                           forward=None) -> int:
    """Set every ternary layer's input threshold to the max |x| it sees on ``batches``.

    Runs ``forward(model, batch)`` (default ``model(batch)``) in eval mode with every input
    quantizer bypassed, so each threshold is the absmax of the float (top-k sparsified)
    activations at the module's current sparsity. Returns the number of layers calibrated.
    """
    layers = ternary_layers(model)
    if not layers:
        return 0
    forward = forward or (lambda m, b: m(b))
    amax = {name: torch.zeros(()) for name, _ in layers}
    hooks = []

    def make_hook(name):
        def hook(mod, args):
            xs = mod.sparsity(args[0])
            amax[name] = torch.maximum(amax[name], xs.detach().abs().max().float().cpu())
            return None
        return hook

    was_training = model.training
    model.eval()
    disabled = []
    for name, m in layers:
        hooks.append(m.register_forward_pre_hook(make_hook(name)))
        proxy = m._act_proxy()
        disabled.append((proxy, proxy.disable_quant))
        proxy.disable_quant = True
    n_batches = 0
    try:
        for b in batches:
            forward(model, b)
            n_batches += 1
    finally:
        for h in hooks:
            h.remove()
        for proxy, flag in disabled:
            proxy.disable_quant = flag
        model.train(was_training)
    if n_batches == 0:
        raise ModelInputError("calibrate_input_scales needs at least one batch")
    for name, m in layers:
        t = m.input_threshold
        t.copy_(torch.clamp(amax[name], min=SCALE_MIN).to(t))
    log.debug("calibrated %d ternary layers on %d batches", len(layers), n_batches)
    return len(layers)
