"""`tatvpr train`: bad input gives one `error:` line and exit status 2."""

from __future__ import annotations

import yaml

from tatvpr_hw.cli import main


def _write(tmp_path, cfg) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(p)


def test_unknown_stage(tiny_cfg, tmp_path, capsys):
    assert main(["train", "--config", _write(tmp_path, tiny_cfg()), "--stage", "pretrain"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "teacher, distill, finetune, all" in err


def test_distill_without_teacher_names_the_missing_step(tiny_cfg, tmp_path, capsys):
    assert main(["train", "--config", _write(tmp_path, tiny_cfg()), "--stage", "distill"]) == 2
    err = capsys.readouterr().err
    assert "teacher.safetensors not found" in err and "--stage teacher" in err
    assert "Traceback" not in err


def test_bad_distill_layer(tiny_cfg, tmp_path, capsys):
    from tatvpr_hw.training import run_stage

    cfg = tiny_cfg()
    run_stage(cfg, "teacher", progress=False)
    cfg.train.distill.distill_layers = [7]
    assert main(["train", "--config", _write(tmp_path, cfg), "--stage", "distill"]) == 2
    assert "distill_layers: block 7 does not exist" in capsys.readouterr().err
