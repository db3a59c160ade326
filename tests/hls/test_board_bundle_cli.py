"""`tatvpr export board-bundle`: a CLS student at 28 px end to end (export, database through the
runtime, the final-norm path) and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from tatvpr_hw.cli import main
from tatvpr_hw.config import config_to_dict, parse_config
from tatvpr_hw.lower.hls.paths import driver_package

CFG = {
    "name": "bundletest", "seed": 0,
    "model": {"backbone": "vit_tiny_patch14_dinov2", "teacher_img_size": 28, "student_img_size": 28,
              "head": {"name": "cls", "preset": "tiny"}},
    "data": {"synthetic": {"places": 2, "train_images_per_place": 2, "eval_places": 4, "image_px": 32,
                           "difficulty": 0.3}},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from brevitas_models.checkpoint import init_student_from_teacher, save_checkpoint
    from brevitas_models.model import build_model
    from tatvpr_hw.data.synthetic import ensure_benchmark

    tmp = tmp_path_factory.mktemp("bundlecli")
    raw = json.loads(json.dumps(CFG))
    raw["data"]["root"] = str(tmp / "syn")
    raw["train"] = {"out_dir": str(tmp / "runs")}
    cfg = parse_config(raw)
    ensure_benchmark(cfg)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, student=False)
    student = build_model(cfg.model, student=True)
    init_student_from_teacher(student, teacher)
    meta = {"config": config_to_dict(cfg), "role": "student", "stage": "distill", "step": 0, "seed": 0,
            "rng": {}, "teacher_checkpoint": None}
    save_checkpoint(tmp / "student", student, meta)
    save_checkpoint(tmp / "teacher", teacher, meta | {"role": "teacher", "stage": "teacher"})
    cfg_path = tmp / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return {"tmp": tmp, "cfg": cfg_path, "student": student.eval(), "cfg_obj": cfg}


def test_board_bundle_cli_writes_a_bundle_whose_database_matches_the_float_head(setup, capsys):
    from tatvpr_hw.data.vpr import VPREvalSet, eval_root
    from tatvpr_hw.integer import integer_descriptors

    out = setup["tmp"] / "bundle"
    rc = main(["export", "board-bundle", "--checkpoint", str(setup["tmp"] / "student"), "--config",
               str(setup["cfg"]), "--out", str(out), "--sparsity", "0.4", "--calibration", "4", "--database", "3"])
    assert rc == 0
    assert "database.npy of 3 images (192-d descriptors)" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["head"] == "cls" and meta["final_norm"] is True and meta["img_size"] == 28
    driver_package()
    from tatvpr_pynq.runtime import PlaceRecognizer

    rec = PlaceRecognizer(out)
    assert rec.database.shape == (3, 192)
    assert meta["head_integer"] is True and rec.head_q.kind == "cls"
    # independent path: evaluation loader + integer trunk + the PyTorch CLS head after the final norm;
    # the integer descriptor is the same class token L2-normalised in Q15 (error <= ~2 / 2**15)
    cfg = setup["cfg_obj"]
    ev = VPREvalSet(eval_root(cfg.data), 28, cfg.data.positive_radius_m)
    imgs = torch.stack([ev.database[i][0] for i in range(3)])
    ref = integer_descriptors(setup["student"], rec.trunk, imgs, 0.4)
    assert np.abs(rec.database - ref).max() < 2e-4
    assert json.loads((out / "database.json").read_text())[0].endswith(ev.database.paths[0].name)


@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.0"], "--sparsity must be in [0, 1), got 1.0"),
    (["--calibration", "0"], "--calibration must be >= 1, got 0"),
    (["--checkpoint", "nowhere/x"], "--checkpoint: nowhere/x not found"),
    (["--checkpoint", "TEACHER"], "has role 'teacher'"),
])
def test_board_bundle_cli_errors_exit_2(setup, capsys, args, message):
    args = [str(setup["tmp"] / "teacher") if a == "TEACHER" else a for a in args]
    base = {"--checkpoint": str(setup["tmp"] / "student"), "--config": str(setup["cfg"]),
            "--out": str(setup["tmp"] / "bad")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    rc = main(["export", "board-bundle", *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("error:") == 1 and message in err, err
