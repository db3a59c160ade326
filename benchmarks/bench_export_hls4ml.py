"""Benchmark: hls4ml C-simulation build time of the tiny student's ternary GEMMs.

The export tests and the demo compile hls4ml projects with g++; this measures how long that
takes for the tiny model's MLP layers (fc1 192->768, fc2 768->192, as in configs/tiny.yaml)
under io_parallel and io_stream, with the Latency strategy (ReuseFactor 1) and the Resource
strategy (ReuseFactor 64), and checks each C-simulation against PyTorch. Layers are fresh
seeded SparseTernaryLinear modules (same shapes and quantizers as the student), inputs are
seeded N(0, 0.7^2) tokens at sparsity 0.4. Target: every compile under 60 s on this machine.

    .venv/bin/python benchmarks/bench_export_hls4ml.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tatvpr_hw.lower  # noqa: E402,F401  (environment for TensorFlow, if present)

TARGET_S = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fc1 only, io_parallel and io_stream")
    args = ap.parse_args()
    import torch
    from torch import nn

    from brevitas_models.quant import SparseTernaryLinear, calibrate_input_scales
    from tatvpr_hw.lower.hls4ml.route import export_layer_hls4ml
    from tatvpr_hw.lower.layers import standalone_linear

    shapes = [("fc1", 192, 768)] + ([] if args.quick else [("fc2", 768, 192)])
    settings = [("io_parallel", "Latency", 1), ("io_stream", "Latency", 1)]
    if not args.quick:
        settings.append(("io_parallel", "Resource", 64))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, k, n in shapes:
            torch.manual_seed(0)
            m = SparseTernaryLinear(k, n, sparsity=0.4)
            x = torch.randn(50, k) * 0.7
            calibrate_input_scales(nn.Sequential(m), [x])
            le = standalone_linear(name, m, x)
            for io, strategy, rf in settings:
                t = time.perf_counter()
                s = export_layer_hls4ml(le, Path(tmp) / f"{name}_{io}_{strategy}", io_type=io,
                                        strategy=strategy, reuse_factor=rf, build=False)
                rows.append((name, f"{k}x{n}", io, f"{strategy}/RF{rf}", s["time_s"]["convert"],
                             s["time_s"]["gxx_compile"], time.perf_counter() - t,
                             s["check"]["max_abs_err"], s["check"]["passed"],
                             ",".join(s["generated"]["dense_products"])))
    print(f"{'layer':<6}{'KxN':<10}{'io':<13}{'strategy':<14}{'convert s':>10}{'g++ s':>8}"
          f"{'total s':>9}{'max|err|':>11}  check  product")
    ok = True
    for r in rows:
        print(f"{r[0]:<6}{r[1]:<10}{r[2]:<13}{r[3]:<14}{r[4]:>10.1f}{r[5]:>8.1f}{r[6]:>9.1f}"
              f"{r[7]:>11.2e}  {'pass' if r[8] else 'FAIL'}   {r[9]}")
        ok &= r[8] and r[5] < TARGET_S
    print(f"target: every g++ compile < {TARGET_S:.0f} s and every check passing: {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
