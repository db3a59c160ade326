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


class StartState(L.Callback):
    """Record where a (resumed) run really starts: its global step, the optimizer's own step
    count and whether the optimizer holds moment estimates, at the first batch."""

    def __init__(self) -> None:
        self.step = None
        self.opt_steps = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.step is not None:
            return
        self.step = trainer.global_step
        opt = trainer.optimizers[0]
        counts = [int(st["step"]) for st in opt.state.values() if "step" in st]
        self.opt_steps = max(counts) if counts else 0


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max().item()}"


def _run_killed_then_resumed(cfg, stage, kill_steps):
    for i, k in enumerate(kill_steps):
        start = StartState()
        with pytest.raises(Killed):
            run_stage(cfg, stage, resume=i > 0, callbacks=[start, KillAt(k)], progress=False)
        # each resumed attempt proves it reloaded the previous kill's state, not step 0
        assert start.step == (kill_steps[i - 1] if i else 0), (stage, start.step)
        assert start.opt_steps == start.step, (stage, start.opt_steps)
        assert stage_paths(cfg, stage)["ckpt"].is_file()
        assert not stage_paths(cfg, stage)["final"].exists()
    start = StartState()
    out = run_stage(cfg, stage, resume=True, callbacks=[start], progress=False)
    assert start.step == kill_steps[-1], f"{stage}: resumed run started at step {start.step}, not {kill_steps[-1]}"
    assert start.opt_steps == kill_steps[-1], f"{stage}: optimizer state not restored ({start.opt_steps} steps)"
    return out


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
