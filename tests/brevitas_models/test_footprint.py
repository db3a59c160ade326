"""Memory footprint: exact bytes per component and format; paper-config ratios."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from brevitas_models.footprint import FORMATS, config_footprint, footprint, format_table
from brevitas_models.model import build_model
from brevitas_models.quant import SparseTernaryLinear
from sim.packing import pack
from tatvpr_hw.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_hand_counted_small_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
            self.norm = nn.LayerNorm(8)
            self.fc = SparseTernaryLinear(8, 6, per_channel=False)
            self.pc = SparseTernaryLinear(7, 3, bias=False, per_channel=True)
            self.float_fc = nn.Linear(8, 2)

    fp = footprint(Net())
    comps = {c["name"]: c for c in fp["components"]}
    assert set(comps) == {"pos_embed", "norm", "fc", "pc", "float_fc"}
    # fc: weight 6x8 + bias 6
    b = comps["fc"]["bytes"]
    assert b["fp32"] == 4 * 54 and b["fp16"] == 2 * 54
    assert b["int8"] == 48 + 2 * 6 + 4 + 4          # int8 weights, fp16 bias, gamma, input scale
    assert b["ternary2"] == 6 * 2 + 2 * 6 + 8        # rows of 8 weights = 2 bytes each
    assert b["ternary1.6"] == 6 * 2 + 2 * 6 + 8      # ceil(8 / 5) = 2 bytes per row
    # pc: K = 7 -> 2 bytes per row in both ternary formats, 3 per-channel scales + input scale
    b = comps["pc"]["bytes"]
    assert b["ternary2"] == 3 * 2 + 4 * 3 + 4 and b["int8"] == 21 + 16
    # not quantized: fp16 in the quantized columns
    for name, numel in (("pos_embed", 40), ("norm", 16), ("float_fc", 18)):
        assert comps[name]["bytes"] == {"fp32": 4 * numel, "fp16": 2 * numel, "int8": 2 * numel,
                                        "ternary2": 2 * numel, "ternary1.6": 2 * numel}
    assert fp["total_bytes"] == {f: sum(c["bytes"][f] for c in comps.values()) for f in FORMATS}
    assert fp["backbone_bytes"] == fp["total_bytes"]  # no head


def test_packed_bytes_equal_counted_and_real_packing():
    torch.manual_seed(0)
    m = nn.Sequential(SparseTernaryLinear(13, 4), SparseTernaryLinear(10, 3))
    counted = footprint(m)
    packed = footprint(m, pack_weights=True)
    assert counted["total_bytes"] == packed["total_bytes"]
    codes = m[0].ternary_weight()[0].numpy()
    assert pack(codes, "ternary2").nbytes == 4 * 4 and pack(codes, "ternary1.6").nbytes == 4 * 3
    dens = {c["name"]: c["weight_density"] for c in packed["components"] if "weight_density" in c}
    assert dens["0"] == pytest.approx(np.count_nonzero(codes) / codes.size)


@pytest.mark.parametrize("ternary", [{}, {"per_channel": True, "patch_embed": True, "head": True},
                                     {"blocks": False}])
def test_meta_plan_equals_real_student(ternary):
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    cfg.model.ternary = cfg.model.ternary.model_copy(update=ternary)
    planned = config_footprint(cfg.model)
    torch.manual_seed(0)
    real = footprint(build_model(cfg.model, student=True), cfg.model.student_img_size)
    assert planned["total_bytes"] == real["total_bytes"]
    assert planned["backbone_bytes"] == real["backbone_bytes"]
    assert planned["quantized_layers"] == real["quantized_layers"]


def test_tiny_components_and_head():
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    fp = config_footprint(cfg.model)
    names = [c["name"] for c in fp["components"]]
    assert names[:3] == ["cls_token", "pos_embed", "patch_embed.proj"]
    assert "blocks.3.mlp.fc2" in names and names[-1] == "head"
    q = [c["name"] for c in fp["components"] if c["quantized"]]
    assert len(q) == 16 and all(n.startswith("blocks.") for n in q)
    head = next(c for c in fp["components"] if c["name"] == "head")
    assert fp["total_bytes"]["fp16"] - fp["backbone_bytes"]["fp16"] == head["bytes"]["fp16"]
    assert fp["tokens"] == 50
    assert "blocks.0" in format_table(fp)


def test_paper_config_ternary_backbone_ratios():
    """ViT-B/14 student backbone: >= 5x smaller than fp16 and >= 10x smaller than fp32."""
    cfg = load_config(REPO / "configs" / "tatvpr_boq_vitb14.yaml")
    fp = config_footprint(cfg.model)
    bb = fp["backbone_bytes"]
    # exact bytes (documented in docs/models.md): 86.58 M parameters in the backbone
    assert bb["fp32"] == 4 * 86_579_712 and bb["fp16"] == 2 * 86_579_712
    assert bb["fp16"] / bb["ternary2"] >= 5 and bb["fp32"] / bb["ternary2"] >= 10
    assert bb["fp16"] / bb["ternary1.6"] >= 5 and bb["fp32"] / bb["ternary1.6"] >= 10
    assert fp["quantized_layers"] == 48
    # the 48 block linears: 2-bit codes (K = 768 or 3072, multiples of 4: no padding) +
    # fp16 biases + 2 fp32 scales each
    weights = 12 * (2304 * 768 + 768 * 768 + 3072 * 768 + 768 * 3072)
    biases = 12 * (2304 + 768 + 3072 + 768)
    quantized = sum(c["bytes"]["ternary2"] for c in fp["components"] if c["quantized"])
    assert quantized == weights // 4 + 2 * biases + 48 * 8


def test_plan_uses_the_student_input_size():
    # MixVPR's token mixer depends on the patch count: the teacher (322 px) and the student
    # (224 px) differ, and the footprint must be the student's
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    cfg.model.head = cfg.model.head.model_copy(update={"name": "mixvpr", "preset": "tiny"})
    cfg.model.teacher_img_size = 126
    planned = config_footprint(cfg.model)
    torch.manual_seed(0)
    real = footprint(build_model(cfg.model, student=True), cfg.model.student_img_size)
    assert planned["total_bytes"] == real["total_bytes"]
