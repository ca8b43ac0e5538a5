"""Group commit for webhook intake.

Deliveries that arrive together are recorded together: one transaction, a handful of
round trips and one WAL flush for a whole batch, instead of each delivery paying for its
own. Each request still gets its answer only after its batch has committed (I1). A batch
with no answer by `deadline_s` is given up (a hung or frozen server never answers; psycopg
then cancels the query and drops the connection) and counts as the database being away. A batch
that fails for a reason other than the database being unreachable is retried one delivery
at a time, so one bad delivery cannot take its neighbours down with it. The spool's drainer
records its batches through the same `record_jobs`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

import psycopg
import structlog

from runnerhub.store.db import UNAVAILABLE, UNAVAILABLE_OR_SLOW, Pool
from runnerhub.store.deliveries import (
    UNSTORABLE,
    Delivery,
    JobDelivery,
    Recorded,
    record,
    record_job_deliveries,
)

log = structlog.get_logger("runnerhub.intake.batcher")


@dataclass
class _Pending:
    item: JobDelivery
    done: asyncio.Future[Recorded]


class IntakeBatcher:
    def __init__(
        self,
        db: Pool,
        node: str,
        max_batch: int = 100,
        workers: int = 1,
        deadline_s: float = 10.0,
    ) -> None:
        self._db = db
        self._node = node
        self._deadline_s = deadline_s
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
            await self._commit(queue, batch)

    async def _commit(self, queue: asyncio.Queue[_Pending], batch: list[_Pending]) -> None:
        try:
            results = await asyncio.wait_for(
                record_jobs(self._db, [p.item for p in batch], self._node), self._deadline_s
            )
        except UNAVAILABLE_OR_SLOW as exc:
            # Those still queued would only wait out the same timeout: fail them now too,
            # so that the endpoint spools them at once.
            for p in batch:
                _fail(p, exc)
            while not queue.empty():
                _fail(queue.get_nowait(), exc)
            return
        for p, r in zip(batch, results, strict=True):
            if isinstance(r, Exception):
                _fail(p, r)
            elif not p.done.done():
                p.done.set_result(r)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._queue = None


def _fail(p: _Pending, exc: BaseException) -> None:
    if not p.done.done():
        p.done.set_exception(exc)


async def record_jobs(
    db: Pool, items: Sequence[JobDelivery], node: str
) -> list[Recorded | Exception]:
    """Record `items` in order, in one transaction when possible; each gets its result or
    the exception that kept it out. Raises one of UNAVAILABLE when the database cannot be
    reached for the batch as a whole."""
    try:
        return list(await record_job_deliveries(db, items, node))
    except UNAVAILABLE:
        raise
    except Exception as exc:
        if len(items) == 1:
            return [await _refuse(db, items[0].delivery, items[0].obs.job_id, exc)]
    results: list[Recorded | Exception] = []
    for item in items:  # find the one that breaks the batch
        try:
            results += await record_jobs(db, [item], node)
        except UNAVAILABLE as exc:
            results.append(exc)
    return results


async def record_plain(db: Pool, d: Delivery, outcome: str, detail: str | None) -> Recorded:
    """Record a delivery that changes no job; one PostgreSQL will not store is recorded
    without its payload, as unstorable."""
    try:
        return await record(db, d, outcome, detail)
    except psycopg.DataError as exc:
        refused = await _refuse(db, d, None, exc)
        if isinstance(refused, Exception):
            raise refused from exc
        return refused


async def _refuse(
    db: Pool, d: Delivery, job_id: int | None, exc: Exception
) -> Recorded | Exception:
    """One delivery PostgreSQL will not take (say a NUL character in a string): keep a
    record of it without its payload and tell the sender, instead of a bare 500."""
    log.error("recording a delivery failed", delivery=d.guid, error=f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, psycopg.DataError):
        return exc
    try:
        stripped = replace(d, payload=None)
        rec = await record(db, stripped, UNSTORABLE, f"{type(exc).__name__}: {exc}")
    except Exception as again:
        return again
    return Recorded(rec.outcome, job_id)
