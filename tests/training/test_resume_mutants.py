"""The resume path (tatvpr_hw.training.stages: fit_stage, stage_paths, AtomicCheckpoint) on a toy
Lightning module, fast enough for `make mutation` (docs/testing.md, "resume"): a few seconds a
run instead of a ViT stage's tens. The module trains a 3 -> 1 linear map with Adam and a
per-step LR schedule on the real step loader (tatvpr_hw.training.data), so a resumed run has
to restore the weights, the optimizer moments, the scheduler and the data position.

Expected values come from the test's own settings: 8 places, 2 per batch -> 4 steps an epoch;
the step a checkpoint holds is the last multiple of train.checkpoint_every_n_steps reached.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from tatvpr_hw.training.data import make_step_loader
from tatvpr_hw.training.stages import AtomicCheckpoint, fit_stage, stage_paths


class Places:
    """8 places; item ``(place, seed)`` is one 3-value "image" and its label."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, item):
        place, seed = item
        g = torch.Generator().manual_seed(seed)
        return torch.randn(1, 3, 1, 1, generator=g) + place, torch.tensor([place])


class Toy(L.LightningModule):
    def __init__(self, num_workers: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 1)
        self.frozen = nn.Linear(1, 1).requires_grad_(False).eval()  # like the distill teacher
        self.dataset = Places()
        self.places_per_batch = 2
        self.num_workers = num_workers
        self.total_steps = 1

    def train_dataloader(self):
        return make_step_loader(self.dataset, self.places_per_batch, seed=7, start_step=self.trainer.global_step,
                                num_workers=self.num_workers)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.lin(x.flatten(1)).squeeze(1) - y.float()) ** 2).mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.lin.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Killed(RuntimeError):
    pass


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed(self.step)


class Probe(L.Callback):
    """What the trainer looked like at its first batch."""

    def __init__(self) -> None:
        self.seen = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen is not None:
            return
        opt = trainer.optimizers[0]
        counts = [int(s["step"]) for s in opt.state.values() if "step" in s]
        self.seen = {
            "step": trainer.global_step,
            "opt_steps": max(counts) if counts else 0,
            "lr": opt.param_groups[0]["lr"],
            "trainer": trainer,
        }


def _cfg(tiny_cfg, out="run", **train):
    return tiny_cfg(out, **{"checkpoint_every_n_steps": 2, "grad_clip": 0.0, **train})


def _fit(cfg, *, steps=6, resume=False, callbacks=(), progress=False, module=None):
    module = module or Toy()
    sc = cfg.train.teacher.model_copy(update={"max_steps": steps})
    trainer = fit_stage(module, cfg, "teacher", sc, resume=resume, callbacks=callbacks, progress=progress)
    return trainer, module


def _ckpt_step(cfg) -> int:
    return int(torch.load(stage_paths(cfg, "teacher")["ckpt"], map_location="cpu", weights_only=True)["global_step"])


def test_stage_paths_by_hand(tiny_cfg, tmp_path):
    p = stage_paths(tiny_cfg("x"), "distill")
    assert p == {"dir": tmp_path / "x" / "distill", "ckpt": tmp_path / "x" / "distill" / "last.ckpt",
                 "final": tmp_path / "x" / "distill.safetensors"}


def test_killed_and_resumed_equals_uninterrupted(tiny_cfg, caplog):
    full_t, full = _fit(_cfg(tiny_cfg, "full"))
    assert full_t.global_step == 6 and full.total_steps == 6  # crosses the epoch boundary at 4
    cfg = _cfg(tiny_cfg, "killed")
    with pytest.raises(Killed):
        _fit(cfg, callbacks=[KillAt(3)])
    # checkpoints every 2 steps: the kill before step 3 leaves step 2's, written atomically
    paths = stage_paths(cfg, "teacher")
    assert _ckpt_step(cfg) == 2
    assert sorted(p.name for p in paths["dir"].glob("*.ckpt*")) == ["last.ckpt"]
    probe = Probe()
    with caplog.at_level(logging.INFO, logger="tatvpr_hw.training.stages"):
        res_t, res = _fit(cfg, resume=True, callbacks=[probe])
    # it started where the checkpoint left off: step 2, Adam's 2 steps, the schedule's 1 / (1 + 2)
    assert (probe.seen["step"], probe.seen["opt_steps"]) == (2, 2)
    assert probe.seen["lr"] == pytest.approx(0.05 / 3)
    assert f"teacher: resuming from {paths['ckpt']}" in caplog.messages
    assert res_t.global_step == 6
    for a, b in zip(full.state_dict().values(), res.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(Toy().lin.weight, res.lin.weight)  # training moved it
    assert _ckpt_step(cfg) == 6
    assert sorted(p.name for p in paths["dir"].glob("*.ckpt*")) == ["last.ckpt"]


def test_final_state_is_checkpointed_and_resuming_a_finished_stage_is_a_no_op(tiny_cfg):
    # 5 steps, a checkpoint every 2: the periodic ones are at 2 and 4; the end of training adds 5
    cfg = _cfg(tiny_cfg)
    _fit(cfg, steps=5)
    assert _ckpt_step(cfg) == 5
    probe = Probe()
    t, _ = _fit(cfg, steps=5, resume=True, callbacks=[probe])
    assert probe.seen is None and t.global_step == 5  # nothing left to train


def test_checkpoint_every_n_steps_and_not_at_epoch_end(tiny_cfg):
    # every 3 steps; killed before step 6: the checkpoint is step 3's (not the epoch end's, 4)
    cfg = _cfg(tiny_cfg, checkpoint_every_n_steps=3)
    with pytest.raises(Killed):
        _fit(cfg, steps=8, callbacks=[KillAt(5)])
    assert _ckpt_step(cfg) == 3
    probe = Probe()
    _fit(cfg, steps=8, resume=True, callbacks=[probe])
    assert probe.seen["step"] == 3


def test_fresh_run_ignores_and_removes_old_checkpoints(tiny_cfg, caplog):
    cfg = _cfg(tiny_cfg)
    with pytest.raises(Killed):
        _fit(cfg, callbacks=[KillAt(3)])
    paths = stage_paths(cfg, "teacher")
    (paths["dir"] / "epoch=0-step=1.ckpt").write_bytes(b"stale")
    probe = Probe()
    with caplog.at_level(logging.INFO, logger="tatvpr_hw.training.stages"):
        _fit(cfg, steps=1, resume=False, callbacks=[probe])
    assert probe.seen["step"] == 0 and probe.seen["opt_steps"] == 0
    assert sorted(p.name for p in paths["dir"].glob("*.ckpt*")) == ["last.ckpt"]
    assert _ckpt_step(cfg) == 1
    assert "teacher: 1 steps (2 place(s) x 2 image(s) per batch, 1 device(s))" in caplog.messages
    assert not any("resum" in m for m in caplog.messages)


def test_resume_without_a_checkpoint_starts_from_scratch(tiny_cfg, caplog):
    cfg = _cfg(tiny_cfg)
    probe = Probe()
    with caplog.at_level(logging.INFO, logger="tatvpr_hw.training.stages"):
        _fit(cfg, steps=2, resume=True, callbacks=[probe])
    assert probe.seen["step"] == 0
    ckpt = stage_paths(cfg, "teacher")["ckpt"]
    assert f"teacher: no {ckpt} to resume from; starting from scratch" in caplog.messages


def test_trainer_settings_follow_the_config(tiny_cfg):
    cfg = _cfg(tiny_cfg, grad_clip=0.5, precision="bf16-mixed", deterministic=True)
    probe = Probe()
    paths = stage_paths(cfg, "teacher")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer, _ = _fit(cfg, steps=2, callbacks=[probe])
            deterministic = torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    t = probe.seen["trainer"]
    assert t is trainer
    assert (t.gradient_clip_val, t.gradient_clip_algorithm) == (0.5, "norm")
    assert t.precision == "bf16-mixed" and deterministic
    assert (t.max_epochs, t.max_steps) == (-1, 2)
    assert (t.num_sanity_val_steps, t.limit_val_batches, t.log_every_n_steps) == (0, 0, 1)
    assert t.progress_bar_callback is None and not any(isinstance(c, ModelSummary) for c in t.callbacks)
    assert isinstance(t.callbacks[0], Probe) and isinstance(t.checkpoint_callback, AtomicCheckpoint)
    assert t.default_root_dir == str(paths["dir"])
    assert not t._accelerator_connector.use_distributed_sampler
    assert isinstance(t.logger, CSVLogger) and t.logger.log_dir.startswith(str(paths["dir"] / "logs"))
    # one CSV row per step (log_every_n_steps = 1)
    rows = (paths["dir"] / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["epoch", "loss"] or "loss" in rows[0].split(",")
    assert len(rows) == 1 + 2
    # the warnings fit_stage silences on purpose stay silent (one-worker loader, frozen eval part)
    assert not [w for w in caught if "does not have many workers" in str(w.message)
                or "in eval mode" in str(w.message)]


def test_no_grad_clip_and_progress_bar(tiny_cfg):
    probe = Probe()
    _fit(_cfg(tiny_cfg), steps=1, callbacks=[probe], progress=True)
    t = probe.seen["trainer"]
    assert t.gradient_clip_val is None and t.progress_bar_callback is not None


def test_resume_warnings_stay_silent(tiny_cfg):
    # resuming mid-epoch (step 2 of 4) into a non-empty checkpoint folder with a worker process
    cfg = _cfg(tiny_cfg)
    with pytest.raises(Killed):
        _fit(cfg, callbacks=[KillAt(3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(cfg, steps=3, resume=True, module=Toy(num_workers=1))
    silenced = ["dataloader is not resumable", "does not have many workers", "persistent_workers=True",
                "in eval mode", "exists and is not empty"]
    assert not [str(w.message) for w in caught if any(s in str(w.message) for s in silenced)]


def test_fit_stage_defaults_are_a_fresh_run_with_a_progress_bar(tiny_cfg):
    cfg = _cfg(tiny_cfg)
    with pytest.raises(Killed):
        _fit(cfg, callbacks=[KillAt(3)])
    probe = Probe()
    sc = cfg.train.teacher.model_copy(update={"max_steps": 3})
    fit_stage(Toy(), cfg, "teacher", sc, callbacks=[probe])  # resume and progress left at their defaults
    assert probe.seen["step"] == 0 and probe.seen["trainer"].progress_bar_callback is not None
