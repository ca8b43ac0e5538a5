"""Retry delays: exponential with full jitter, capped (pure; the caller passes randomness)."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Delay before retry number `attempt` (1-based): jittered in [ceiling/2, ceiling]."""
    ceiling = min(max_s, base_s * (2.0 ** max(0, attempt - 1)))
    r = rng.random() if rng is not None else random.random()
    return ceiling / 2 + r * ceiling / 2
