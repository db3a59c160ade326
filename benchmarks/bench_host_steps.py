"""Benchmark: the host (ARM) steps the built machine runs between the IPs under ``schedule.handoffs:
dram`` (docs/engine.md section 5a), timed in numpy per element, as the driver runs them:

- ``topk``: a ternary linear's input, ``tatvpr_pynq.integer.topk_int`` (keep the largest |x| of each
  token) + ``formats.chunks_per_token`` + ``formats.schedule_activations`` (the bank-scheduled act
  stream the ternary IP reads), per input element (``tokens x K``);
- ``row_max``: the softmax's row maxima (``VectorUnitIP.softmax``: ``s.max(axis=1)`` of the int64
  scores), per score;
- ``widen``: ``Int8UnitIP.start_gemm``'s operand copies (``a.astype(int16)``, ``b.astype(int8)`` of
  the transposed K / V view), per element of both operands;
- ``pack`` (not charged by the simulator, printed for the record): ``formats.pack_weights`` of a
  layer's ternary codes, which ``prepare_layer`` runs on every IP call, per weight.

Shapes are ViT-B/14's (257 tokens, D 768, hidden 3072, head dim 64), a row tile of ``--tile``
tokens and the whole op; sparsity 0.4, SIMD 32 with 8 banks (the KV260 point). Minimum over
``--repeat`` runs (the least disturbed), in ns per element. Runs where numpy runs: on the board it
measures the ARM Cortex-A53 directly (copy hls/driver/ beside it).

    .venv/bin/python benchmarks/bench_host_steps.py [--repeat 30] [--tile 16]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hls" / "driver"))

import numpy as np  # noqa: E402

from tatvpr_pynq.formats import chunks_per_token, pack_weights, schedule_activations  # noqa: E402
from tatvpr_pynq.integer import topk_int  # noqa: E402


def best_ns(fn, repeat: int) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--tile", type=int, default=16)
    ap.add_argument("--sparsity", type=float, default=0.4)
    args = ap.parse_args()
    if args.repeat < 1 or args.tile < 1 or not 0 <= args.sparsity < 1:
        print("bench_host_steps: --repeat and --tile must be >= 1, --sparsity in [0, 1)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    simd, banks, t, hd = 32, 8, 257, 64
    rows = []

    def topk(m, k):
        x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)

        def run():
            xs = topk_int(x, args.sparsity)
            chunks_per_token(xs != 0, simd, banks)
            schedule_activations(xs, simd, banks)
        return run, m * k

    for m in (args.tile, t):
        for k in (768, 3072):
            fn, n = topk(m, k)
            rows.append(("topk", f"{m} x {k}", n, best_ns(fn, args.repeat)))
    s = rng.integers(-2 ** 20, 2 ** 20, size=(t, t)).astype(np.int64)
    rows.append(("row_max", f"1 head {t} x {t}", t * t, best_ns(lambda: s.max(axis=1), args.repeat)))
    q = rng.integers(-128, 128, size=(1, t, hd)).astype(np.int8)
    kk = rng.integers(-128, 128, size=(1, t, hd)).astype(np.int8)
    p = rng.integers(0, 256, size=(1, t, t)).astype(np.uint8)

    def widen_qk():
        q.astype(np.int16)
        kk.transpose(0, 2, 1).astype(np.int8)

    def widen_av():
        p.astype(np.int16)
        kk.astype(np.int8)

    rows.append(("widen", f"QK^T 1 head q, k^T {t} x {hd}", 2 * t * hd, best_ns(widen_qk, args.repeat)))
    rows.append(("widen", f"P.V 1 head p {t} x {t}, v", t * t + t * hd, best_ns(widen_av, args.repeat)))
    for n, k in ((768, 768), (3072, 768)):
        w = rng.integers(-1, 2, size=(n, k)).astype(np.int8)
        rows.append(("pack", f"{n} x {k} ternary2", n * k, best_ns(lambda: pack_weights(w, "ternary2"), args.repeat)))
    print(f"host steps between the IPs, numpy {np.__version__}, {platform.machine()} "
          f"({platform.processor() or 'cpu'}), min of {args.repeat} runs, s = {args.sparsity}")
    print(f"{'step':<9}{'shape':<30}{'elements':>10}{'us':>10}{'ns/element':>12}")
    for kind, shape, n, ns in rows:
        print(f"{kind:<9}{shape:<30}{n:>10}{ns / 1e3:>10.1f}{ns / n:>12.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
