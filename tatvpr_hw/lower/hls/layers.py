"""Layers for the IP, with their integer references, from the PyTorch student or a trace.

From PyTorch (:func:`layer_from_module`): the int8 activations are the ones the module's
own input quantizer produces after its top-k (``SparseTernaryLinear.quantize_input``), the
ternary codes and gamma come from ``ternary_weight()``, the bias is rounded into accumulator
units ``bias / (s_act * gamma)``, and the output scale is the layer's float output absmax / 127
(or given). The integer reference is tied back to the PyTorch layer: ``acc * s_act * gamma +
bias`` must equal the module's float output up to float32 rounding (``info["acc_max_abs_err"]``).

From a trace (:func:`layers_from_trace`): shapes, packed weights and the real activation
masks come from the trace (which holds no activation values); the int8 values at the mask's
positions are drawn from a seeded generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls.formats import IPLayer, prepare_layer, quantize_multiplier


def layer_from_module(module, x, *, sparsity: float, pe: int, simd: int, banks: int | None = None, ports: int = 1,
                      fmt: str = "ternary2", out_scale: float | None = None,
                      name: str = "layer", skip_mode: str = "act") -> tuple[IPLayer, dict[str, Any]]:
    """One ``SparseTernaryLinear`` on float input ``x[..., K]`` at ``sparsity`` -> (IP layer, info)."""
    import torch

    if not hasattr(module, "ternary_weight") or not hasattr(module, "quantize_input"):
        raise UserError(f"{name}: not a SparseTernaryLinear (needs ternary_weight() and quantize_input())")
    old = module.sparsity.sparsity
    try:
        module.sparsity.sparsity = sparsity
        with torch.no_grad():
            x2 = x.detach().reshape(-1, x.shape[-1]).float()
            x_int = module.quantize_input(x2)
            y_ref = module(x2).double().numpy()
            codes, gamma = module.ternary_weight()
            s_act = float(module.input_scale())
    finally:
        module.sparsity.sparsity = old
    if gamma.numel() != 1:
        raise UserError(f"{name}: per-output-channel weight scales are not supported by the IP "
                        "(per-tensor scales only); set model.ternary.per_channel: false")
    if int(x_int.abs().max()) > 127:
        raise UserError(f"{name}: input quantizer has {module.act_bits} bits; the IP takes int8 activations")
    gamma = float(gamma)
    acc_unit = s_act * gamma
    bias = module.bias
    bias_f = np.zeros(codes.shape[0]) if bias is None else bias.detach().double().numpy()
    bias_int = np.rint(bias_f / acc_unit).astype(np.int64)
    x_np = x_int.numpy().astype(np.int8)
    w_np = codes.numpy().astype(np.int8)
    acc = x_np.astype(np.int64) @ w_np.astype(np.int64).T
    acc_err = float(np.abs(acc * acc_unit + bias_f[None, :] - y_ref).max())
    if out_scale is None:
        out_scale = max(float(np.abs(y_ref).max()), 1e-12) / 127.0
    mult, shift = quantize_multiplier(acc_unit / out_scale)
    layer = prepare_layer(x_np, w_np, bias_int, mult, shift, pe=pe, simd=simd, banks=banks, ports=ports, fmt=fmt,
                          skip_mode=skip_mode)
    deq_err = float(np.abs(layer.expected.astype(np.float64) * out_scale - y_ref).max())
    info = {"name": name, "m": layer.m, "k": layer.k, "n": layer.n, "sparsity": float(sparsity),
            "fmt": fmt, "act_density": float((x_np != 0).mean()), "act_scale": s_act,
            "weight_scale": gamma, "out_scale": float(out_scale), "mult": mult, "shift": shift,
            "acc_max_abs_err": acc_err, "out_max_abs_err": deq_err,
            "out_max_abs": float(np.abs(y_ref).max()),
            "chunk_cycles_per_fold": layer.chunk_cycles_per_fold, "folds": layer.folds}
    return layer, info


def capture_layer_inputs(model, images, sparsity: float, names: list[str] | None = None) -> dict[str, Any]:
    """Float inputs of the model's ternary layers during one forward pass at ``sparsity``."""
    import torch

    from brevitas_models.quant import ternary_layers
    from brevitas_models.sparsity import get_sparsity, set_sparsity

    layers = dict(ternary_layers(model))
    if not layers:
        raise UserError("the model has no SparseTernaryLinear layers (build the student, not the teacher)")
    wanted = names or list(layers)
    unknown = [n for n in wanted if n not in layers]
    if unknown:
        raise UserError(f"no ternary layer named {', '.join(unknown)}; the model has: {', '.join(layers)}")
    captured: dict[str, Any] = {}
    hooks = [layers[n].register_forward_pre_hook(
        lambda mod, args, n=n: captured.__setitem__(n, args[0].detach().clone())) for n in wanted]
    old = get_sparsity(model)
    was_training = model.training
    try:
        set_sparsity(model, sparsity)
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
        set_sparsity(model, 0.0 if old is None else old)
        model.train(was_training)
    return {n: captured[n] for n in wanted}


def model_layers(model, images, sparsity: float, *, pe: int, simd: int, banks: int | None = None, ports: int = 1,
                 fmt: str = "ternary2", names: list[str] | None = None,
                 skip_mode: str = "act") -> list[tuple[IPLayer, dict[str, Any]]]:
    """IP layers of the student's ternary linears as they run on ``images`` at ``sparsity``."""
    from brevitas_models.quant import ternary_layers

    modules = dict(ternary_layers(model))
    inputs = capture_layer_inputs(model, images, sparsity, names)
    return [layer_from_module(modules[n], x, sparsity=sparsity, pe=pe, simd=simd, banks=banks, ports=ports,
                              fmt=fmt, name=n, skip_mode=skip_mode)
            for n, x in inputs.items()]


def layers_from_trace(trace, *, pe: int, simd: int, banks: int | None = None, ports: int = 1,
                      fmt: str = "ternary2", seed: int = 0,
                      max_layers: int | None = None, skip_mode: str = "act") -> list[tuple[IPLayer, dict[str, Any]]]:
    """IP layers of a ``sim.trace.Trace``'s ternary ops (real masks and weights, seeded values)."""
    rng = np.random.default_rng(seed)
    out = []
    for op in trace.ternary_ops()[:max_layers]:
        mask = np.asarray(op.act_mask, dtype=bool)
        mag = rng.integers(1, 128, size=mask.shape)
        sign = np.where(rng.random(mask.shape) < 0.5, -1, 1)
        x = np.where(mask, mag * sign, 0).astype(np.int8)
        w = op.weights()
        acc = x.astype(np.int64) @ w.astype(np.int64).T
        mult, shift = quantize_multiplier(127.0 / max(1.0, float(np.abs(acc).max())))
        layer = prepare_layer(x, w, None, mult, shift, pe=pe, simd=simd, banks=banks, ports=ports, fmt=fmt,
                              skip_mode=skip_mode)
        out.append((layer, {"name": op.name, "m": op.m, "k": op.k, "n": op.n, "fmt": fmt,
                            "act_density": float(mask.mean()), "mult": mult, "shift": shift,
                            "chunk_cycles_per_fold": layer.chunk_cycles_per_fold, "folds": layer.folds}))
    return out


def block_params(block, x, *, sparsity: float):
    """A timm ViT block whose linears are SparseTernaryLinear -> ``tatvpr_pynq.driver.BlockParams``.

    ``x`` (float tokens ``[T, D]`` or ``[1, T, D]``) calibrates each linear's int8 output scale
    (its float output absmax / 127 at ``sparsity``). Per-tensor weight scales only.
    """
    import torch

    from tatvpr_hw.lower.hls.paths import driver_package

    driver_package()
    from tatvpr_pynq.driver import BlockParams, TernaryLinearParams

    mods = {"qkv": block.attn.qkv, "proj": block.attn.proj, "fc1": block.mlp.fc1, "fc2": block.mlp.fc2}
    for name, mod in mods.items():
        if not hasattr(mod, "ternary_weight"):
            raise UserError(f"block.{name} is not a SparseTernaryLinear; export the ternary student")
    absmax: dict[str, float] = {}
    hooks = [mod.register_forward_hook(lambda m, a, out, n=n: absmax.__setitem__(n, float(out.abs().max())))
             for n, mod in mods.items()]
    olds = {n: m.sparsity.sparsity for n, m in mods.items()}
    try:
        for m in mods.values():
            m.sparsity.sparsity = sparsity
        with torch.no_grad():
            block(x.reshape(1, -1, x.shape[-1]).float())
    finally:
        for h in hooks:
            h.remove()
        for n, m in mods.items():
            m.sparsity.sparsity = olds[n]

    def lin(name):
        mod = mods[name]
        codes, gamma = mod.ternary_weight()
        if gamma.numel() != 1:
            raise UserError(f"block.{name}: per-output-channel weight scales are not supported by the IP")
        return TernaryLinearParams(
            codes=codes.numpy().astype(np.int8), gamma=float(gamma), act_scale=float(mod.input_scale()),
            out_scale=max(absmax[name], 1e-12) / 127.0, sparsity=float(sparsity),
            bias=None if mod.bias is None else mod.bias.detach().double().numpy())

    def ln(norm):
        return (norm.weight.detach().double().numpy(), norm.bias.detach().double().numpy())

    def ls(layer_scale):
        g = getattr(layer_scale, "gamma", None)
        return None if g is None else g.detach().double().numpy()

    return BlockParams(num_heads=block.attn.num_heads, ln1=ln(block.norm1), qkv=lin("qkv"), proj=lin("proj"),
                       ln2=ln(block.norm2), fc1=lin("fc1"), fc2=lin("fc2"), ls1=ls(block.ls1),
                       ls2=ls(block.ls2), ln_eps=float(block.norm1.eps))
