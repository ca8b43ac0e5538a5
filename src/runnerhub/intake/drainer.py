"""Replays the spool into PostgreSQL once it is reachable again.

Records are replayed strictly in journal order, a batch at a time, through the same
classification and recording as live intake (`WebhookIntake.replay`). After each batch
the spool's checkpoint moves past it (fsync + rename); a crash before that replays the
batch again, which changes nothing (I2: deliveries are recorded once per GUID).

Live intake sends deliveries straight to the spool from one the database did not record
until the drainer records again (`on_recorded`). Then it does not wait for the drainer:
new deliveries are recorded directly, possibly before older spooled events of the same
job. That is safe because job state is monotonic (I3): replaying an older event later
finds the job ahead of it and is recorded as stale, never obeyed; a newer one moves the
job on either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from runnerhub import metrics
from runnerhub.intake.spool import Entry, Spool, SpoolError, VerifiedDelivery
from runnerhub.store.db import UNAVAILABLE_OR_SLOW
from runnerhub.store.deliveries import Recorded

log = structlog.get_logger("runnerhub.intake.drainer")

# One result or exception per delivery, in order; UNAVAILABLE_OR_SLOW errors: "try later".
Replay = Callable[[Sequence[VerifiedDelivery]], Awaitable[list[Recorded | Exception]]]


class SpoolDrainer:
    def __init__(
        self,
        spool: Spool,
        replay: Replay,
        interval_s: float = 1.0,
        batch_size: int = 100,
        deadline_s: float = 10.0,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        self.spool = spool
        self._replay = replay
        self._on_recorded = on_recorded  # the database took a replayed delivery
        self.interval_s = interval_s
        self.deadline_s = deadline_s  # a batch with no answer by then is tried again later
        self.batch_size = batch_size
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background until `close()`."""
        if self._task is None or self._task.done():
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self.run(self._stop), name="spool-drainer")

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        # On timeout wait_for cancels it; an unfinished batch is replayed after a restart.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._task, timeout_s)
        self._task = None

    async def run(self, stop: asyncio.Event) -> None:
        """Drain every `interval_s` until `stop` is set."""
        if not self.spool.enabled:
            if any(self.spool.directory.glob("*.seg")):
                log.warning(
                    "the spool is disabled but holds deliveries; enable it to replay them",
                    directory=str(self.spool.directory),
                )
            return
        while not stop.is_set():
            try:
                await self.drain()
            except SpoolError as exc:
                log.error("spool unusable", error=str(exc))
            except Exception:
                log.exception("spool drain failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def drain(self, max_batches: int | None = None) -> int:
        """Replay until the spool is empty, the database is unreachable or `max_batches`
        batches are done; return how many records were taken off the spool."""
        await self.spool.open()
        done = batches = 0
        while max_batches is None or batches < max_batches:
            entries = self.spool.peek(self.batch_size)
            if not entries:
                break
            taken = await self._batch(entries)
            done += taken
            batches += 1
            if taken < len(entries):
                metrics.SPOOL_DRAIN_PAUSED.inc()
                log.info("database unavailable; spool drain paused", left=len(entries) - taken)
                break
        if done:
            stats = self.spool.stats()
            log.info("spool drained", replayed=done, left=stats.entries, bytes_left=stats.bytes)
        return done

    async def _batch(self, entries: list[Entry]) -> int:
        """Replay one batch; return how many of its records (a prefix) are done with."""
        records = await self.spool.read(entries)
        readable = [(e, d) for e, d in zip(entries, records, strict=True) if d is not None]
        try:
            results = await asyncio.wait_for(
                self._replay([d for _, d in readable]), self.deadline_s
            )
        except UNAVAILABLE_OR_SLOW as exc:  # a hung server: the same batch again later
            results = [exc] * len(readable)
        outcome = dict(zip((e for e, _ in readable), results, strict=True))
        taken: list[Entry] = []
        replayed = 0
        for e, d in zip(entries, records, strict=True):
            r = outcome.get(e)
            if d is None:
                metrics.SPOOL_UNREADABLE.inc()
                log.error(
                    "spool record failed its checksum; skipped", segment=e.segment, at=e.offset
                )
            elif isinstance(r, UNAVAILABLE_OR_SLOW):
                break
            elif isinstance(r, Exception):
                # Not the database being away: retrying would block the drain for good.
                await self.spool.quarantine(e, d, f"{type(r).__name__}: {r}")
            else:
                replayed += 1
            taken.append(e)
        await self.spool.commit(taken)
        metrics.SPOOL_DRAINED.inc(replayed)
        if replayed and self._on_recorded is not None:
            self._on_recorded()
        return len(taken)
