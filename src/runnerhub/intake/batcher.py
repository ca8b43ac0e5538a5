"""Group commit for webhook intake.

Deliveries that arrive together are recorded together: one transaction, a handful of
round trips and one WAL flush for a whole batch, instead of each delivery paying for its
own. Each request still gets its answer only after its batch has committed (I1). A batch
that fails for a reason other than the database being unreachable is retried one delivery
at a time, so one bad delivery cannot take its neighbours down with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import psycopg
import structlog

from runnerhub.store.db import UNAVAILABLE, Pool
from runnerhub.store.deliveries import (
    UNSTORABLE,
    JobDelivery,
    Recorded,
    record,
    record_job_events,
)

log = structlog.get_logger("runnerhub.intake.batcher")


@dataclass
class _Pending:
    item: JobDelivery
    done: asyncio.Future[Recorded]


class IntakeBatcher:
    def __init__(self, db: Pool, node: str, max_batch: int = 100, workers: int = 1) -> None:
        self._db = db
        self._node = node
        self._max_batch = max_batch
        self._workers = workers
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _start(self) -> asyncio.Queue[_Pending]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._tasks = [
                asyncio.create_task(self._work(self._queue), name=f"intake-{i}")
                for i in range(self._workers)
            ]
        return self._queue

    async def record(self, item: JobDelivery) -> Recorded:
        pending = _Pending(item, asyncio.get_running_loop().create_future())
        self._start().put_nowait(pending)
        return await pending.done

    async def _work(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await record_job_events(self._db, [p.item for p in batch], self._node)
        except UNAVAILABLE as exc:
            for p in batch:
                _fail(p, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                await self._refuse(batch[0], exc)
                return
            for p in batch:  # find the one that breaks the batch
                await self._commit([p])
            return
        for p, r in zip(batch, results, strict=True):
            if not p.done.done():
                p.done.set_result(r)

    async def _refuse(self, p: _Pending, exc: Exception) -> None:
        """One delivery PostgreSQL will not take (say a NUL character in a string): keep a
        record of it without its payload and tell the sender, instead of a bare 500."""
        d = p.item.delivery
        log.error(
            "recording a delivery failed", delivery=d.guid, error=f"{type(exc).__name__}: {exc}"
        )
        if not isinstance(exc, psycopg.DataError):
            _fail(p, exc)
            return
        try:
            stripped = replace(d, payload=None)
            rec = await record(self._db, stripped, UNSTORABLE, f"{type(exc).__name__}: {exc}")
        except Exception as again:
            _fail(p, again)
            return
        if not p.done.done():
            p.done.set_result(Recorded(rec.outcome, p.item.obs.job_id))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._queue = None


def _fail(p: _Pending, exc: BaseException) -> None:
    if not p.done.done():
        p.done.set_exception(exc)
