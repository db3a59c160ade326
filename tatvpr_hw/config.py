"""Run configuration: one YAML file validated into typed objects.

Every section forbids unknown keys. A bad file raises :class:`UserError` whose message names
the key path, the value given and what is allowed, e.g.::

    configs/x.yaml: model.head.name = 'netvlad': Input should be 'boq', 'salad', 'mixvpr' or 'cls'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from brevitas_models.config import (  # the model section is the models' own; re-exported here
    GRANULARITIES,
    PATCH_PX,
    ConfigSection as _Section,
    GranularityName,
    HeadConfig,
    ModelConfig,
    SparsityConfig,
    TernaryConfig,
)
from tatvpr_hw.errors import UserError

__all__ = ["GRANULARITIES", "PATCH_PX", "GranularityName", "HeadConfig", "ModelConfig", "SparsityConfig",
           "TernaryConfig", "SyntheticConfig", "DataConfig", "StageConfig", "TrainConfig", "EvalConfig",
           "Config", "parse_config", "load_config", "config_to_dict"]


class SyntheticConfig(_Section):
    places: int = Field(60, ge=2, le=100000, description="number of synthetic places")
    train_images_per_place: int = Field(4, ge=2, le=64, description="GSV-style training images per place")
    db_per_place: int = Field(1, ge=1, le=16, description="database views per evaluation place")
    queries_per_place: int = Field(1, ge=1, le=16, description="query views per evaluation place")
    eval_places: int = Field(40, ge=2, le=100000, description="places in the evaluation split (disjoint from training)")
    image_px: int = Field(112, ge=32, le=1024, description="side of the written images in px")
    difficulty: float = Field(0.5, ge=0.0, le=1.0, description="0 = easy (small viewpoint/photometric change, no confusers) .. 1 = hard")
    seed: int = 0


class DataConfig(_Section):
    source: Literal["synthetic", "local"] = Field("synthetic", description="built-in benchmark or local data sets")
    root: Path = Field(Path("data/synthetic"), description="where the synthetic benchmark is written / read")
    gsv_root: Path | None = Field(None, description="GSV-Cities root (Dataframes/, Images/) for source=local")
    gsv_cities: list[str] = Field(default_factory=list, description="GSV-Cities city names; empty = all found")
    eval_root: Path | None = Field(None, description="evaluation set root (images/test/{database,queries}) for source=local")
    positive_radius_m: float = Field(25.0, gt=0.0, le=10000.0)
    places_per_batch: int = Field(16, ge=2, le=1024, description="P in P x K batches")
    images_per_place: int = Field(4, ge=2, le=64, description="K in P x K batches")
    num_workers: int = Field(0, ge=0, le=64)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)


class StageConfig(_Section):
    epochs: int = Field(1, ge=0, le=10000)
    max_steps: int = Field(-1, ge=-1, description="-1 = no step limit")
    lr: float = Field(1e-4, gt=0.0, le=10.0)
    weight_decay: float = Field(0.05, ge=0.0, le=10.0)
    warmup_steps: int = Field(0, ge=0)
    sparsity_range: tuple[float, float] = Field((0.1, 0.6), description="s drawn uniformly from [lo, hi] each step")
    trainable_blocks: int = Field(-1, ge=-1, description="last N blocks trainable (-1 = all)")
    distill_layers: list[int] | Literal["all"] = Field("all", description="block indices whose tokens are matched")
    # Sparse-TeTRA reference switches (docs/recipe.md); the defaults are this project's recipe.
    distill_target: Literal["blocks", "final_patch"] = Field(
        "blocks", description="distill: blocks = MSE per distill_layers block (all tokens); final_patch = one MSE "
                              "between the student's final-norm patch tokens and the teacher's last-block patch "
                              "tokens (prefix tokens dropped)")
    student_init: Literal["teacher", "random"] = Field(
        "teacher", description="distill: the student starts from the teacher's weights or from random init")
    random_init: Literal["timm", "sparse_tetra"] = Field(
        "timm", description="distill with student_init random: timm = timm's ViT init (position embedding "
                            "trunc-normal std 0.02, class token std 1e-6, linears trunc-normal std 0.02, zero "
                            "bias); sparse_tetra = the reference's (position embedding and class token N(0, 1), "
                            "PyTorch's default nn.Linear / nn.LayerNorm init)")
    places_per_batch: int | None = Field(
        None, ge=2, le=1024, description="P of this stage's P x K batches (null = data.places_per_batch)")
    sparsity_schedule: Literal["uniform", "curriculum"] = Field(
        "uniform", description="uniform: s ~ U[lo, hi] every step; curriculum: s ~ U[lo, lo + (hi - lo) * epoch / "
                               "epochs] (Sparse-TeTRA distillation)")
    lr_schedule: Literal["warmup_cosine", "constant"] = Field(
        "warmup_cosine", description="linear warm-up then cosine to 0, or a constant learning rate")
    weight_decay_on: Literal["matrices", "all"] = Field(
        "matrices", description="matrices: no decay on 1-D tensors, position embedding and tokens; all: every "
                                "trainable tensor (AdamW over model.parameters(), as the reference)")
    augment: Literal["none", "randaugment"] = Field(
        "none", description="torchvision RandAugment on the training images (distill: the student's only)")
    randaugment_ops: int = Field(2, ge=1, le=14, description="RandAugment num_ops")
    randaugment_magnitude: int = Field(9, ge=0, le=30, description="RandAugment magnitude (of 31 bins)")

    @field_validator("sparsity_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0.0 <= lo <= hi < 1.0):
            raise ValueError(f"must satisfy 0 <= lo <= hi < 1, got [{lo}, {hi}]")
        return v

    @model_validator(mode="after")
    def _random_init_needs_random_student(self) -> "StageConfig":
        if self.random_init != "timm" and self.student_init != "random":
            raise ValueError(f"random_init = {self.random_init!r} only applies to a randomly initialised "
                             f"student; set student_init: random or leave random_init at 'timm'")
        return self


class TrainConfig(_Section):
    teacher: StageConfig = Field(default_factory=lambda: StageConfig(lr=3e-4))
    distill: StageConfig = Field(default_factory=lambda: StageConfig(lr=3e-4))
    finetune: StageConfig = Field(default_factory=lambda: StageConfig(lr=1e-4, trainable_blocks=2))
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    accelerator: Literal["cpu", "gpu", "auto"] = "auto"
    devices: int | Literal["auto"] = "auto"
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    num_nodes: int = Field(1, ge=1)
    grad_clip: float = Field(1.0, ge=0.0)
    out_dir: Path = Field(Path("runs/tiny"), description="checkpoints and logs of the run")
    checkpoint_every_n_steps: int = Field(50, ge=1, le=10**9, description="optimizer steps between resume checkpoints (<out_dir>/<stage>/last.ckpt)")
    deterministic: bool = Field(False, description="torch deterministic algorithms (bit-exact resume on GPU; slower)")


class EvalConfig(_Section):
    sparsities: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    granularities: list[GranularityName] = Field(
        default_factory=lambda: [g for g in GRANULARITIES if g != "batch"],
        description="top-k granularities the student is evaluated under (set at run time, like the sparsity); "
                    "batch (the reference's) is evaluated only when named")
    recall_at: list[int] = Field(default_factory=lambda: [1, 5, 10])
    batch_size: int = Field(32, ge=1, le=4096)
    integer_sparsities: list[float] = Field(
        default_factory=list,
        description="sparsities at which the bit-exact integer model (docs/integer.md) is also evaluated "
                    "(token top-k); empty = not evaluated")

    @field_validator("sparsities", "integer_sparsities")
    @classmethod
    def _sparsities(cls, v: list[float]) -> list[float]:
        for s in v:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"every sparsity must be in [0, 1), got {s}")
        return v

    @field_validator("granularities")
    @classmethod
    def _granularities(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"must name at least one of {', '.join(GRANULARITIES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"must not repeat a granularity, got {v}")
        return v


class Config(_Section):
    name: str = "run"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sim: dict[str, Any] = Field(default_factory=dict, description="simulator settings (arch file, ...)")
    export: dict[str, Any] = Field(default_factory=dict, description="export settings")

    @model_validator(mode="after")
    def _local_paths(self) -> "Config":
        if self.data.source == "local" and self.data.eval_root is None:
            raise ValueError("data.source = 'local' needs data.eval_root")
        return self

    @model_validator(mode="after")
    def _trained_granularity_evaluated(self) -> "Config":
        g = self.model.sparsity.granularity
        if g not in self.eval.granularities:
            raise ValueError(f"eval.granularities = {self.eval.granularities} lacks the model's trained granularity "
                             f"model.sparsity.granularity = {g!r}; allowed: a list that includes {g!r}")
        return self


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{path}' (value {e['input']!r})")
        else:
            lines.append(f"{source}: {path} = {e.get('input')!r}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a mapping into a :class:`Config`; raise :class:`UserError` naming every bad key."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise UserError(_format_errors(source, err)) from None


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the built-in run configurations


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML run configuration (a bare name like ``tiny`` means ``configs/tiny.yaml``
    of the repository, from any working directory)."""
    path = Path(path)
    if not path.exists() and path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        builtin = CONFIG_DIR / f"{path.name}.yaml"
        if not builtin.is_file():
            known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise UserError(f"unknown config {str(path)!r}; built-in: {known or 'none'} (or give the path of a "
                            "YAML file)")
        path = builtin
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); allowed: a UTF-8 YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: malformed YAML: {err}") from None
    if data is None:
        raise UserError(f"{path}: the config file is empty; allowed: a YAML mapping with at least one section "
                        f"(e.g. copy configs/tiny.yaml)")
    return parse_config(data, str(path))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain JSON-able dict of a config (paths as strings)."""
    return cfg.model_dump(mode="json")
