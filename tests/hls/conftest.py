"""Shared fixtures of the HLS IP tests: C-simulation binaries compiled once per session."""

from __future__ import annotations

import numpy as np
import pytest

from tatvpr_hw.lower.hls.csim import KernelParams, build_csim

# Three builds (the C testbench is compiled once per session), each a different gather:
#   pe4_simd8: B = 4 banks, P = 1 port, R = 2 replicas, q = 2 lanes per bank, two weight halves
#   pe8_simd4: B = 2 banks, P = 2 ports, R = 1, q = 2, one weight half (no double buffering)
#   pe4_simd8_b8: B = SIMD = 8 (the default machine), P = 1, R = 1, q = 1
BUILDS = {"pe4_simd8": KernelParams(pe=4, simd=8, banks=4, ports=1, kmax=1024, mmax=128, chunks_max=8192),
          "pe8_simd4": KernelParams(pe=8, simd=4, banks=2, ports=2, halves=1, kmax=1024, mmax=128,
                                    chunks_max=16384),
          "pe4_simd8_b8": KernelParams(pe=4, simd=8, kmax=1024, mmax=128, chunks_max=8192)}


@pytest.fixture(scope="session", autouse=True)
def _shared_csim_cache(tmp_path_factory):
    """Board projects of this session reuse compiled C simulations (same PE x SIMD x sizes)."""
    import os

    old = os.environ.get("TATVPR_CSIM_CACHE")
    os.environ["TATVPR_CSIM_CACHE"] = str(tmp_path_factory.mktemp("csim_cache"))
    yield
    if old is None:
        os.environ.pop("TATVPR_CSIM_CACHE", None)
    else:
        os.environ["TATVPR_CSIM_CACHE"] = old


@pytest.fixture(scope="session")
def csim_builds(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("hls_csim_build")
    return {name: (kp, build_csim(kp, build_dir)) for name, kp in BUILDS.items()}


def expected_fold_cycles(act_mask: np.ndarray, w: np.ndarray, kp: KernelParams) -> np.ndarray:
    """The simulator's C_f in skip mode ``act`` with the build's banks and ports (sim.engine)."""
    from sim.engine import fold_compute_cycles

    return np.asarray(fold_compute_cycles(act_mask, w, kp.pe, kp.simd, "act", banks=kp.banks, ports=kp.ports),
                      dtype=np.int64)


def layer_for(kp: KernelParams, x, w, bias, mult, shift, **kw):
    """``prepare_layer`` for build ``kp`` (its PE, SIMD, banks and ports)."""
    from tatvpr_hw.lower.hls.formats import prepare_layer

    return prepare_layer(x, w, bias, mult, shift, pe=kp.pe, simd=kp.simd, banks=kp.banks, ports=kp.ports, **kw)


def random_layer(rng: np.random.Generator, m: int, k: int, n: int, sparsity: float,
                 weight_zero_frac: float = 0.4):
    """int8 activations with top-k per token at ``sparsity``, ternary weights, int32 bias."""
    x = rng.integers(-127, 128, size=(m, k)).astype(np.int8)
    keep = max(0, int(np.ceil((1 - sparsity) * k)))
    order = np.argsort(-np.abs(x.astype(np.int32)) + rng.random((m, k)), axis=1)
    mask = np.zeros((m, k), bool)
    np.put_along_axis(mask, order[:, :keep], True, axis=1)
    x = np.where(mask, x, 0).astype(np.int8)
    w = rng.choice(np.array([-1, 0, 1], np.int8), size=(n, k),
                   p=[(1 - weight_zero_frac) / 2, weight_zero_frac, (1 - weight_zero_frac) / 2])
    bias = rng.integers(-5000, 5000, size=n).astype(np.int32)
    return x, w, bias


@pytest.fixture(scope="session")
def tiny_student():
    import torch
    from brevitas_models.model import build_model
    from brevitas_models.quant import calibrate_input_scales
    from tatvpr_hw.config import parse_config

    cfg = parse_config({"model": {"backbone": "vit_tiny_patch14_dinov2", "teacher_img_size": 98,
                                  "student_img_size": 98}})
    torch.manual_seed(0)
    model = build_model(cfg.model, student=True).eval()
    images = torch.randn(1, 3, 98, 98, generator=torch.Generator().manual_seed(1))
    calibrate_input_scales(model, [images])
    return model, images


def student_from_shipped_teacher(seed: int = 0):
    """The demo's tiny student initialised from the shipped teacher and calibrated on 6 seeded
    random images: (student in eval mode, the images [6, 3, 98, 98])."""
    import torch

    from brevitas_models.checkpoint import init_student_from_teacher, load_checkpoint, load_into
    from brevitas_models.model import build_model
    from brevitas_models.quant import calibrate_input_scales
    from tatvpr_hw.config import load_config
    from tatvpr_hw.lower.hls.paths import hls_dir

    root = hls_dir().parent
    cfg = load_config(root / "configs" / "tiny.yaml")
    teacher = build_model(cfg.model, student=False)
    sd, _ = load_checkpoint(root / "checkpoints" / "tiny_teacher.safetensors")
    load_into(teacher, sd)
    torch.manual_seed(seed)
    student = build_model(cfg.model, student=True)
    init_student_from_teacher(student, teacher)
    student.eval()
    images = torch.randn(6, 3, 98, 98, generator=torch.Generator().manual_seed(seed))
    calibrate_input_scales(student, [images])
    return student, images


@pytest.fixture(scope="module")
def student_and_images():
    """:func:`student_from_shipped_teacher` once per module."""
    return student_from_shipped_teacher()
