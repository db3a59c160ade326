"""Export inputs: the synthetic benchmark's query images when present, seeded images otherwise."""

from __future__ import annotations

import torch

from tatvpr_hw.config import parse_config


def test_sample_images_from_benchmark_and_seeded(tmp_path):
    from tatvpr_hw.data.synthetic import write_benchmark
    from tatvpr_hw.lower.common import sample_images

    cfg = parse_config({"data": {"root": str(tmp_path / "bench"),
                                 "synthetic": {"places": 4, "eval_places": 3, "image_px": 32,
                                               "train_images_per_place": 2}}})
    x0, src0 = sample_images(cfg, 2, seed=0, img_size=28)
    assert src0.startswith("seeded") and x0.shape == (2, 3, 28, 28)
    assert torch.equal(x0, sample_images(cfg, 2, seed=0, img_size=28)[0])
    write_benchmark(cfg.data.root, cfg.data.synthetic, seed=0)
    x1, src1 = sample_images(cfg, 2, seed=0, img_size=28)
    assert src1.startswith("benchmark queries") and x1.shape == (2, 3, 28, 28)
    assert torch.equal(x1, sample_images(cfg, 2, seed=0, img_size=28)[0])
    assert not torch.equal(x1, x0)
