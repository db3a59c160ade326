"""Benchmark: simulate a whole ViT-B/14 query trace (synthetic, 12 blocks, 257 tokens) on the KV260 arch.

Target (issue 4): < 1 s per query trace. The trace is generated first (not timed). "cold" clears
every op's cached counts (first simulation of a trace, including the per-layer nonzero analysis);
"warm" reuses them (a design-space sweep re-simulating the same trace). Wall-clock seconds are
reported (the median and the min-max of the repeats), and the process CPU seconds of the cold run (``cpu_s``: what the run costs on a core of
its own; on a machine shared with other jobs the wall time is larger).

    .venv/bin/python benchmarks/bench_sim_query.py [--repeat 3] [--sparsity 0.4] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim import load_arch, simulate, synthetic_vit_trace, with_overrides  # noqa: E402

TARGET_S = 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="none,act,weight,both")
    args = ap.parse_args()
    t0 = time.perf_counter()
    tr = synthetic_vit_trace(sparsity=args.sparsity, seed=args.seed)
    gen_s = time.perf_counter() - t0
    base = load_arch("kv260")
    print(f"whole ViT-B/14 query trace (12 blocks, {tr.meta['tokens']} tokens, {len(tr.ops)} ops, s={args.sparsity}), "
          f"generated in {gen_s:.1f} s (not timed); kv260 arch; median of {args.repeat}; target < {TARGET_S:g} s")
    if "both" in args.modes.split(","):
        from sim import both_kernel
        both_kernel.backend()
        print(f"both mode's chunk kernel: {both_kernel.REASON} (docs/simulator.md)")
    print(f"{'skip_mode':<10}{'cold_s':>9}{'cold_range':>14}{'cpu_s':>8}{'warm_s':>9}{'warm_range':>14}"
          f"{'latency_ms':>12}{'energy_mj':>11}  ok(cold)")
    for mode in args.modes.split(","):
        arch = with_overrides(base, {"compute.skip_mode": mode})
        cold, cpu, warm = [], [], []
        for _ in range(args.repeat):
            for op in tr.ternary_ops():
                op._cache.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            r = simulate(arch, tr)
            cold.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            simulate(arch, tr)
            warm.append(time.perf_counter() - t0)
        c, w = statistics.median(cold), statistics.median(warm)
        c_rng, w_rng = f"{min(cold):.3f}-{max(cold):.3f}", f"{min(warm):.3f}-{max(warm):.3f}"
        print(f"{mode:<10}{c:>9.3f}{c_rng:>14}{statistics.median(cpu):>8.3f}{w:>9.3f}{w_rng:>14}"
              f"{r['latency_ms']:>12.3f}{r['energy_mj']:>11.3f}  {'yes' if c < TARGET_S else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
