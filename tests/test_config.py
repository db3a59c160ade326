"""Run configuration validation: every bad-config case names the key, the value and what is allowed."""

from pathlib import Path

import pytest

from tatvpr_hw.config import load_config, parse_config
from tatvpr_hw.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tiny.yaml", "tatvpr_boq_vitb14.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.model.head.name == "boq"


def test_paper_config_resolutions():
    cfg = load_config(REPO / "configs" / "tatvpr_boq_vitb14.yaml")
    assert (cfg.model.teacher_img_size, cfg.model.student_img_size) == (322, 224)
    assert cfg.model.backbone == "vit_base_patch14_dinov2"


@pytest.mark.parametrize(
    "data, must_contain",
    [
        ({"model": {"sparsity": {"default": 1.0}}}, ["model.sparsity.default", "1.0", "less than 1"]),
        ({"model": {"sparsity": {"default": -0.1}}}, ["model.sparsity.default", "-0.1"]),
        ({"model": {"head": {"name": "netvlad"}}}, ["model.head.name", "netvlad", "'boq'", "'cls'"]),
        ({"model": {"bogus": 1}}, ["unknown key", "model.bogus"]),
        ({"trian": {}}, ["unknown key", "trian"]),
        ({"model": {"student_img_size": 225}}, ["model.student_img_size", "multiple of the patch size 14"]),
        ({"eval": {"sparsities": [0.0, 1.2]}}, ["eval.sparsities", "[0, 1)"]),
        ({"train": {"distill": {"sparsity_range": [0.6, 0.1]}}}, ["train.distill.sparsity_range", "lo <= hi"]),
        ({"data": {"positive_radius_m": "far"}}, ["data.positive_radius_m", "'far'"]),
        ({"seed": "x"}, ["seed", "'x'", "integer"]),
    ],
)
def test_bad_config_names_key_value_and_allowed(data, must_contain):
    with pytest.raises(UserError) as exc:
        parse_config(data, "t.yaml")
    msg = str(exc.value)
    for part in must_contain:
        assert part in msg, (part, msg)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {head: [1,\n")
    with pytest.raises(UserError, match="malformed YAML"):
        load_config(bad)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_config(top)
