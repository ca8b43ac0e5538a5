"""The election loop: campaign for the leader key, keep its lease alive, and stop acting in
time (invariant I4).

A follower watches the key and campaigns the moment it is deleted (an expired or revoked
lease deletes it), so a successor needs no polling delay. The leader renews its lease
several times per TTL and may act only until `LeasePolicy.act_until(last renewal sent)`:
past that it steps down on its own, before its lease can have expired anywhere else. Going
down always stops the control loops first and revokes the lease second, so a clean stop
hands over at once.

Every wait of a leader has a deadline that holds even when the awaited call ignores its
cancellation (`aio.bounded`): a client library stuck in its own clean-up once kept a leader
from ever noticing that its lease had run out, its loops running and `runnerhub_leader` at
1 while another node led (seen in make test; fencing refused the writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from runnerhub.aio import bounded, forget
from runnerhub.ha.dcs import Handoff, LeaderRecord, LeaderStore, StoreUnavailable, Term
from runnerhub.ha.leadership import LeasePolicy, decide_campaign, should_step_down

log = structlog.get_logger("runnerhub.ha")

OnElected = Callable[[Term, float], Awaitable[None]]  # (term, when the vacancy was seen)
OnDemoted = Callable[[Term, str], Awaitable[None]]


class Elector:
    def __init__(
        self,
        store: LeaderStore,
        node: str,
        url: str | None,
        policy: LeasePolicy,
        is_draining: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = 0.25,
        follower_recheck_s: float = 2.0,
    ) -> None:
        self.store = store
        self.node = node
        self.url = url
        self.policy = policy
        # What this node does on taking and leaving office: given to `run`, since the
        # duties (the control loops) are built on top of the election, not below it.
        self._on_elected: OnElected | None = None
        self._on_demoted: OnDemoted | None = None
        self._is_draining = is_draining
        self._clock = clock
        self._retry_s = retry_s
        self._recheck_s = follower_recheck_s
        self.term: Term | None = None
        self.leader: LeaderRecord | None = None
        self._act_until = 0.0
        self._resign = asyncio.Event()
        self._resign_reason = ""
        self._retiring = False  # shutting down: step down and never campaign again

    # -- what the rest of the node asks ----------------------------------------------------

    @property
    def epoch(self) -> int | None:
        return self.term.epoch if self.term else None

    @property
    def is_leader(self) -> bool:
        return self.term is not None

    def may_act(self) -> bool:
        """True while this node leads and its lease is certainly still valid."""
        return self.term is not None and self._clock() < self._act_until

    def request_resign(self, reason: str) -> None:
        """Step down soon (fenced by the database, draining, handoff)."""
        if self.term is not None and not self._resign.is_set():
            self._resign_reason = reason
            self._resign.set()

    def retire(self, reason: str) -> None:
        """This node is going away: step down if leading, and stop campaigning (a node that
        is shutting down must not win the election it just left)."""
        self._retiring = True
        self.request_resign(reason)

    def _standing_aside(self) -> bool:
        return self._retiring or self._is_draining()

    async def request_handoff(self, target: str | None, ttl_s: float = 10.0) -> LeaderRecord:
        """Ask the current leader (whichever node that is) to step down, for `target` or for
        anyone; return the leader asked."""
        record, _ = await self.store.leader()
        if record is None:
            raise StoreUnavailable("there is no leader to hand off from right now")
        await self.store.put_handoff(Handoff(record.epoch, target), ttl_s)
        return record

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_elected: OnElected, on_demoted: OnDemoted) -> None:
        self._on_elected, self._on_demoted = on_elected, on_demoted
        vacancy_seen: float | None = None
        waited_for: int | None = None  # the handoff this node already gave way to
        while not stop.is_set():
            try:
                record, revision = await self.store.leader()
                self.leader = record
                handoff = await self.store.handoff() if record is None else None
                decision = decide_campaign(
                    self.node,
                    record,
                    self._standing_aside(),
                    handoff,
                    self.policy.ttl_s,
                    waited_for,
                )
                if decision.campaign:
                    if decision.delay_s:
                        assert handoff is not None
                        waited_for = handoff.from_epoch
                        if await _wait(stop, decision.delay_s):
                            break
                        continue  # look again: the target has probably taken over
                    sent = self._clock()
                    term = await self.store.campaign(self.node, self.url, self.policy.ttl_s)
                    if term is not None:
                        await self._lead(term, sent, vacancy_seen or sent, stop)
                        vacancy_seen = None
                        continue
                    continue  # somebody else was faster: read who, and follow
                if self._standing_aside():
                    await _wait(stop, self._retry_s * 4)
                    continue
                vacancy_seen = await self._follow(revision, stop)
            except StoreUnavailable as exc:
                log.warning("leader store unreachable", node=self.node, error=str(exc))
                await _wait(stop, self._retry_s)
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                # A store call cancelled under us (gRPC cancels the calls of a channel the
                # store closed after an error): unreachable, not the end of the election.
                log.warning("leader store call cancelled", node=self.node)
                await _wait(stop, self._retry_s)
            except Exception:  # a bug must not end the election for good: say it, go on
                log.exception("election step failed", node=self.node)
                await _wait(stop, self._retry_s)

    async def _follow(self, revision: int, stop: asyncio.Event) -> float | None:
        """Watch the key until it is deleted (return when that was seen), the watch ends,
        or a while passes (to look at draining and handoffs again)."""

        async def vacancy() -> float | None:
            async for change in self.store.changes(revision):
                if change is None:
                    return self._clock()
                self.leader = change
            return None

        watcher = asyncio.ensure_future(vacancy())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {watcher, stopper}, timeout=self._recheck_s, return_when=asyncio.FIRST_COMPLETED
            )
            return watcher.result() if watcher in done else None
        finally:
            for t in (watcher, stopper):
                t.cancel()
            # Its end is awaited, bounded, and its result ignored: Python 3.11's wait_for can
            # swallow a cancellation or turn it into a TimeoutError (both seen under load).
            await asyncio.wait({watcher}, timeout=self._recheck_s)
            if watcher.done() and not watcher.cancelled():
                watcher.exception()  # retrieved, so asyncio does not report it as lost

    async def _lead(
        self, term: Term, sent: float, vacancy_seen: float, stop: asyncio.Event
    ) -> None:
        self.term = term
        self._act_until = self.policy.act_until(sent)
        self._resign.clear()
        self._resign_reason = ""
        log.info("elected leader", node=self.node, epoch=term.epoch)
        # Taking office (recording the epoch, adopting runners) runs beside the renewals:
        # however long it takes, the lease must not lapse meanwhile.
        assert self._on_elected is not None
        taking_office = asyncio.ensure_future(self._on_elected(term, vacancy_seen))
        try:
            reason = await self._hold(term, stop, taking_office)
        except asyncio.CancelledError:
            if _cancelling():
                self._act_until = 0.0
                raise
            reason = "a lease call was cancelled under it"  # and the loops must stop
        except Exception as exc:  # never leave the loops running on a lease not renewed
            log.exception("holding the lease failed", node=self.node)
            reason = f"holding the lease failed: {type(exc).__name__}"
        self._act_until = 0.0  # acting ends here, before anything else is waited for
        if not taking_office.done():
            taking_office.cancel()
            # Not waited for past a moment: the office checks on its own that it was left
            # before it starts any loop.
            await asyncio.wait({taking_office}, timeout=self._retry_s * 4)
        taking_office.add_done_callback(forget)  # a failure was reported by _hold
        await self._step_down(term, reason)
        if reason.startswith("could not take office"):
            await _wait(stop, self._retry_s * 4)  # let a healthier node try first

    async def _hold(
        self, term: Term, stop: asyncio.Event, taking_office: asyncio.Future[None]
    ) -> str:
        """Renew until something ends this leadership; return why it ended."""
        while True:
            if stop.is_set():
                return "shutting down"
            if self._resign.is_set():
                return self._resign_reason
            if taking_office.done() and not taking_office.cancelled():
                exc = taking_office.exception()
                if exc is not None:
                    return f"could not take office: {type(exc).__name__}: {exc}"
            sent = self._clock()
            if sent >= self._act_until:
                return "lease renewal overdue"
            renewed = await self._renew(term, self._act_until - sent)
            if renewed is False:
                return "lease lost"
            if renewed:
                self._act_until = self.policy.act_until(sent)
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                request = await bounded(self.store.handoff(), self.policy.renew_every_s)
                if should_step_down(self.node, term.epoch, request):
                    assert request is not None
                    return f"handoff requested (to {request.target or 'anyone'})"
            pause = min(self.policy.renew_every_s, self._act_until - self._clock())
            await _wait_any(stop, self._resign, max(0.0, pause), taking_office)

    async def _renew(self, term: Term, budget_s: float) -> bool | None:
        """True renewed, False the lease or the key is gone, None unknown (store
        slow/unreachable)."""
        try:
            return await bounded(self.store.keepalive(term), max(0.01, budget_s))
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("lease renewal failed", node=self.node, error=str(exc) or "timeout")
            return None

    async def _step_down(self, term: Term, reason: str) -> None:
        """Stop acting first, give the key up second."""
        self._act_until = 0.0
        log.warning("stepping down", node=self.node, epoch=term.epoch, reason=reason)
        try:
            assert self._on_demoted is not None
            await bounded(self._on_demoted(term, reason), max(2.0, self.policy.ttl_s))
        except TimeoutError:
            log.error("leaving office did not finish in time", node=self.node, epoch=term.epoch)
        finally:
            self.term = None
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                await bounded(self.store.resign(term), self.policy.ttl_s)


def _cancelling() -> bool:
    """Whether this task itself is being cancelled (not a call it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def _wait_any(
    a: asyncio.Event, b: asyncio.Event, seconds: float, also: asyncio.Future[None]
) -> None:
    """Wait until either event is set, `also` finishes, or `seconds` pass."""
    waits: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(a.wait()),
        asyncio.ensure_future(b.wait()),
    ]
    watched: list[asyncio.Future[Any]] = waits if also.done() else [*waits, also]
    try:
        await asyncio.wait(watched, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
