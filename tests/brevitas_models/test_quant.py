"""Ternary absmean weight quantizer, int8 input quantizer, SparseTernaryLinear and its QONNX export."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales, ternary_layers
from brevitas_models.sparsity import set_sparsity
from brevitas_models.errors import ModelInputError as UserError  # the models raise their own error type


def _reference_ternary(w, per_channel):
    gamma = w.abs().mean(dim=1, keepdim=True) if per_channel else w.abs().mean()
    return torch.clamp(torch.round(w / gamma), -1, 1), gamma


@pytest.mark.parametrize("per_channel", [False, True])
def test_ternary_values_and_scale(per_channel):
    torch.manual_seed(0)
    lin = nn.Linear(24, 12)
    with torch.no_grad():
        lin.weight[3] *= 5.0  # make per-channel and per-tensor scales differ
    m = SparseTernaryLinear.from_linear(lin, per_channel=per_channel)
    codes, scale = m.ternary_weight()
    ref_codes, ref_gamma = _reference_ternary(lin.weight.detach(), per_channel)
    assert codes.dtype == torch.int8
    assert set(codes.unique().tolist()) == {-1, 0, 1}
    assert torch.equal(codes.float(), ref_codes)
    assert torch.allclose(scale.reshape(ref_gamma.shape), ref_gamma, rtol=1e-6)
    if per_channel:
        assert scale.numel() == 12
    else:
        assert scale.numel() == 1
    qw = m.linear.quant_weight().value
    assert torch.allclose(qw, ref_codes * ref_gamma, rtol=1e-6, atol=1e-8)


def test_zero_weight_stays_zero():
    m = SparseTernaryLinear(8, 4, bias=False)
    with torch.no_grad():
        m.linear.weight.zero_()
    codes, _ = m.ternary_weight()
    assert torch.all(codes == 0)
    assert torch.all(torch.isfinite(m(torch.randn(2, 8))))


@pytest.mark.parametrize("per_channel", [False, True])
def test_straight_through_gradient(per_channel):
    torch.manual_seed(1)
    m = SparseTernaryLinear(16, 8, per_channel=per_channel)
    qw = m.linear.quant_weight().value
    g = torch.randn_like(qw)
    (qw * g).sum().backward()
    # BitNet STE: dL/dW = dL/dW_dequant exactly, also for weights clipped to +-1
    assert torch.allclose(m.linear.weight.grad, g)


def test_forward_matches_integer_reference():
    torch.manual_seed(2)
    m = SparseTernaryLinear(32, 10, sparsity=0.25)
    x = torch.randn(3, 7, 32)
    calibrate_input_scales(m, [x])
    m.eval()
    y = m(x)
    q = m.quantize_input(x)  # int codes after top-k and int8 quantization
    assert q.abs().max() <= 127
    assert torch.equal((q != 0).sum(-1) <= 24, torch.ones(3, 7, dtype=torch.bool))
    codes, gamma = m.ternary_weight()
    acc = q.to(torch.int64) @ codes.to(torch.int64).T  # exact integer accumulation
    ref = acc.float() * m.input_scale() * gamma + m.linear.bias
    assert torch.allclose(y, ref, atol=1e-5)
    # int8 error of the input is at most half a step per element
    xs = m.sparsity(x)
    assert (q.float() * m.input_scale() - xs).abs().max() <= m.input_scale() / 2 + 1e-7


def test_calibration_sets_threshold_to_absmax():
    torch.manual_seed(3)
    model = nn.Sequential(SparseTernaryLinear(8, 8), nn.GELU(), SparseTernaryLinear(8, 4))
    xs = [torch.randn(4, 8), 3 * torch.randn(4, 8)]
    assert calibrate_input_scales(model, xs) == 2
    assert torch.isclose(model[0].input_threshold, torch.cat(xs).abs().max())
    assert torch.isclose(model[0].input_scale(), torch.cat(xs).abs().max() / 127)
    assert model[2].input_threshold > 0
    with pytest.raises(UserError, match="at least one batch"):
        calibrate_input_scales(model, [])


def test_threshold_is_in_state_dict_and_round_trips():
    a = SparseTernaryLinear(8, 4)
    calibrate_input_scales(a, [torch.randn(5, 8) * 4])
    sd = a.state_dict()
    assert any(k.endswith("scaling_impl.value") for k in sd)
    b = SparseTernaryLinear(8, 4)
    b.load_state_dict(sd)
    x = torch.randn(2, 8)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_ternary_layers_lists_modules_and_sparsity_reaches_them():
    model = nn.Sequential(SparseTernaryLinear(8, 8), nn.ReLU(), SparseTernaryLinear(8, 4))
    assert [n for n, _ in ternary_layers(model)] == ["0", "2"]
    set_sparsity(model, 0.5)
    assert all(m.sparsity.sparsity == 0.5 for _, m in ternary_layers(model))


def test_bad_act_bits():
    with pytest.raises(UserError, match="2..16"):
        SparseTernaryLinear(4, 4, act_bits=1)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qonnx_export_has_2bit_narrow_quant_and_matches(tmp_path, per_channel):
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    torch.manual_seed(4)
    m = SparseTernaryLinear(16, 8, sparsity=0.5, per_channel=per_channel)
    x = torch.randn(1, 5, 16)
    calibrate_input_scales(m, [x])
    m.eval()
    path = tmp_path / "stl.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(m, x, export_path=str(path))
    g = onnx.load(str(path)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    ops = [n.op_type for n in g.node]
    assert "TopK" in ops and "ScatterElements" in ops  # top-k as standard ONNX operators
    quants = [n for n in g.node if n.op_type == "Quant"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in quants]
    bitwidths = [float(inits[n.input[3]]) for n in quants]
    scale_sizes = [inits[n.input[1]].size for n in quants]
    assert max(scale_sizes) == (8 if per_channel else 1)
    assert (2.0, 1) in [(b, a["narrow"]) for b, a in zip(bitwidths, attrs)]
    assert (8.0, 1) in [(b, a["narrow"]) for b, a in zip(bitwidths, attrs)]
    mw = ModelWrapper(str(path))
    out = execute_onnx(mw, {mw.graph.input[0].name: x.numpy()})
    y = next(iter(out.values()))
    np.testing.assert_allclose(y, m(x).detach().numpy(), atol=1e-5)
