"""Fixtures of the export tests: the tiny student (at a small input size) and its checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

# the QKeras twin needs tf.keras = Keras 2; set it before anything in this worker loads TensorFlow
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]


def tiny_config_dict(tmp: Path, img_size: int = 28) -> dict:
    """configs/tiny.yaml with a smaller student input and data under ``tmp`` (no benchmark)."""
    d = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    d["model"]["student_img_size"] = img_size
    d["model"]["teacher_img_size"] = img_size
    d.setdefault("data", {})["root"] = str(tmp / "data")
    d.setdefault("train", {})["out_dir"] = str(tmp / "runs")
    return d


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(config path, checkpoint path, config) of a calibrated tiny student at 28 px."""
    from brevitas_models.checkpoint import save_checkpoint
    from brevitas_models.model import build_model
    from brevitas_models.quant import calibrate_input_scales
    from tatvpr_hw.config import parse_config

    tmp = tmp_path_factory.mktemp("export_tiny")
    d = tiny_config_dict(tmp)
    cfg_path = tmp / "tiny28.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    cfg = parse_config(d)
    torch.manual_seed(0)
    model = build_model(cfg.model, student=True).eval()
    calibrate_input_scales(model, [torch.randn(2, 3, 28, 28)])
    ck = save_checkpoint(tmp / "student", model,
                         {"config": d, "role": "student", "stage": "init", "step": 0, "seed": 0,
                          "rng": None, "teacher_checkpoint": None})
    return cfg_path, ck, cfg
