"""Shared fixtures: a very small synthetic GSV benchmark and a matching run config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tatvpr_hw.config import parse_config


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory) -> Path:
    from tatvpr_hw.config import SyntheticConfig
    from tatvpr_hw.data.synthetic import write_benchmark

    root = tmp_path_factory.mktemp("train_bench") / "data"
    syn = SyntheticConfig(places=8, train_images_per_place=2, eval_places=2, image_px=32, seed=3)
    write_benchmark(root, syn, syn.seed)
    return root


@pytest.fixture
def tiny_cfg(bench_root, tmp_path):
    """Factory: a config on the fixture benchmark at 28 px (2x2 patches + CLS), 2 places x 2
    images per batch (4 steps per epoch); ``overrides`` is merged into the train section."""

    def make(out: str = "run", **train):
        from tatvpr_hw.data.synthetic import manifest_for  # noqa: F401  (benchmark layout)

        stage = {"max_steps": 3, "lr": 1e-3, "warmup_steps": 1}
        data = {
            "name": "train-test", "seed": 5,
            "model": {"backbone": "vit_tiny_patch14_dinov2", "teacher_img_size": 28,
                      "student_img_size": 28, "head": {"name": "boq", "preset": "tiny"}},
            "data": {"source": "synthetic", "root": str(bench_root), "places_per_batch": 2,
                     "images_per_place": 2,
                     "synthetic": {"places": 8, "train_images_per_place": 2, "eval_places": 2,
                                   "image_px": 32, "seed": 3}},
            "train": {"out_dir": str(tmp_path / out), "accelerator": "cpu", "devices": 1,
                      "checkpoint_every_n_steps": 1,
                      "teacher": dict(stage), "distill": dict(stage, distill_layers=[1, 3]),
                      "finetune": dict(stage, trainable_blocks=2)},
        }
        data["train"].update(train)
        return parse_config(data, "<test>")

    return make
