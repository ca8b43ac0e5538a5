"""asyncio helpers shared by the packages: a deadline that holds even when the awaited call
ignores its cancellation, and leaving an abandoned task behind without asyncio reporting
its outcome as lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], timeout_s: float) -> T:
    """Await with a deadline that holds even if the call ignores its cancellation (unlike
    `asyncio.wait_for`, which waits for the cancelled call to end): past it the call is
    cancelled, left to finish on its own, and TimeoutError raised. A call that ends
    cancelled although this wait was not had no answer either: TimeoutError too, never a
    CancelledError that would end the caller's task."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        if task.cancelled():  # from inside: gRPC cancels the calls of a channel it closes
            raise TimeoutError
        return task.result()
    task.cancel()
    task.add_done_callback(forget)
    raise TimeoutError


def forget(task: asyncio.Future[Any]) -> None:
    """A done callback for a task given up on: its outcome is retrieved (so asyncio does not
    report it as lost) and dropped."""
    if not task.cancelled():
        task.exception()
