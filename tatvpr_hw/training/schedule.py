"""Learning-rate schedule: linear warm-up, then cosine decay, stepped every optimizer step."""

from __future__ import annotations

import math


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    - ``step < warmup_steps``: linear ramp ``(step + 1) / warmup_steps`` (never 0, so the first
      step already learns);
    - afterwards: cosine from 1 down to ``min_ratio`` at ``total_steps``; constant after that.

    >>> [round(warmup_cosine_factor(s, 2, 6), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
