"""Stand-in VPR models (the real ones live in brevitas_models) and a tiny benchmark."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from brevitas_models.sparsity import TopKSparsity
from tatvpr_hw.config import Config
from tatvpr_hw.data.synthetic import ensure_benchmark


class PixelVPR(nn.Module):
    """Descriptor = L2-normalised, centred 6x6 average-pooled pixels, after a top-k module."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.sparsity = TopKSparsity(0.0)
        self.proj = nn.Linear(108, 108, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(108) + 0.01 * torch.randn(108, 108, generator=torch.Generator().manual_seed(0)))
        self.seen_sizes: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_sizes.add(int(x.shape[-1]))
        f = self.pool(x).flatten(1)
        f = f - f.mean(dim=1, keepdim=True)
        return nn.functional.normalize(self.proj(self.sparsity(f)), dim=-1)


FAKE_MEMORY = {"fp32": 4.0e6, "fp16": 2.0e6, "int8": 1.0e6, "ternary2": 0.3e6}
STUB_ARCH = SimpleNamespace(name="stub-arch", source="stub.yaml", spec=SimpleNamespace(
    clock_mhz=250, compute=SimpleNamespace(pe=8, simd=32, banks=32, skip_mode="act")))
GRAN_OFFSET = {"token": 0.0, "bank": 0.01, "tensor": 0.02}


def fake_sim(g, s):
    """Stand-in simulator numbers that tell (granularity, sparsity) apart."""
    lat = round(1.0 - 0.5 * s + GRAN_OFFSET[g], 6)
    return {"sim_latency_ms": lat, "sim_energy_mj": round(2 * lat, 6), "sim_cycles": int(lat * 1e6),
            "sim_ternary_cycles": int(lat * 5e5), "sim_compute_cycles": int(lat * 4e5), "sim_conflict_cycles": None}


@pytest.fixture(name="fake_sim")
def fake_sim_fixture():
    return fake_sim


@pytest.fixture
def stub_ops(monkeypatch):
    """Stand-ins for brevitas_models.ops.count_ops / footprint (checked by their own tests)."""
    import tatvpr_hw.evaluation as ev

    calls = []

    def gmacs(model, images, sparsity):
        calls.append((type(model).__name__, tuple(images.shape), sparsity))
        return 1.5 * (1.0 - sparsity)

    monkeypatch.setattr(ev, "model_gmacs", gmacs)
    monkeypatch.setattr(ev, "default_sim_arch", lambda: STUB_ARCH)

    def sim(model, image, s, g, arch, cache=None):
        assert arch is STUB_ARCH and image.dim() == 3
        calls.append(("sim", tuple(image.shape), s, g))
        return fake_sim(g, s)

    monkeypatch.setattr(ev, "simulate_query", sim)
    monkeypatch.setattr(ev, "model_memory_bytes", lambda model, img_size, fmt, plan=None: FAKE_MEMORY[fmt])
    monkeypatch.setattr(ev, "int8_plan", lambda model_cfg, model: {"proj": True})
    return calls


@pytest.fixture
def tiny_cfg(tmp_path) -> Config:
    cfg = Config(
        seed=0,
        model={"teacher_img_size": 28, "student_img_size": 42},
        data={"root": tmp_path / "syn", "synthetic": dict(places=4, train_images_per_place=2, eval_places=12,
                                                          image_px=48, difficulty=0.0)},
        eval={"sparsities": [0.0, 0.5], "batch_size": 5},
    )
    ensure_benchmark(cfg)
    return cfg


@pytest.fixture
def pixel_models():
    return PixelVPR(28), PixelVPR(42)
