"""hls4ml route on small layers: precision from the Brevitas scales, multiplier-free ternary
product in the generated C++, g++ C-simulation within its bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tatvpr_hw.errors import UserError


def _ternary_layer(k=24, n=16, sparsity=0.4, seed=0):
    from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales
    from tatvpr_hw.export.layers import standalone_linear

    torch.manual_seed(seed)
    m = SparseTernaryLinear(k, n, sparsity=sparsity)
    x = torch.randn(40, k) * 0.7
    calibrate_input_scales(nn.Sequential(m), [x])
    return m, x, standalone_linear("blocks.0.mlp.fc1", m, x)


def test_standalone_layer_matches_student_layer():
    m, x, le = _ternary_layer()
    with torch.no_grad():
        assert torch.allclose(le.reference(), m(x), atol=1e-6)
    assert le.ternary and le.weight_bits == 2
    assert set(np.unique(le.int_weight().numpy())) <= {-1, 0, 1}
    # the top-k was applied to the inputs: 40% of each token zeroed
    assert int((le.inputs != 0).sum(dim=1).max()) == int(np.ceil(0.6 * 24))


def test_precision_plan_from_scales():
    from tatvpr_hw.export.hls4ml_route import precision_plan

    _, _, le = _ternary_layer(k=24)
    p = precision_plan(le)
    assert p["weight"] == "int<2>"
    # |acc| <= 127 * 24 = 3048 < 2**12: 12 magnitude bits + sign
    assert p["accum"] == "fixed<13,13>"
    assert p["input_codes"].startswith("fixed<8,8,RND_CONV")
    assert p["scales"]["s_x"] == pytest.approx(le.input_scale())


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_ternary_layer_csim_and_product(tmp_path, io_type):
    from tatvpr_hw.export.hls4ml_route import export_layer_hls4ml

    _, _, le = _ternary_layer()
    s = export_layer_hls4ml(le, tmp_path, io_type=io_type, build=False)
    gen = s["generated"]
    assert gen["dense_products"] == ["weight_ternary"] and gen["multiplier_free"]
    assert list(gen["weight_types"].values()) == ["ap_int<2>"]
    chk = s["check"]
    assert chk["passed"], chk
    # the integer GEMM is exact: the error is at most a couple of int8 flips, far below max|y|
    assert chk["max_abs_err"] < 0.05 * chk["ref_max_abs"]
    assert "vitis-run --tcl build_prj.tcl --mode hls" in s["build_command"]
    assert (tmp_path / "hls4ml_blocks_0_mlp_fc1" / "firmware" / "tatvpr_gemm.cpp").is_file()


def test_float_head_linear_gets_int8_weights(tmp_path):
    from tatvpr_hw.export.hls4ml_route import export_layer_hls4ml
    from tatvpr_hw.export.layers import standalone_linear

    torch.manual_seed(1)
    lin = nn.Linear(16, 8)
    x = torch.randn(30, 16)
    le = standalone_linear("head.fc", lin, x)
    assert not le.ternary and le.weight_bits == 8
    s = export_layer_hls4ml(le, tmp_path, backend="Vivado", build=False)
    assert s["generated"]["dense_products"] == ["mult"]
    assert list(s["generated"]["weight_types"].values()) == ["ap_int<8>"]
    assert s["check"]["passed"], s["check"]
    # int8 weight + input quantization of a float layer: small but nonzero vs the float layer
    dev = s["int8_export_vs_float"]["max_abs_err"]
    assert 0 < dev < 0.05 * s["int8_export_vs_float"]["ref_max_abs"]
    assert s["build_command"].endswith('fifo_opt=0"') and "vivado_hls" in s["build_command"]


def test_bad_options_rejected():
    from tatvpr_hw.export.hls4ml_route import check_part, export_layer_hls4ml

    _, _, le = _ternary_layer()
    with pytest.raises(UserError, match="unknown backend 'Quartus'"):
        export_layer_hls4ml(le, "unused", backend="Quartus")
    with pytest.raises(UserError, match="unknown io type"):
        export_layer_hls4ml(le, "unused", io_type="io_serial_x")
    with pytest.raises(UserError, match="does not look like a Xilinx part"):
        check_part("kv260")


def test_per_channel_scales_rejected_clearly(tmp_path):
    from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales
    from tatvpr_hw.export.hls4ml_route import export_layer_hls4ml
    from tatvpr_hw.export.layers import standalone_linear

    torch.manual_seed(0)
    m = SparseTernaryLinear(24, 16, per_channel=True)
    x = torch.randn(10, 24)
    calibrate_input_scales(nn.Sequential(m), [x])
    le = standalone_linear("pc", m, x)
    with pytest.raises(UserError, match="per-channel weight scales"):
        export_layer_hls4ml(le, tmp_path)
