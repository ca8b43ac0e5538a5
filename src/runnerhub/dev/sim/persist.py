"""Debounced, atomic JSON snapshots of the simulator's state."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEBOUNCE_S = 0.5
# A huge state takes a while to encode on the loop: wait this many times as long before
# the next snapshot, so persistence never takes more than a small share of the loop.
COST_FACTOR = 4
_write_lock = threading.Lock()  # a shutdown write must not race one still in a thread


def write_atomic(path: Path, chunks: list[bytes]) -> None:
    """Write temp + fsync + rename (+ fsync the directory): a crash leaves old or new."""
    tmp = path.with_name(f".{path.name}.tmp")
    with _write_lock:
        # It holds runner tokens and JIT configs, as GitHub's database would: ours only.
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.writelines(chunks)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a simulator state file")
    return data


class Persister:
    """Saves after a change, at most every DEBOUNCE_S, and once more at stop."""

    def __init__(self, path: Path, snapshot: Callable[[], list[bytes]]) -> None:
        self.path = path
        self.snapshot = snapshot
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._loop(), name="sim-persister")

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # The snapshot is taken on the loop (consistent); the disk work goes to a thread.
            started = time.monotonic()
            chunks = self.snapshot()
            cost = time.monotonic() - started
            await asyncio.to_thread(write_atomic, self.path, chunks)
            await asyncio.sleep(max(DEBOUNCE_S, COST_FACTOR * cost))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.to_thread(write_atomic, self.path, self.snapshot())
