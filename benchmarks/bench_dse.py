"""Benchmark: 1,000 design points of `tatvpr dse` in under 60 s on 2 cores.

Workload: two traces shaped like the tiny student of configs/tiny.yaml (ViT, 4 blocks,
D = 192, 3 heads, 50 tokens, MLP 768) at sparsity 0.0 and 0.4 from sim.trace's synthetic
generator (numpy only, seeded), or the trace files given with --trace (e.g. written by
`tatvpr trace`). Space: sim/sweeps/kv260_wide.yaml (pe, simd, clock, weight format, skip
mode, weight buffer) sampled at random, 500 points per trace. Each point is the real
sim.simulate on the KV260 description with the point's overrides.

    .venv/bin/python benchmarks/bench_dse.py [--workers 2] [--points 1000] [--trace T ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim import dse  # noqa: E402
from sim.trace import synthetic_vit_trace, write_trace  # noqa: E402

TARGET_S = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--points", type=int, default=1000, help="total points (split over the traces)")
    ap.add_argument("--backend", default="local", choices=dse.BACKENDS)
    ap.add_argument("--trace", action="append", type=Path, help="trace files (default: synthetic tiny ViT)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench_dse_") as tmp:
        tmp = Path(tmp)
        traces = args.trace
        workload = "given traces"
        if not traces:
            traces = []
            for s in (0.0, 0.4):
                p = tmp / f"tiny_s{s}.npz"
                write_trace(p, synthetic_vit_trace(depth=4, dim=192, tokens=50, heads=3, sparsity=s,
                                                   seed=args.seed))
                traces.append(p)
            workload = "synthetic tiny ViT (4 blocks, D=192, 50 tokens), s = 0.0 and 0.4"
        spec = dse.load_sweep(REPO / "sim" / "sweeps" / "kv260_wide.yaml")
        per_trace = -(-args.points // len(traces))
        if per_trace > spec.grid_size():
            print(f"--points {args.points}: at most {spec.grid_size() * len(traces)} with these traces")
            return 2
        spec.mode, spec.n, spec.seed = "random", per_trace, args.seed
        t0 = time.perf_counter()
        res = dse.run_sweep(spec, traces, tmp / "sweep", backend=args.backend, workers=args.workers,
                            progress=False)
        wall = time.perf_counter() - t0
        n = len(res.table)
    ok = wall < TARGET_S
    print(f"workload: {workload}; space: kv260_wide.yaml random, {per_trace} points per trace")
    print(f"{'points':>7} {'backend':>8} {'workers':>8} {'wall_s':>8} {'points/s':>9} {'target_s':>9} {'ok':>4}")
    print(f"{n:>7} {args.backend:>8} {args.workers:>8} {wall:>8.1f} {n / wall:>9.1f} {TARGET_S:>9.0f} "
          f"{'yes' if ok else 'NO':>4}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
