"""Wait for a condition with a deadline, instead of sleeping and hoping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    """The condition did not hold in time (an AssertionError, so tests report it as one)."""


async def wait_until(
    probe: Callable[[], Awaitable[T] | T],
    timeout_s: float = 10.0,
    what: str = "condition",
    interval_s: float = 0.02,
) -> T:
    """Poll `probe` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_until_sync(
    probe: Callable[[], T],
    timeout_s: float = 10.0,
    what: str = "condition",
    interval_s: float = 0.02,
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)
