"""The models' configuration: backbone, image sizes, head, ternary layers, top-k sparsity.

These are the ``model:`` section of a run configuration; :mod:`tatvpr_hw.config` composes them
into the whole run file (and turns validation errors into one message per bad key). Every
section forbids unknown keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["PATCH_PX", "ConfigSection", "HeadConfig", "TernaryConfig", "GRANULARITIES", "GranularityName",
           "SparsityConfig", "ModelConfig"]

PATCH_PX = 14


class ConfigSection(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HeadConfig(ConfigSection):
    name: Literal["boq", "salad", "mixvpr", "cls"] = "boq"
    preset: str = Field("tiny", description="named hyperparameter preset of the head (see brevitas_models.heads)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="head constructor arguments replacing the preset's")
    final_norm: Literal["release", "always"] = Field(
        "release", description="release: the backbone's final norm feeds the head as the head's release does "
                               "(BoQ: not); always: the final norm always feeds the head (Sparse-TeTRA student)")


class TernaryConfig(ConfigSection):
    blocks: bool = Field(True, description="ternary weights for every linear inside the transformer blocks")
    patch_embed: bool = Field(False, description="ternary patch-embedding projection")
    head: bool = Field(False, description="ternary linear layers in the aggregation head")
    per_channel: bool = Field(False, description="absmean scale per output channel instead of per tensor")
    act_bits: int = Field(8, ge=2, le=16, description="bits of the activation quantizer in front of each ternary linear")
    act_quant: bool = Field(True, description="quantize the input of each ternary linear to act_bits (false: float "
                                              "inputs, the Sparse-TeTRA reference; thresholds still calibrated "
                                              "for tracing)")
    float_ffn_blocks: list[int] = Field(
        default_factory=list, description="blocks (negative = from the end) whose FFN (mlp.fc1, mlp.fc2) stays a "
                                          "float dense nn.Linear without top-k (Sparse-TeTRA: [-1])")


GRANULARITIES = ("token", "bank", "tensor", "batch")
GranularityName = Literal["token", "bank", "tensor", "batch"]


class SparsityConfig(ConfigSection):
    granularity: GranularityName = Field(
        "token", description="top-k per token, per bank channel group within a token (docs/engine.md section 3), "
                             "or per sample tensor")
    banks: int = Field(32, ge=1, le=4096, description="channel groups (c mod banks) of the bank granularity; "
                                                      "32 = the default KV260 arch's SIMD and banks")
    default: float = Field(0.0, ge=0.0, lt=1.0, description="sparsity s used when none is given")
    gradient: Literal["masked", "straight_through"] = Field(
        "masked", description="gradient of the top-k: to kept entries only, or to every entry (straight-through, "
                              "the Sparse-TeTRA reference)")


class ModelConfig(ConfigSection):
    backbone: str = Field("vit_tiny_patch14_dinov2", description="timm-style backbone name")
    teacher_img_size: int = Field(224, ge=PATCH_PX, le=1022, description="teacher input side in px (multiple of 14)")
    student_img_size: int = Field(224, ge=PATCH_PX, le=1022, description="student input side in px (multiple of 14)")
    head: HeadConfig = Field(default_factory=HeadConfig)
    ternary: TernaryConfig = Field(default_factory=TernaryConfig)
    sparsity: SparsityConfig = Field(default_factory=SparsityConfig)
    teacher_checkpoint: Path | None = Field(None, description="local DINOv2 / timm / BoQ checkpoint for the teacher")
    student_backbone: str | None = Field(None, description="the student's backbone when it differs from the "
                                                           "teacher's (null = backbone)")
    student_head: HeadConfig | None = Field(None, description="the student's head when it differs from the "
                                                              "teacher's (null = head)")

    @field_validator("teacher_img_size", "student_img_size")
    @classmethod
    def _multiple_of_patch(cls, v: int) -> int:
        if v % PATCH_PX:
            raise ValueError(f"must be a multiple of the patch size {PATCH_PX} px, got {v}")
        return v
