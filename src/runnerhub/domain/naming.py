"""Deterministic runner names (invariant I5): the same job attempt always gets the same name,
so a second provisioning of it collides (GitHub's 409) instead of making a second runner."""

from __future__ import annotations

import re

MAX_NAME = 64
# What GitHub accepts as a runner name, and what may safely become a file name.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def job_runner_name(prefix: str, job_id: int, run_attempt: int, generation: int = 0) -> str:
    """`generation` moves on only when the runner for this attempt died without taking it."""
    name = f"{prefix}-{job_id}-{run_attempt}"
    return f"{name}-g{generation}" if generation else name


def spare_runner_name(prefix: str, pool: str, serial: int) -> str:
    return f"{prefix}-{pool}-spare-{serial}"[:MAX_NAME]


def is_ours(prefix: str, name: str) -> bool:
    return name.startswith(f"{prefix}-")


def is_valid_name(name: str) -> bool:
    """A runner name as the names above make them: letters, digits, `.`, `_`, `-`, at most
    64, no leading dot (so never `..`, never a path)."""
    return _VALID.fullmatch(name) is not None
