"""--resume: a run killed after some steps and resumed ends on exactly the weights of an
uninterrupted run with the same seed (mid-epoch and at an epoch boundary)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from brevitas_models.checkpoint import load_checkpoint
from tatvpr_hw.training import run_stage, stage_paths


class Killed(RuntimeError):
    pass


class KillAt(L.Callback):
    """Raise before optimizer step ``step`` runs (the checkpoint of step ``step`` exists)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed(f"killed at step {self.step}")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max().item()}"


def _run_killed_then_resumed(cfg, stage, kill_steps):
    for k in kill_steps:
        with pytest.raises(Killed):
            run_stage(cfg, stage, resume=k != kill_steps[0], callbacks=[KillAt(k)], progress=False)
        assert stage_paths(cfg, stage)["ckpt"].is_file()
        assert not stage_paths(cfg, stage)["final"].exists()
    return run_stage(cfg, stage, resume=True, progress=False)


def test_teacher_resume_equals_uninterrupted(tiny_cfg):
    # 8 places / 2 per batch = 4 steps per epoch: kill mid-epoch (3), then at the epoch end (4).
    overrides = {"teacher": {"max_steps": 6, "lr": 1e-3, "warmup_steps": 2}}
    full = run_stage(tiny_cfg("full", **overrides), "teacher", progress=False)
    cfg = tiny_cfg("killed", **overrides)
    resumed = _run_killed_then_resumed(cfg, "teacher", [3, 4])
    sd_full, meta_full = load_checkpoint(full)
    sd_res, meta_res = load_checkpoint(resumed)
    assert meta_full["step"] == meta_res["step"] == 6
    _assert_same_weights(sd_full, sd_res)
    # and training did change the weights (the comparison is not between two untouched models)
    from tatvpr_hw.training.stages import load_stage_model  # noqa: F401
    import brevitas_models.model as bm
    L.seed_everything(cfg.seed, verbose=False)
    init = bm.build_model(cfg.model, student=False).state_dict()
    assert any(not torch.equal(init[k], sd_full[k]) for k in init if k.startswith("backbone.blocks"))


def test_distill_and_finetune_resume_equal_uninterrupted(tiny_cfg):
    # The student stages add the sparsity drawn per step and the Brevitas quantizer state.
    cfg_full = tiny_cfg("full")
    run_stage(cfg_full, "teacher", progress=False)
    cfg = tiny_cfg("killed")
    stage_paths(cfg, "teacher")["final"].parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):  # same teacher for both runs
        src = stage_paths(cfg_full, "teacher")["final"].with_suffix(suffix)
        stage_paths(cfg, "teacher")["final"].with_suffix(suffix).write_bytes(src.read_bytes())
    for stage in ("distill", "finetune"):
        full = run_stage(cfg_full, stage, progress=False)
        resumed = _run_killed_then_resumed(cfg, stage, [2])
        _assert_same_weights(load_checkpoint(full)[0], load_checkpoint(resumed)[0])
