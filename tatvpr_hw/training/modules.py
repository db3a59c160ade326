"""Lightning modules of the training stages.

- :class:`MetricStage`: multi-similarity metric learning on P x K batches. The teacher stage
  trains every weight of the float model; stage 3 (fine-tuning) trains only the head and the
  last ``trainable_blocks`` blocks of the ternary student, at a sparsity drawn per batch.
- :class:`DistillStage`: stage 2, the frozen float teacher's block tokens are the targets of
  the student's (token-level MSE summed over the chosen blocks), at a sparsity drawn per step.

Everything a step depends on is a function of ``(seed, global step)`` — the batch (see
:mod:`tatvpr_hw.training.data`), the sparsity (:func:`step_sparsity`) and the torch RNG
(reseeded before every step, :func:`step_seed`) — so a run resumed from one of Lightning's
checkpoints reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tatvpr_hw.errors import UserError
from tatvpr_hw.training.data import make_step_loader
from tatvpr_hw.training.losses import MultiSimilarity, distill_loss
from tatvpr_hw.training.schedule import warmup_cosine_factor

log = logging.getLogger(__name__)

# Parameters never weight-decayed (besides biases and norm weights, i.e. every 1-D tensor).
_NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "register_tokens", "mask_token")
# Salt so the sparsity stream and the RNG stream of a step differ.
_SPARSITY_SALT = 0x5A
_TORCH_SALT = 0x7E


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the torch RNG for optimizer step ``step`` on ``rank`` (dropout etc.)."""
    return int(np.random.SeedSequence([seed, _TORCH_SALT, step, rank]).generate_state(1)[0])


def step_sparsity(seed: int, step: int, sparsity_range: tuple[float, float], *,
                  curriculum: tuple[int, int] | None = None) -> float:
    """Sparsity of step ``step``: uniform in ``sparsity_range``, the same on every rank.

    With ``curriculum = (epoch, epochs)`` the upper end grows with the epoch as the reference's
    distillation (``trainer/pretrain.py`` ``on_train_epoch_start``): s ~ U[lo, lo + (hi - lo) *
    epoch / epochs] (epoch 0 draws exactly ``lo``).
    """
    lo, hi = sparsity_range
    if curriculum is not None:
        epoch, epochs = curriculum
        hi = lo + (hi - lo) * epoch / max(1, epochs)
    u = np.random.default_rng([seed, _SPARSITY_SALT, step]).random()
    return float(lo + (hi - lo) * u)


def randaugment(images: torch.Tensor, num_ops: int, magnitude: int) -> torch.Tensor:
    """torchvision ``RandAugment(num_ops, magnitude)`` on each image of an ImageNet-normalised
    batch ``[B, 3, H, W]`` (its own draw per image, from the torch RNG): de-normalised to
    uint8, augmented, normalised back. The reference applies it to the PIL image before
    ``ToTensor``; the uint8 round trip here is the same quantisation."""
    from torchvision.transforms import InterpolationMode, RandAugment

    from tatvpr_hw.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    aug = RandAugment(num_ops=num_ops, magnitude=magnitude, interpolation=InterpolationMode.BILINEAR)
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    u8 = ((images * std + mean).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    out = torch.stack([aug(img) for img in u8])
    return (out.to(images.dtype) / 255.0 - mean) / std


def set_model_sparsity(model: nn.Module, s: float) -> int:
    from brevitas_models.sparsity import set_sparsity

    return set_sparsity(model, s)


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square-resize a batch [B, 3, H, W] to ``size`` px (antialiased bilinear); no-op if equal."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _blocks(model: nn.Module) -> nn.Module:
    try:
        return model.backbone.blocks
    except AttributeError:
        raise UserError(f"{type(model).__name__} has no backbone.blocks: training needs a VPRModel "
                        f"with a timm-style ViT backbone") from None


def _final_norm_names(model: nn.Module) -> tuple[str, ...]:
    """Backbone modules after the blocks (used only when the head takes normalised tokens)."""
    return ("backbone.norm.", "backbone.fc_norm.", "backbone.head.")


def trainable_names(model: nn.Module, stage: str, *, trainable_blocks: int = -1,
                    distill_layers: Sequence[int] | None = None, final_norm: bool = False) -> list[str]:
    """Names of the parameters a stage trains.

    - ``teacher``: every parameter the forward pass uses (the final norm only if the head
      consumes normalised tokens);
    - ``distill``: the backbone up to the last distilled block (the head and later blocks get
      no gradient from the token loss), plus the final norm with ``final_norm`` (a loss on the
      normalised output);
    - ``finetune``: the head, the last ``trainable_blocks`` blocks (-1 = all blocks, 0 = head
      only) and the final norm when the head uses it.
    """
    depth = len(_blocks(model))
    uses_norm = bool(getattr(model, "final_norm", True))
    names = [n for n, _ in model.named_parameters()]
    after = _final_norm_names(model)

    def block_index(n: str) -> int | None:
        if n.startswith("backbone.blocks."):
            return int(n.split(".")[2])
        return None

    if stage == "teacher":
        return [n for n in names if uses_norm or not n.startswith(after)]
    if stage == "distill":
        last = max(distill_layers) if distill_layers else depth - 1
        keep = []
        for n in names:
            if n.startswith(after) and final_norm and n.startswith("backbone.norm."):
                keep.append(n)
                continue
            if not n.startswith("backbone.") or n.startswith(after):
                continue
            b = block_index(n)
            if b is not None and b > last:
                continue
            keep.append(n)
        return keep
    if stage == "finetune":
        first = 0 if trainable_blocks < 0 else depth - min(trainable_blocks, depth)
        keep = []
        for n in names:
            b = block_index(n)
            if n.startswith("head."):
                keep.append(n)
            elif b is not None and b >= first:
                keep.append(n)
            elif n.startswith(after) and uses_norm and trainable_blocks != 0:
                keep.append(n)
            elif trainable_blocks < 0 and n.startswith("backbone.") and b is None and not n.startswith(after):
                keep.append(n)
        return keep
    raise UserError(f"unknown training stage {stage!r}; allowed: teacher, distill, finetune")


class StageModule(L.LightningModule):
    """Shared machinery: optimizer, schedule, data order, per-step seeding and sparsity.

    Args:
        model: the model being trained (a ``VPRModel``); its parameters outside
            ``trainable`` are frozen.
        trainable: names of the parameters to train.
        dataset: items ``dataset[(place_index, item_seed)] -> (images [K,3,H,W], labels [K])``.
        places_per_batch: P per rank.
        lr, weight_decay, warmup_steps: AdamW and the warm-up + cosine schedule.
        seed: run seed (data order, sparsity draws, per-step torch RNG).
        sparsity_range: ``(lo, hi)`` for a sparsity drawn per step, or None (teacher).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, model: nn.Module, trainable: Sequence[str], *, dataset, places_per_batch: int,
                 lr: float, weight_decay: float, warmup_steps: int, seed: int,
                 sparsity_range: tuple[float, float] | None = None, num_workers: int = 0,
                 sparsity_schedule: str = "uniform", lr_schedule: str = "warmup_cosine",
                 weight_decay_on: str = "matrices", augment: str = "none", randaugment_ops: int = 2,
                 randaugment_magnitude: int = 9) -> None:
        super().__init__()
        self.model = model
        trainable = set(trainable)
        unknown = trainable - {n for n, _ in model.named_parameters()}
        if unknown:
            raise UserError(f"unknown trainable parameters: {sorted(unknown)[:5]}")
        if not trainable:
            raise UserError("this stage has no trainable parameter (check train.*.trainable_blocks)")
        self.trainable = sorted(trainable)
        self._apply_trainable()
        self.dataset = dataset
        self.places_per_batch = int(places_per_batch)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_steps = int(warmup_steps)
        self.seed = int(seed)
        self.sparsity_range = tuple(sparsity_range) if sparsity_range is not None else None
        self.num_workers = int(num_workers)
        self.sparsity_schedule = sparsity_schedule
        self.lr_schedule = lr_schedule
        self.weight_decay_on = weight_decay_on
        self.augment = augment
        self.randaugment_ops = int(randaugment_ops)
        self.randaugment_magnitude = int(randaugment_magnitude)
        self.total_steps = 1  # set by the stage runner before fit()
        self.steps_per_epoch = 1  # set by the stage runner before fit() (curriculum)
        self.current_sparsity: float | None = None

    # ------------------------------------------------------------------ data
    def train_dataloader(self):
        trainer = self.trainer
        return make_step_loader(self.dataset, self.places_per_batch, self.seed,
                                rank=trainer.global_rank, world_size=trainer.world_size,
                                start_step=trainer.global_step, num_workers=self.num_workers)

    # ------------------------------------------------------------------ optimisation
    def _apply_trainable(self) -> None:
        keep = set(self.trainable)
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in keep)

    def configure_optimizers(self):
        # Again here: Lightning restores a resumed run's weights before this, and Brevitas
        # replaces its threshold Parameters on load_state_dict (requires_grad back to True).
        self._apply_trainable()
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            if self.weight_decay_on == "matrices" and (p.ndim < 2 or any(k in n for k in _NO_DECAY_NAMES)):
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [{"params": decay, "weight_decay": self.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        total, warm = self.total_steps, self.warmup_steps
        if self.lr_schedule == "constant":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine_factor(step, warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ per-step determinism
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        torch.manual_seed(step_seed(self.seed, step, self.global_rank))
        if self.sparsity_range is not None:
            curriculum = None
            if self.sparsity_schedule == "curriculum":
                epochs = -(-self.total_steps // self.steps_per_epoch)
                curriculum = (step // self.steps_per_epoch, epochs)
            self.current_sparsity = step_sparsity(self.seed, step, self.sparsity_range, curriculum=curriculum)
            set_model_sparsity(self.model, self.current_sparsity)

    def _replica_spread(self) -> torch.Tensor:
        """max - min over ranks of the sum of the trainable weights (0 when DDP keeps the
        replicas in sync; they are equal before every step)."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for p in self.model.parameters():
            if p.requires_grad:
                total = total + p.detach().double().sum()
        sums = self.all_gather(total)
        return (sums.max() - sums.min()).float()

    def augmented(self, images: torch.Tensor) -> torch.Tensor:
        """The training images after the stage's augmentation (``augment``)."""
        if self.augment == "randaugment":
            return randaugment(images, self.randaugment_ops, self.randaugment_magnitude)
        return images

    def _log_common(self, loss: torch.Tensor, batch_size: int) -> None:
        self.log("loss", loss, prog_bar=True, batch_size=batch_size)
        if self.trainer.world_size > 1:
            self.log("ddp_replica_spread", self._replica_spread(), batch_size=batch_size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size)
        if self.current_sparsity is not None:
            self.log("sparsity", self.current_sparsity, prog_bar=True, batch_size=batch_size)


class MetricStage(StageModule):
    """Multi-similarity loss on the model's descriptors (teacher stage, stage 3)."""

    def __init__(self, model: nn.Module, trainable: Sequence[str], **kwargs) -> None:
        super().__init__(model, trainable, **kwargs)
        self.criterion = MultiSimilarity()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        desc = self.model(self.augmented(resize_images(images, self.model.img_size)))
        loss, mined = self.criterion(desc, labels)
        self._log_common(loss, images.shape[0])
        self.log("mined_fraction", mined, batch_size=images.shape[0])
        return loss


class _TokenTap:
    """Collects the outputs of chosen blocks during one forward pass."""

    def __init__(self, blocks: nn.Module, layers: Sequence[int]) -> None:
        self.blocks, self.layers, self.out = blocks, list(layers), {}
        self.handles = []

    def __enter__(self) -> dict[int, torch.Tensor]:
        for i in self.layers:
            self.handles.append(self.blocks[i].register_forward_hook(self._hook(i)))
        return self.out

    def _hook(self, i: int):
        def hook(module, args, output):
            self.out[i] = output
        return hook

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def resolve_layers(layers: Sequence[int] | str, depth: int) -> list[int]:
    """``"all"`` or block indices (negative counts from the end) -> sorted unique indices."""
    if layers == "all":
        return list(range(depth))
    out = set()
    for i in layers:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise UserError(f"train.distill.distill_layers: block {i} does not exist; the backbone "
                            f"has {depth} blocks (0..{depth - 1}, or negative from the end)")
        out.add(j)
    if not out:
        raise UserError("train.distill.distill_layers is empty; give block indices or 'all'")
    return sorted(out)


class DistillStage(StageModule):
    """Stage 2: token-level MSE to a frozen teacher at a sparsity drawn every step.

    The teacher is a frozen submodule kept in eval mode; its tokens are computed without
    gradient. Images are fed to each model at its own ``img_size``; the student's patch
    tokens are resampled to the teacher's grid before the MSE.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, layers: Sequence[int], *,
                 target: str = "blocks", **kwargs) -> None:
        if target == "final_patch":
            layers = [len(_blocks(student)) - 1]
            trainable = trainable_names(student, "distill", distill_layers=layers, final_norm=True)
        else:
            trainable = trainable_names(student, "distill", distill_layers=layers)
        super().__init__(student, trainable, **kwargs)
        depth_s, depth_t = len(_blocks(student)), len(_blocks(teacher))
        if target == "blocks" and depth_s != depth_t:
            raise UserError(f"student has {depth_s} blocks, teacher {depth_t}: distillation pairs blocks one to one")
        self.target = target
        self.layers = list(layers)
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    @staticmethod
    def _grid(model: nn.Module) -> tuple[int, int]:
        return tuple(model.grid_hw())

    def block_tokens(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        with _TokenTap(_blocks(model), self.layers) as out:
            model.forward_features(resize_images(images, model.img_size))
        return [out[i] for i in self.layers]

    def final_patch_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(student, teacher) patch tokens of the reference's loss (``trainer/pretrain.py``):
        the student's output after its final norm (RandAugment-ed images when ``augment``), the
        teacher's last block before its final norm (clean images); prefix tokens dropped."""
        from brevitas_models.model import _backbone_tokens

        t_bb, s_bb = self.teacher.backbone, self.model.backbone
        with torch.no_grad():
            t = _backbone_tokens(t_bb, resize_images(images, self.teacher.img_size), final_norm=False)
        s = s_bb.forward_features(self.augmented(resize_images(images, self.model.img_size)))
        return s[:, int(s_bb.num_prefix_tokens):], t[:, int(t_bb.num_prefix_tokens):]

    def training_step(self, batch, batch_idx):
        images, _ = batch
        if self.target == "final_patch":
            s_patch, t_patch = self.final_patch_tokens(images)
            loss = distill_loss([s_patch], [t_patch], num_prefix=0, student_grid=self._grid(self.model),
                                teacher_grid=self._grid(self.teacher))
            self._log_common(loss, images.shape[0])
            return loss
        if self.augment != "none":
            raise UserError("train.distill.augment needs distill_target: final_patch (the block-token loss "
                            "feeds both models the same images)")
        with torch.no_grad():
            t_tokens = self.block_tokens(self.teacher, images)
        s_tokens = self.block_tokens(self.model, images)
        loss = distill_loss(s_tokens, t_tokens,
                            num_prefix=int(self.model.backbone.num_prefix_tokens),
                            student_grid=self._grid(self.model), teacher_grid=self._grid(self.teacher))
        self._log_common(loss, images.shape[0])
        return loss
