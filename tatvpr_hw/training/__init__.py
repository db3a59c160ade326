"""The three-stage TAT-VPR training recipe (teacher, distillation, fine-tuning) on Lightning.

Public entry points::

    run_stage(cfg, stage, resume=False) -> Path   # stage in teacher|distill|finetune|all
    load_stage_model(cfg, stage) -> VPRModel      # teacher|init|distill|finetune weights, eval mode

See :mod:`tatvpr_hw.training.stages` for what each stage writes.
"""

from tatvpr_hw.training.stages import CHOICES, STAGES, load_stage_model, run_stage, stage_paths

__all__ = ["CHOICES", "STAGES", "load_stage_model", "run_stage", "stage_paths"]
