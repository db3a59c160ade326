"""Operation counts: dense from shapes, effective from the real nonzeros entering each ternary linear."""

import math

import pytest
import torch
from torch import nn

from brevitas_models.ops import count_ops, seeded_images, sweep
from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales
from brevitas_models.sparsity import get_sparsity, kept_count, set_sparsity
from brevitas_models.vit import create_backbone
from tatvpr_hw.config import TernaryConfig


class _Wrap(nn.Module):
    def __init__(self, mod):
        super().__init__()
        self.mod = mod

    def forward(self, x):
        return self.mod(x)


def _brute_force(q, w):
    both = 0
    for m in range(q.shape[0]):
        for n in range(w.shape[0]):
            both += sum(1 for k in range(q.shape[1]) if q[m, k] != 0 and w[n, k] != 0)
    return both


def test_ternary_linear_counts_match_definitions():
    torch.manual_seed(0)
    lin = SparseTernaryLinear(12, 5)
    with torch.no_grad():
        lin.linear.weight.copy_(torch.randn(5, 12))
        lin.linear.weight[:, :3] = 0.0  # whole zero input columns of W
    x = torch.randn(2, 4, 12)
    x[0, 0, 5:] = 1e-4  # kept by top-k at s = 0 but rounds to int8 zero
    calibrate_input_scales(lin, [x])
    r = count_ops(_Wrap(lin), x, 0.0, per_layer=True)
    q = lin.quantize_input(x).reshape(-1, 12)
    w = lin.ternary_weight()[0]
    m = 8
    assert r["batch"] == 2
    assert r["dense_macs"] == m * 12 * 5 / 2
    assert r["effective_macs"] == int((q != 0).sum()) * 5 / 2
    assert r["effective_macs"] < r["dense_macs"]  # the 1e-4 entries are zeros for the hardware
    assert r["effective_macs_weight"] == m * int((w != 0).sum()) / 2
    assert r["effective_macs_both"] == _brute_force(q, w) / 2
    assert r["act_density"] == pytest.approx(float((q != 0).float().mean()))
    assert r["gmacs"] == pytest.approx(r["effective_macs"] / 1e9)
    assert [layer["kind"] for layer in r["layers"]] == ["ternary"]


def test_sparsity_reduces_ternary_macs_by_kept_count():
    torch.manual_seed(1)
    bb = create_backbone("vit_tiny_patch14_dinov2", 98, ternary=TernaryConfig())
    x = seeded_images(1, 98, 0)
    calibrate_input_scales(bb, [x], forward=lambda m, b: m.forward_features(b))
    rows = sweep(bb, x, [0.0, 0.4])
    t = 50  # tokens
    shapes = [(192, 576), (192, 192), (192, 768), (768, 192)]  # (K, N) of qkv, proj, fc1, fc2
    dense = 4 * sum(t * k * n for k, n in shapes)
    assert rows[0]["ternary_dense_macs"] == dense
    # timm Attention: Q K^T and A V, 2 * T^2 * D per block; the patch conv 49 * 192 * 588
    assert rows[0]["attention_macs"] == 4 * 2 * t * t * 192
    assert rows[0]["other_macs"] == 49 * 192 * 3 * 14 * 14
    assert rows[0]["dense_macs"] == dense + rows[0]["attention_macs"] + rows[0]["other_macs"]
    upper = 4 * sum(t * kept_count(k, 0.4) * n for k, n in shapes)
    assert rows[1]["ternary_act_macs"] <= upper
    assert rows[1]["ternary_act_macs"] >= 0.95 * upper  # only int8 rounding adds zeros
    assert rows[1]["reduction_vs_dense"] > rows[0]["reduction_vs_dense"]
    assert 0.95 * 0.6 <= rows[1]["act_density"] <= 0.6 + 1 / 192
    assert get_sparsity(bb) == 0.0  # restored


def test_multihead_attention_and_float_linear_dense():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
            self.fc = nn.Linear(16, 4)
            self.q = nn.Parameter(torch.randn(1, 3, 16))

        def forward(self, x):
            out, _ = self.mha(self.q.expand(x.shape[0], -1, -1), x, x)
            return self.fc(out)

    x = torch.randn(2, 7, 16)
    r = count_ops(Head(), x, None)
    lq, lk, e = 3, 7, 16
    assert r["attention_macs"] == 2 * lq * lk * e
    assert r["other_macs"] == (lq * e * e + 2 * lk * e * e + lq * e * e) + lq * 16 * 4
    assert r["ternary_layers"] == 0 and r["act_density"] == 1.0


def test_restores_state_and_is_deterministic():
    torch.manual_seed(2)
    model = nn.Sequential(SparseTernaryLinear(16, 16), nn.GELU(), SparseTernaryLinear(16, 8)).train()
    x = seeded_images(1, 28, 3).reshape(-1, 16)[:10]
    calibrate_input_scales(model, [x])
    set_sparsity(model, 0.3)
    a = count_ops(model, x, 0.5)
    b = count_ops(model, x, 0.5)
    assert a == b
    assert get_sparsity(model) == 0.3 and model.training
    assert torch.equal(seeded_images(2, 28, 5), seeded_images(2, 28, 5))
    assert not torch.equal(seeded_images(2, 28, 5), seeded_images(2, 28, 6))
    assert a["sparsity"] == 0.5
    assert a["effective_macs"] <= 10 * (kept_count(16, 0.5) * 16 + kept_count(16, 0.5) * 8)


def test_tatvpr_ops_prints_the_project_count_and_the_authors_convention(capsys):
    import json

    from tatvpr_hw.cli import main

    assert main(["ops", "--config", "configs/tiny.yaml", "--sparsity", "0,0.4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    r0, r4 = rows
    # the profiler's addmm FLOPs do not depend on s (the rule scales them afterwards)
    assert r4["authors_flops_addmm"] == r0["authors_flops_addmm"] > 0
    assert r4["authors_flops"] == pytest.approx(0.6 * r4["authors_flops_addmm"] + r4["authors_flops_other"])
    assert r0["authors_reduction_vs_s0"] == 0.0 and r0["reduction_vs_s0"] == 0.0
    assert r4["authors_reduction_vs_s0"] == pytest.approx(1 - r4["authors_flops"] / r0["authors_flops"])
    assert r4["reduction_vs_s0"] == pytest.approx(1 - r4["effective_macs"] / r0["effective_macs"])
    # FLOPs are 2 per MAC: the dense addmm FLOPs are at least twice the ternary dense MACs
    assert r0["authors_flops_addmm"] >= 2 * r0["ternary_dense_macs"]
    assert main(["ops", "--config", "configs/tiny.yaml", "--sparsity", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "paper GFLOPs" in out and "paper vs s=0" in out
