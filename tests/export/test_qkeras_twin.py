"""QKeras twin (optional extra ``qkeras``, installed by ``make test``): two frontends, one answer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def test_qkeras_twin_matches_qonnx_route(tmp_path):
    import tatvpr_hw.lower  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales
    from tatvpr_hw.lower.hls4ml.route import export_layer_hls4ml
    from tatvpr_hw.lower.layers import standalone_linear
    from tatvpr_hw.lower.hls4ml.qkeras_twin import build_twin, export_twin_hls4ml, input_codes

    torch.manual_seed(3)
    m = SparseTernaryLinear(24, 16, sparsity=0.3)
    x = torch.randn(40, 24) * 0.7
    calibrate_input_scales(nn.Sequential(m), [x])
    le = standalone_linear("blocks.0.mlp.fc1", m, x)

    # the Keras model itself is the Brevitas layer (same codes, same alpha = s_x * gamma)
    km, alpha = build_twin(le)
    codes = input_codes(le)
    assert np.all(codes == np.round(codes)) and np.abs(codes).max() <= 127
    y_keras = km.predict(codes, verbose=0)
    assert np.abs(y_keras - le.reference().numpy()).max() < 1e-4
    kernel = km.get_layer("ternary_dense").get_weights()[0] / alpha
    assert np.array_equal(np.round(kernel).T, le.int_weight().numpy().astype(np.float32))

    summary, hmodel = export_layer_hls4ml(le, tmp_path, build=False, return_model=True)
    twin = export_twin_hls4ml(le, tmp_path, qonnx_hls_model=hmodel)
    assert twin["generated"]["dense_products"] == ["weight_ternary"]
    assert twin["check"]["passed"], twin["check"]
    assert twin["check"]["vs_pytorch_max_abs_err"] < 1e-3
