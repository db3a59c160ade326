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
    from tatvpr_hw.lower.layers import standalone_linear

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
    from tatvpr_hw.lower.hls4ml.route import precision_plan

    _, _, le = _ternary_layer(k=24)
    p = precision_plan(le)
    assert p["weight"] == "int<2>"
    # |acc| <= 127 * 24 = 3048 < 2**12: 12 magnitude bits + sign
    assert p["accum"] == "fixed<13,13>"
    assert p["input_codes"].startswith("fixed<8,8,RND_CONV")
    assert p["scales"]["s_x"] == pytest.approx(le.input_scale())


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_ternary_layer_csim_and_product(tmp_path, io_type):
    from tatvpr_hw.lower.hls4ml.route import export_layer_hls4ml

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
    assert (tmp_path / "hls4ml_blocks_0_mlp_fc1" / "firmware" / "tatvpr_blocks_0_mlp_fc1.cpp").is_file()
    # default: Resource, K*N / (32 x 32) = 384 / 1024 -> 1 (the smallest valid reuse factor)
    assert (s["strategy"], s["reuse_factor"], s["warnings"]) == ("Resource", 1, [])


def test_float_head_linear_gets_int8_weights(tmp_path):
    from tatvpr_hw.lower.hls4ml.route import export_layer_hls4ml
    from tatvpr_hw.lower.layers import standalone_linear

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
    from tatvpr_hw.lower.hls4ml.route import check_part, export_layer_hls4ml

    _, _, le = _ternary_layer()
    with pytest.raises(UserError, match="unknown backend 'Quartus'"):
        export_layer_hls4ml(le, "unused", backend="Quartus")
    with pytest.raises(UserError, match="unknown io type"):
        export_layer_hls4ml(le, "unused", io_type="io_serial_x")
    with pytest.raises(UserError, match="does not look like a Xilinx part"):
        check_part("kv260")


def test_per_channel_scales_rejected_clearly(tmp_path):
    from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales
    from tatvpr_hw.lower.hls4ml.route import export_layer_hls4ml
    from tatvpr_hw.lower.layers import standalone_linear

    torch.manual_seed(0)
    m = SparseTernaryLinear(24, 16, per_channel=True)
    x = torch.randn(10, 24)
    calibrate_input_scales(nn.Sequential(m), [x])
    le = standalone_linear("pc", m, x)
    with pytest.raises(UserError, match="per-channel weight scales"):
        export_layer_hls4ml(le, tmp_path)


def test_reuse_factor_from_pe_simd_is_a_valid_hls4ml_one():
    from tatvpr_hw.lower.hls4ml.route import choose_reuse_factor, valid_reuse_factors

    # hls4ml's rule for n_in x n_out = 24 x 16 (384 products): rf < 24 needs 384 / rf to be a
    # multiple of 16, i.e. rf | 24; rf >= 24 needs rf % 24 == 0 and rf | 384
    assert valid_reuse_factors(24, 16) == [1, 2, 3, 4, 6, 8, 12, 24, 48, 96, 192, 384]
    assert choose_reuse_factor(24, 16, pe_simd=8)["reuse_factor"] == 48  # 384 / 8, valid
    r = choose_reuse_factor(24, 16, reuse_factor=7)
    assert (r["reuse_factor"], r["adjusted"]) == (6, True)  # 6 and 8 tie: the smaller
    assert choose_reuse_factor(24, 16, reuse_factor=11)["reuse_factor"] == 12  # 12 is 1 away, 8 is 3
    # fc1 192 x 768 on a 32 x 32 point: 147456 / 1024 = 144 is not valid (1024 products per
    # clock are not a multiple of 768 outputs); valid neighbours 96 (a divisor of 192) and 192
    # are both 48 away: the smaller
    r = choose_reuse_factor(192, 768, pe_simd=32 * 32)
    assert (r["wanted"], r["reuse_factor"], r["products_per_clock"]) == (144, 96, 1536)


def test_unroll_warning_limit():
    from tatvpr_hw.lower.hls4ml.route import UNROLL_LIMIT, unroll_warning

    assert UNROLL_LIMIT == 4096
    w = unroll_warning("fc1", 192, 768, 1)
    # 147456 / rf <= 4096 needs rf >= 36; the valid ones near it are 32 (4608 products) and 48
    assert "147456 products per clock" in w and "smallest valid ReuseFactor within it is 48" in w
    assert unroll_warning("fc1", 192, 768, 48) is None
    assert unroll_warning("fc1", 192, 768, 32) is not None


class _NoPythonTags(__import__("yaml").SafeLoader):
    """hls4ml_config.yml embeds the QONNX model as a python/object tag: read it as None."""


_NoPythonTags.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def test_two_layers_two_ip_names(tmp_path, monkeypatch, caplog):
    """Each layer's project, top function and IP is tatvpr_<layer>: two layers in one folder
    (one Vivado design) do not collide. Also: the unroll warning reaches the summary."""
    import logging

    import yaml

    from tatvpr_hw.lower.hls4ml import route as hls4ml_route
    from tatvpr_hw.lower.hls4ml.route import export_layer_hls4ml
    from tatvpr_hw.lower.layers import standalone_linear

    monkeypatch.setattr(hls4ml_route, "UNROLL_LIMIT", 100)  # 24 x 16 / RF 1 = 384 products
    _, x, le1 = _ternary_layer(seed=0)
    torch.manual_seed(5)
    from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales

    m2 = SparseTernaryLinear(24, 16, sparsity=0.4)
    calibrate_input_scales(nn.Sequential(m2), [x])
    le2 = standalone_linear("blocks.0.mlp.fc2", m2, x)
    with caplog.at_level(logging.WARNING):
        s1 = export_layer_hls4ml(le1, tmp_path, reuse_factor=1, strategy="Latency", build=False)
    s2 = export_layer_hls4ml(le2, tmp_path, pe_simd=8, build=False)
    assert s1["project_name"] == "tatvpr_blocks_0_mlp_fc1" and s2["project_name"] == "tatvpr_blocks_0_mlp_fc2"
    for s, rf, strategy in ((s1, 1, "Latency"), (s2, 48, "Resource")):
        proj = tmp_path / f"hls4ml_{s['project_name'][len('tatvpr_'):]}"
        conf = yaml.load((proj / "hls4ml_config.yml").read_text(), Loader=_NoPythonTags)
        assert conf["ProjectName"] == s["project_name"]
        assert conf["HLSConfig"]["Model"]["ReuseFactor"] == rf
        assert conf["HLSConfig"]["Model"]["Strategy"] == strategy
        top = (proj / "firmware" / f"{s['project_name']}.cpp").read_text()
        assert f"void {s['project_name']}(" in top
        assert s["check"]["passed"], s["check"]
    assert len(s1["warnings"]) == 1 and "384 products per clock" in s1["warnings"][0]
    assert "384 products per clock" in caplog.text
    assert s2["warnings"] == []  # 384 / 48 = 8 products
