"""Clear errors: a missing hls/ folder, layers the IP cannot take."""

from __future__ import annotations

import pytest
import torch

from tatvpr_hw.errors import UserError
from tatvpr_hw.lower.hls import paths


def test_missing_hls_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TATVPR_HLS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="HLS sources not found: .*nowhere lacks include/tatvpr_gemm.h"):
        paths.hls_dir()


def test_ap_types_found():
    assert (paths.ap_types_dir() / "ap_fixed.h").is_file()


def test_per_channel_scales_are_refused():
    from brevitas_models.quant import SparseTernaryLinear
    from tatvpr_hw.lower.hls.layers import layer_from_module

    torch.manual_seed(0)
    mod = SparseTernaryLinear(16, 8, per_channel=True).eval()
    with pytest.raises(UserError, match="per-tensor scales only"):
        layer_from_module(mod, torch.randn(4, 16), sparsity=0.0, pe=4, simd=4, name="fc")


def test_not_a_ternary_layer_is_refused():
    from tatvpr_hw.lower.hls.layers import layer_from_module

    with pytest.raises(UserError, match="not a SparseTernaryLinear"):
        layer_from_module(torch.nn.Linear(4, 4), torch.randn(2, 4), sparsity=0.0, pe=2, simd=2, name="lin")
