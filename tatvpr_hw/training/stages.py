"""The training recipe as stages: teacher -> (stage 1 init) distill -> finetune.

``run_stage(cfg, stage, resume=False)`` trains one stage with Lightning and writes

- ``<out_dir>/<stage>/last.ckpt``: Lightning's full training state (weights, optimizer,
  scheduler, loop counters), saved atomically every ``train.checkpoint_every_n_steps`` steps;
  ``resume=True`` continues from it and ends on the same weights as an uninterrupted run;
- ``<out_dir>/<stage>/logs/``: CSV log of loss, learning rate and sparsity per step;
- ``<out_dir>/<stage>.safetensors`` + ``.json``: the final weights and metadata
  (:func:`brevitas_models.checkpoint.save_checkpoint`), what the rest of the flow reads.

The distill stage also writes ``<out_dir>/init.safetensors``: the stage-1 student (teacher
weights, ternarized, activation thresholds calibrated on training images) before any training.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from tatvpr_hw.config import Config, StageConfig, config_to_dict
from tatvpr_hw.errors import UserError
from tatvpr_hw.training.data import steps_per_epoch
from tatvpr_hw.training.modules import (DistillStage, MetricStage, StageModule, resolve_layers,
                                        set_model_sparsity, trainable_names)

log = logging.getLogger(__name__)

STAGES = ("teacher", "distill", "finetune")
CHOICES = STAGES + ("all",)
CKPT_NAME = "last"


class AtomicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes to a temporary file and renames it into place, so a run
    killed while saving never leaves a truncated ``last.ckpt`` behind."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("AtomicCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Also keep the final state, so resuming a finished stage is a no-op.
        if self.dirpath is not None and self._last_global_step_saved != trainer.global_step:
            self._save_checkpoint(trainer, os.path.join(self.dirpath, f"{CKPT_NAME}.ckpt"))


def stage_paths(cfg: Config, stage: str) -> dict[str, Path]:
    """Where a stage writes: its Lightning folder, resume checkpoint and final weights."""
    out = Path(cfg.train.out_dir)
    return {"dir": out / stage, "ckpt": out / stage / f"{CKPT_NAME}.ckpt",
            "final": out / f"{stage}.safetensors"}


def _strategy(name: str):
    # The unused-parameter search keeps DDP correct for every head (some heads leave prefix
    # tokens or the final norm out of the loss); its cost is small next to a ViT step.
    return {"ddp": "ddp_find_unused_parameters_true",
            "ddp_spawn": "ddp_spawn_find_unused_parameters_true"}.get(name, name)


def _train_dataset(cfg: Config, img_size: int):
    from tatvpr_hw.data.gsv import GSVCitiesDataset, gsv_root

    if cfg.data.source == "synthetic":
        from tatvpr_hw.data.synthetic import ensure_benchmark

        ensure_benchmark(cfg)
    return GSVCitiesDataset(gsv_root(cfg.data), cfg.data.gsv_cities, img_size,
                            images_per_place=cfg.data.images_per_place, train=True, seed=cfg.seed)


def _meta(cfg: Config, *, role: str, stage: str, step: int, extra: dict[str, Any] | None = None) -> dict:
    from brevitas_models.checkpoint import rng_state

    teacher_ck = cfg.model.teacher_checkpoint
    meta = {"config": config_to_dict(cfg), "role": role, "stage": stage, "step": int(step),
            "seed": cfg.seed, "rng": rng_state(),
            "teacher_checkpoint": str(teacher_ck) if teacher_ck is not None else None}
    meta.update(extra or {})
    return meta


def load_stage_model(cfg: Config, stage: str):
    """The model a finished stage wrote (``<out_dir>/<stage>.safetensors``), ready for eval.

    ``stage`` is ``teacher`` (float teacher) or ``init`` / ``distill`` / ``finetune`` (the
    student, its sparsity set to ``model.sparsity.default``).
    """
    from brevitas_models.checkpoint import load_checkpoint, load_into
    from brevitas_models.model import build_model

    path = Path(cfg.train.out_dir) / f"{stage}.safetensors"
    if not path.is_file():
        made_by = "distill" if stage == "init" else stage
        raise UserError(f"{path} not found: run `tatvpr train --config ... --stage {made_by}` first")
    sd, meta = load_checkpoint(path)
    model = build_model(cfg.model, student=stage != "teacher")
    load_into(model, sd, source=str(path))
    if stage != "teacher":
        set_model_sparsity(model, cfg.model.sparsity.default)
    model.eval()
    return model


def _total_steps(stage_cfg: StageConfig, num_places: int, places_per_batch: int, world_size: int) -> int:
    if stage_cfg.max_steps > 0:
        return stage_cfg.max_steps
    return stage_cfg.epochs * steps_per_epoch(num_places, places_per_batch, world_size)


def fit_stage(module: StageModule, cfg: Config, stage: str, stage_cfg: StageConfig, *,
              resume: bool = False, callbacks: Sequence[Callback] = (), progress: bool = True
              ) -> L.Trainer:
    """Run Lightning's Trainer on ``module`` for one stage (resuming from ``last.ckpt``)."""
    paths = stage_paths(cfg, stage)
    paths["dir"].mkdir(parents=True, exist_ok=True)
    t = cfg.train
    ckpt = AtomicCheckpoint(dirpath=paths["dir"], filename=CKPT_NAME, monitor=None, save_top_k=1,
                            every_n_train_steps=t.checkpoint_every_n_steps, save_last=False,
                            enable_version_counter=False, save_on_train_epoch_end=False)
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=_strategy(t.strategy), precision=t.precision,
        max_epochs=-1, max_steps=1,  # the real step budget is set below, once world_size is known
        gradient_clip_val=t.grad_clip or None, gradient_clip_algorithm="norm",
        callbacks=[*callbacks, ckpt], logger=CSVLogger(paths["dir"], name="logs"),
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, log_every_n_steps=1, use_distributed_sampler=False,
        default_root_dir=paths["dir"], deterministic=t.deterministic,
    )
    total = _total_steps(stage_cfg, len(module.dataset), module.places_per_batch, trainer.world_size)
    trainer.fit_loop.epoch_loop.max_steps = total
    module.total_steps = total
    module.steps_per_epoch = steps_per_epoch(len(module.dataset), module.places_per_batch, trainer.world_size)
    ckpt_path = None
    if resume and paths["ckpt"].is_file():
        ckpt_path = str(paths["ckpt"])
        log.info("%s: resuming from %s", stage, ckpt_path)
    else:
        if resume:
            log.info("%s: no %s to resume from; starting from scratch", stage, paths["ckpt"])
        for old in paths["dir"].glob("*.ckpt"):
            old.unlink()
    log.info("%s: %d steps (%d place(s) x %d image(s) per batch, %d device(s))", stage, total,
             module.places_per_batch, cfg.data.images_per_place, trainer.world_size)
    with warnings.catch_warnings():
        # Our loader resumes from trainer.global_step (tatvpr_hw.training.data), which
        # Lightning cannot see, and the sampler-less DataLoader is intentional.
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Consider setting `persistent_workers=True`.*")
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen teacher
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)  # tensors + plain containers only
    return trainer


def stage_places_per_batch(cfg: Config, stage_cfg: StageConfig) -> int:
    """P of a stage's P x K batches: ``train.<stage>.places_per_batch``, else ``data.places_per_batch``."""
    return stage_cfg.places_per_batch or cfg.data.places_per_batch


def _common_kwargs(cfg: Config, stage_cfg: StageConfig, dataset) -> dict[str, Any]:
    return dict(dataset=dataset, places_per_batch=stage_places_per_batch(cfg, stage_cfg), lr=stage_cfg.lr,
                weight_decay=stage_cfg.weight_decay, warmup_steps=stage_cfg.warmup_steps,
                seed=cfg.seed, num_workers=cfg.data.num_workers,
                sparsity_schedule=stage_cfg.sparsity_schedule, lr_schedule=stage_cfg.lr_schedule,
                weight_decay_on=stage_cfg.weight_decay_on, augment=stage_cfg.augment,
                randaugment_ops=stage_cfg.randaugment_ops, randaugment_magnitude=stage_cfg.randaugment_magnitude)


def _finish(trainer: L.Trainer, module: StageModule, cfg: Config, *, role: str, stage: str, wall_s: float,
            extra: dict[str, Any] | None = None) -> Path:
    from brevitas_models.checkpoint import save_checkpoint

    final = stage_paths(cfg, stage)["final"]
    model = module.model
    if trainer.is_global_zero:
        if role == "student":
            set_model_sparsity(model, cfg.model.sparsity.default)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        # fit() returned normally, so the step budget was reached (after ddp_spawn the main
        # process's trainer does not carry the workers' step counter).
        step = max(trainer.global_step, module.total_steps)
        save_checkpoint(final, model.cpu(), _meta(cfg, role=role, stage=stage, step=step,
                                                  extra={"train_wall_s": round(wall_s, 2),
                                                         "final_metrics": metrics, **(extra or {})}))
        log.info("%s: %d steps in %.1f s -> %s", stage, step, wall_s, final)
    return final


def _train_teacher(cfg: Config, resume: bool, callbacks, progress: bool) -> Path:
    from brevitas_models.checkpoint import load_teacher, save_checkpoint
    from brevitas_models.model import build_model

    paths = stage_paths(cfg, "teacher")
    if cfg.model.teacher_checkpoint is not None:
        teacher = load_teacher(cfg.model)
        log.info("teacher: loaded %s (no training)", cfg.model.teacher_checkpoint)
        return save_checkpoint(paths["final"], teacher,
                               _meta(cfg, role="teacher", stage="teacher", step=0,
                                     extra={"loaded_from": str(cfg.model.teacher_checkpoint)}))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    teacher = build_model(cfg.model, student=False)
    dataset = _train_dataset(cfg, teacher.img_size)
    sc = cfg.train.teacher
    module = MetricStage(teacher, trainable_names(teacher, "teacher"), **_common_kwargs(cfg, sc, dataset))
    t0 = time.perf_counter()
    trainer = fit_stage(module, cfg, "teacher", sc, resume=resume, callbacks=callbacks, progress=progress)
    return _finish(trainer, module, cfg, role="teacher", stage="teacher", wall_s=time.perf_counter() - t0)


def _calibration_batches(dataset, cfg: Config, img_size: int, n_batches: int = 2):
    from tatvpr_hw.training.data import make_step_loader
    from tatvpr_hw.training.modules import resize_images

    loader = make_step_loader(dataset, stage_places_per_batch(cfg, cfg.train.distill), cfg.seed + 1)
    for i, (images, _) in enumerate(loader):
        if i >= n_batches:
            break
        yield resize_images(images, img_size)


def init_student(cfg: Config, teacher, dataset):
    """Stage 1: student = teacher weights, ternarized (``train.distill.student_init: teacher``;
    ``random`` keeps the student's seeded random init, as the Sparse-TeTRA reference, in timm's or
    the reference's distributions per ``train.distill.random_init``); int8 input
    thresholds calibrated on training images at sparsity 0. Writes ``<out_dir>/init.safetensors``."""
    from brevitas_models.checkpoint import init_student_from_teacher, save_checkpoint
    from brevitas_models.model import build_model
    from brevitas_models.quant import calibrate_input_scales
    from brevitas_models.vit import init_sparse_tetra_

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    student = build_model(cfg.model, student=True)
    if cfg.train.distill.student_init == "teacher":
        init_student_from_teacher(student, teacher)
    elif cfg.train.distill.random_init == "sparse_tetra":
        init_sparse_tetra_(student.backbone)
    set_model_sparsity(student, 0.0)
    calibrate_input_scales(student, _calibration_batches(dataset, cfg, student.img_size))
    save_checkpoint(Path(cfg.train.out_dir) / "init", student,
                    _meta(cfg, role="student", stage="init", step=0))
    return student


def _train_distill(cfg: Config, resume: bool, callbacks, progress: bool) -> Path:
    teacher = load_stage_model(cfg, "teacher")
    sc = cfg.train.distill
    layers = resolve_layers(sc.distill_layers, len(teacher.backbone.blocks))
    img_size = max(cfg.model.teacher_img_size, cfg.model.student_img_size)
    dataset = _train_dataset(cfg, img_size)
    student = init_student(cfg, teacher, dataset)
    module = DistillStage(student, teacher, layers, target=sc.distill_target, sparsity_range=sc.sparsity_range,
                          **_common_kwargs(cfg, sc, dataset))
    t0 = time.perf_counter()
    trainer = fit_stage(module, cfg, "distill", sc, resume=resume, callbacks=callbacks, progress=progress)
    return _finish(trainer, module, cfg, role="student", stage="distill", wall_s=time.perf_counter() - t0,
                   extra={"distill_layers": module.layers, "distill_target": sc.distill_target,
                          "student_init": sc.student_init, "random_init": sc.random_init,
                          "sparsity_range": list(sc.sparsity_range)})


def _train_finetune(cfg: Config, resume: bool, callbacks, progress: bool) -> Path:
    student = load_stage_model(cfg, "distill")
    student.train()
    dataset = _train_dataset(cfg, student.img_size)
    sc = cfg.train.finetune
    trainable = trainable_names(student, "finetune", trainable_blocks=sc.trainable_blocks)
    module = MetricStage(student, trainable, sparsity_range=sc.sparsity_range, **_common_kwargs(cfg, sc, dataset))
    t0 = time.perf_counter()
    trainer = fit_stage(module, cfg, "finetune", sc, resume=resume, callbacks=callbacks, progress=progress)
    return _finish(trainer, module, cfg, role="student", stage="finetune", wall_s=time.perf_counter() - t0,
                   extra={"trainable_blocks": sc.trainable_blocks, "sparsity_range": list(sc.sparsity_range)})


_RUNNERS = {"teacher": _train_teacher, "distill": _train_distill, "finetune": _train_finetune}


def run_stage(cfg: Config, stage: str, resume: bool = False, *, callbacks: Sequence[Callback] = (),
              progress: bool = True) -> Path:
    """Train ``stage`` (``teacher``, ``distill``, ``finetune`` or ``all``); return the final
    ``.safetensors`` path (for ``all``: the fine-tuned student's).

    With ``resume=True`` a stage continues from ``<out_dir>/<stage>/last.ckpt`` when present
    (and a stage whose final checkpoint already holds its full step count is skipped).
    ``callbacks`` are extra Lightning callbacks (tests use one to interrupt a run).
    """
    if stage not in CHOICES:
        raise UserError(f"unknown training stage {stage!r}; allowed: {', '.join(CHOICES)}")
    if stage == "all":
        path = None
        for s in STAGES:
            path = run_stage(cfg, s, resume, callbacks=callbacks, progress=progress)
        return path
    torch.set_float32_matmul_precision("high")
    return _RUNNERS[stage](cfg, resume, list(callbacks), progress)
