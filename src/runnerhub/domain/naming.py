"""Deterministic runner names (invariant I5): the same job attempt always gets the same name,
so a second provisioning of it collides (GitHub's 409) instead of making a second runner."""

from __future__ import annotations

MAX_NAME = 64


def job_runner_name(prefix: str, job_id: int, run_attempt: int, generation: int = 0) -> str:
    """`generation` moves on only when the runner for this attempt died without taking it."""
    name = f"{prefix}-{job_id}-{run_attempt}"
    return f"{name}-g{generation}" if generation else name


def spare_runner_name(prefix: str, pool: str, serial: int) -> str:
    return f"{prefix}-{pool}-spare-{serial}"[:MAX_NAME]


def is_ours(prefix: str, name: str) -> bool:
    return name.startswith(f"{prefix}-")
