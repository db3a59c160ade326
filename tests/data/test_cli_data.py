"""`tatvpr data synth` and `tatvpr data baseline` through the CLI entry point."""

from __future__ import annotations

import json

from tatvpr_hw.cli import main

SMALL_YAML = """
name: t
data:
  synthetic: {places: 4, train_images_per_place: 2, eval_places: 6, image_px: 32, difficulty: 0.0, seed: 11}
"""


def test_synth_and_baseline(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMALL_YAML)
    out = tmp_path / "bench"
    assert main(["data", "synth", "--out", str(out), "--config", str(cfg)]) == 0
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["seed"] == 11 and manifest["config"]["difficulty"] == 0.0
    assert main(["data", "synth", "--out", str(out), "--config", str(cfg), "--seed", "3",
                 "--difficulty", "0.7"]) == 0
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["seed"] == 3 and manifest["config"]["difficulty"] == 0.7
    capsys.readouterr()
    assert main(["data", "baseline", "--root", str(out / "eval"), "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "6 queries, 6 database images; chance R@1 16.67 %" in text and "R@1" in text


def test_synth_errors(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--difficulty", "2"]) == 2
    assert "--difficulty must be in [0, 1]" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--config", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["data", "baseline", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "evaluation set not found" in err and "tatvpr data synth --out DIR" in err


def test_info_on_local_layouts(tmp_path, gsv_root, vpr_root, capsys):
    cfg = tmp_path / "local.yaml"
    cfg.write_text(f"data: {{source: local, gsv_root: '{gsv_root}', eval_root: '{vpr_root}', images_per_place: 3}}\n"
                   "model: {student_img_size: 28, teacher_img_size: 28}\n")
    assert main(["data", "info", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "3 places with >= 3 images, 10 images, cities Boston, London" in out
    assert "5 database, 2 queries, 0 queries without a positive within 25 m" in out
