"""Leader election against an in-memory store with etcd's semantics: one leader at a time,
a successor the moment the key is free, a leader that stops acting before its lease can
expire, handoff and draining. Real etcd is exercised by the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from runnerhub.dev.waiting import wait_until
from runnerhub.ha.dcs import Handoff, LeaderRecord, LeaderStore, StoreUnavailable, Term
from runnerhub.ha.elector import Elector
from runnerhub.ha.leadership import (
    ERA_BITS,
    LeasePolicy,
    decide_campaign,
    era_epoch,
    era_of,
    next_era,
    should_step_down,
)
from runnerhub.ha.memory import MemoryLeaderStore

POLICY = LeasePolicy(ttl_s=0.6, renewals_per_ttl=4, safety_margin_s=0.15)


# -- pure decisions -------------------------------------------------------------------------


def test_a_leader_acts_only_until_its_lease_minus_the_margin() -> None:
    p = LeasePolicy(ttl_s=2.0, renewals_per_ttl=4, safety_margin_s=0.5)
    assert p.renew_every_s == 0.5
    assert p.act_until(10.0) == 11.5
    assert p.may_act(11.49, 10.0) and not p.may_act(11.5, 10.0)
    with pytest.raises(ValueError):
        LeasePolicy(ttl_s=2.0, safety_margin_s=2.0)


def test_campaign_decisions() -> None:
    lead = LeaderRecord("a", None, 7)
    assert not decide_campaign("b", lead, False, None, 2).campaign
    assert not decide_campaign("b", None, True, None, 2).campaign  # draining
    assert decide_campaign("b", None, False, None, 2) == decide_campaign("b", None, False, None, 2)
    assert decide_campaign("b", None, False, Handoff(7, "b"), 2).delay_s == 0
    assert decide_campaign("c", None, False, Handoff(7, "b"), 2).delay_s == 1.0
    assert decide_campaign("c", None, False, Handoff(7, None), 2).delay_s == 0
    # Given way once to that handoff: the target did not take over, so now campaign.
    assert decide_campaign("c", None, False, Handoff(7, "b"), 2, waited_for=7).delay_s == 0


def test_a_handoff_addresses_one_leadership_only() -> None:
    assert should_step_down("a", 7, Handoff(7, None))
    assert should_step_down("a", 7, Handoff(7, "b"))
    assert not should_step_down("b", 9, Handoff(7, "b"))  # the successor is not asked
    assert not should_step_down("c", 9, Handoff(7, None))  # nor is any later leader
    assert not should_step_down("a", 7, None)


# -- the loop -------------------------------------------------------------------------------


async def stuck_until(released: asyncio.Event) -> None:
    """A call stuck in its own clean-up (a client library's): cancelling it does not end
    it, only `released` does. The fault these tests inject."""
    while not released.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await released.wait()


@dataclass
class Partitionable(LeaderStore):
    """One node's view of the shared store; `cut` makes it unreachable for that node."""

    inner: MemoryLeaderStore
    cut: bool = False
    hung_until: asyncio.Event | None = None  # calls never answer until it is set
    # Calls end cancelled from inside, as gRPC's do when the store closes their channel
    # after another call's error (seen in bench/campaign.py: the election loop ended).
    cancelled_inside: bool = False

    def _check(self) -> None:
        if self.cut:
            raise StoreUnavailable("partitioned")
        if self.cancelled_inside:
            raise asyncio.CancelledError

    async def _hang(self) -> None:
        if self.hung_until is not None:
            await stuck_until(self.hung_until)

    async def campaign(self, node: str, url: str | None, ttl_s: float) -> Term | None:
        self._check()
        return await self.inner.campaign(node, url, ttl_s)

    async def keepalive(self, term: Term) -> bool:
        self._check()
        await self._hang()
        return await self.inner.keepalive(term)

    async def resign(self, term: Term) -> None:
        self._check()
        await self._hang()
        await self.inner.resign(term)

    async def leader(self) -> tuple[LeaderRecord | None, int]:
        self._check()
        return await self.inner.leader()

    async def changes(self, after_revision: int) -> AsyncIterator[LeaderRecord | None]:
        self._check()
        async for change in self.inner.changes(after_revision):
            self._check()
            yield change

    async def put_handoff(self, request: Handoff, ttl_s: float) -> None:
        await self.inner.put_handoff(request, ttl_s)

    async def handoff(self) -> Handoff | None:
        self._check()
        await self._hang()
        return await self.inner.handoff()

    async def close(self) -> None:
        return None


@dataclass
class Member:
    name: str
    store: Partitionable
    draining: bool = False
    fail_taking_office: bool = False
    taking_office_until: asyncio.Event | None = None  # taking office ends only when set
    policy: LeasePolicy = POLICY
    log: list[tuple[str, int, float]] = field(default_factory=list)
    elector: Elector | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def elected(self, term: Term, seen: float) -> None:
        if self.fail_taking_office:
            self.log.append(("failed to take office", term.epoch, time.monotonic()))
            raise RuntimeError("database down")
        self.log.append(("elected", term.epoch, time.monotonic()))
        if self.taking_office_until is not None:
            await stuck_until(self.taking_office_until)

    async def demoted(self, term: Term, reason: str) -> None:
        self.log.append((f"demoted: {reason}", term.epoch, time.monotonic()))

    def start(self) -> Member:
        self.elector = Elector(
            self.store,
            self.name,
            None,
            self.policy,
            is_draining=lambda: self.draining,
            retry_s=0.05,
            follower_recheck_s=0.2,
        )
        self.task = asyncio.create_task(self.elector.run(self.stop, self.elected, self.demoted))
        return self

    async def close(self) -> None:
        self.stop.set()
        if self.task:
            await asyncio.wait_for(self.task, 5)

    @property
    def leads(self) -> bool:
        return self.elector is not None and self.elector.may_act()


@pytest.fixture
async def world() -> AsyncIterator[tuple[MemoryLeaderStore, list[Member]]]:
    shared = MemoryLeaderStore(time.monotonic)
    members: list[Member] = []
    yield shared, members
    for m in members:
        for stuck in (m.store.hung_until, m.taking_office_until):
            if stuck is not None:
                stuck.set()
        if m.task and not m.task.done():
            m.stop.set()
            m.store.cut = False
            await asyncio.wait_for(asyncio.gather(m.task, return_exceptions=True), 5)


def add(
    shared: MemoryLeaderStore,
    members: list[Member],
    name: str,
    *,
    draining: bool = False,
    fail_taking_office: bool = False,
    policy: LeasePolicy = POLICY,
) -> Member:
    m = Member(
        name,
        Partitionable(shared),
        draining=draining,
        fail_taking_office=fail_taking_office,
        policy=policy,
    )
    members.append(m)
    return m.start()


async def leader_of(members: list[Member]) -> Member:
    async def one() -> Member | None:
        leading = [m for m in members if m.leads]
        assert len(leading) <= 1, [m.name for m in leading]
        return leading[0] if leading else None

    found = await wait_until(one, 5, "a leader")
    assert found is not None
    return found


async def stops_acting_in_time_then_leaves(m: Member) -> None:
    """From now (its store just failed it), `m` stops acting within the TTL, then leaves
    office because its renewals did not come through."""
    since = time.monotonic()
    await wait_until(lambda: not m.leads, POLICY.ttl_s * 3, f"{m.name} to stop acting")
    assert time.monotonic() - since < POLICY.ttl_s, time.monotonic() - since
    await wait_until(
        lambda: m.log[-1][0].startswith("demoted: lease renewal overdue"),
        POLICY.ttl_s * 3,
        f"{m.name} to leave office",
    )


async def test_exactly_one_of_three_leads(world: tuple[MemoryLeaderStore, list[Member]]) -> None:
    shared, members = world
    # A lease long against its renewals: a loaded machine's stalled event loop (seen in
    # make test) must not end a healthy leadership; the short POLICY is for the fault tests.
    steady = LeasePolicy(ttl_s=3.0, renewals_per_ttl=12, safety_margin_s=0.5)
    for name in "abc":
        add(shared, members, name, policy=steady)
    first = await leader_of(members)
    for _ in range(10):  # stays one leader over several renewals
        await asyncio.sleep(steady.renew_every_s)  # the passage of time is the point here
        assert [m.name for m in members if m.leads] == [first.name]


async def test_a_clean_stop_hands_over_at_once(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    shared, members = world
    a, b = add(shared, members, "a"), add(shared, members, "b")
    first = await leader_of(members)
    epoch = first.elector.epoch if first.elector else None
    stopped = time.monotonic()
    await first.close()
    assert first.log[-1][0] == "demoted: shutting down"
    second = await leader_of(members)
    assert second is not first
    took = second.log[-1][2] - stopped
    assert took < POLICY.ttl_s / 2, took  # no waiting for the lease to expire
    assert second.elector and epoch and second.elector.epoch and second.elector.epoch > epoch
    assert {a.name, b.name} == {first.name, second.name}


async def test_a_crashed_leader_is_replaced_after_its_lease(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    shared, members = world
    add(shared, members, "a")
    add(shared, members, "b")
    first = await leader_of(members)
    assert first.task is not None
    first.store.cut = True  # it can no longer renew nor resign: as good as dead to etcd
    crashed = time.monotonic()
    second = await leader_of([m for m in members if m is not first])
    took = second.log[-1][2] - crashed
    assert POLICY.ttl_s - POLICY.renew_every_s < took < POLICY.ttl_s + 0.5, took


async def test_a_partitioned_leader_stops_acting_before_its_lease_expires(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    shared, members = world
    add(shared, members, "a")
    add(shared, members, "b")
    first = await leader_of(members)
    first.store.cut = True
    await wait_until(lambda: not first.leads, 5, "the old leader to stop acting")
    stopped_acting = time.monotonic()
    second = await leader_of([m for m in members if m is not first])
    assert second.log[-1][2] > stopped_acting  # never two acting at once
    assert first.log[-1][0].startswith("demoted: lease renewal overdue")


async def test_a_leader_whose_store_calls_hang_past_cancellation_stops_acting_in_time(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    """Renewals that never return, not even when cancelled (seen in make test: a leader
    kept its loops and runnerhub_leader for minutes after its lease had run out)."""
    shared, members = world
    add(shared, members, "a")
    add(shared, members, "b")
    first = await leader_of(members)
    first.store.hung_until = asyncio.Event()
    hung = time.monotonic()
    await wait_until(
        lambda: first.log[-1][0].startswith("demoted: lease renewal overdue"),
        POLICY.ttl_s * 3,
        "the old leader to step down",
    )
    assert first.log[-1][2] - hung < POLICY.ttl_s, first.log[-1][2] - hung
    second = await leader_of([m for m in members if m is not first])
    assert second.log[-1][2] > first.log[-1][2]  # never two acting at once


async def test_a_leader_whose_take_over_never_ends_still_steps_down_in_time(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    shared, members = world
    stuck = add(shared, members, "a")
    stuck.taking_office_until = asyncio.Event()
    await wait_until(lambda: stuck.leads, 5, "a to lead")
    stuck.store.cut = True
    # Leaving office (stopping the loops) follows, after a short wait for the take-over.
    await stops_acting_in_time_then_leaves(stuck)


async def test_store_calls_cancelled_from_inside_end_a_leadership_not_the_election(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    """A leader whose renewals end cancelled (not by it) steps down before its lease is
    out; its election loop lives on and leads again once the store answers."""
    shared, members = world
    add(shared, members, "a")
    add(shared, members, "b")
    first = await leader_of(members)
    first.store.cancelled_inside = True
    await stops_acting_in_time_then_leaves(first)
    second = await leader_of([m for m in members if m is not first])
    first.store.cancelled_inside = False  # the store answers again; b goes
    await second.close()
    assert await leader_of(members) is first
    assert not first.task.done()


async def test_a_leader_whose_key_is_deleted_under_a_live_lease_steps_down(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    """A renewal proves the lease, not the key: a key deleted by hand (its lease alive) and
    taken by another node ends the first leadership at the next renewal."""
    shared, members = world
    add(shared, members, "a")
    add(shared, members, "b")
    first = await leader_of(members)
    assert first.elector is not None and first.elector.term is not None
    lease_id = first.elector.term.lease_id
    await shared.delete_leader()
    assert lease_id in shared._leases  # only the key went
    await wait_until(
        lambda: first.log[-1][0] == "demoted: lease lost", POLICY.ttl_s * 3, "a step-down"
    )
    second = await leader_of([m for m in members if m is not first])
    assert second is not first


async def test_handoff_to_a_named_node(world: tuple[MemoryLeaderStore, list[Member]]) -> None:
    shared, members = world
    for name in "abc":
        add(shared, members, name)
    first = await leader_of(members)
    target = next(m for m in members if m is not first)
    assert first.elector is not None
    asked = await first.elector.request_handoff(target.name)
    assert asked.node == first.name
    await wait_until(lambda: target.leads, 5, "the target to lead")
    assert first.log[-1][0].startswith("demoted: handoff requested")
    for _ in range(4):  # the new leader is not asked to go by the same request
        await asyncio.sleep(POLICY.renew_every_s)  # the passage of time is the point here
        assert target.leads


async def test_a_draining_node_never_leads_and_a_draining_leader_resigns(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    shared, members = world
    drained = add(shared, members, "a", draining=True)
    other = add(shared, members, "b")
    assert await leader_of(members) is other
    drained.draining = False
    other.draining = True
    assert other.elector is not None
    other.elector.request_resign("draining")
    await wait_until(lambda: not other.leads, 5, "the draining leader to go")
    assert await leader_of(members) is drained
    assert other.log[-1][0] == "demoted: draining"


async def test_a_retiring_leader_hands_over_and_never_campaigns_again(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    """A node told to shut down steps down and must not win the election it just left,
    even when it is the only candidate for a while."""
    shared, members = world
    leaving = add(shared, members, "a")
    await wait_until(lambda: leaving.leads, 5, "a to lead")
    assert leaving.elector is not None
    leaving.elector.retire("shutting down")
    await wait_until(lambda: not leaving.leads, 5, "a to step down")
    elected_before = sum(e[0] == "elected" for e in leaving.log)
    successor = add(shared, members, "b")
    await wait_until(lambda: successor.leads, 5, "b to lead")
    assert sum(e[0] == "elected" for e in leaving.log) == elected_before
    assert leaving.log[-1][0] == "demoted: shutting down"


async def test_a_node_that_cannot_take_office_steps_down(
    world: tuple[MemoryLeaderStore, list[Member]],
) -> None:
    shared, members = world
    broken = add(shared, members, "a", fail_taking_office=True)
    await wait_until(
        lambda: any(e[0].startswith("demoted: could not take office") for e in broken.log),
        5,
        "a failed term",
    )
    healthy = add(shared, members, "b")
    await wait_until(lambda: healthy.log and healthy.log[-1][0] == "elected", 5, "b to lead")


# -- eras: a promoted region's epochs above every epoch of the region it replaces -----------


def test_an_epoch_of_a_later_era_is_above_every_epoch_of_an_earlier_one() -> None:
    last_of_era_0 = era_epoch(0, (1 << ERA_BITS) - 1)
    first_of_era_1 = era_epoch(1, 1)
    assert first_of_era_1 > last_of_era_0
    assert (era_of(last_of_era_0), era_of(first_of_era_1)) == (0, 1)
    assert era_epoch(0, 42) == 42  # a region never promoted keeps its plain revisions


def test_an_era_cannot_hold_a_revision_past_its_bits_or_below_zero() -> None:
    for era, revision in ((0, 1 << ERA_BITS), (0, -1), (-1, 5)):
        with pytest.raises(ValueError):
            era_epoch(era, revision)


def test_the_next_era_is_above_the_recorded_epoch_and_the_regions_own_era() -> None:
    assert next_era(None, 0) == 1  # a fresh database, a fresh etcd
    assert next_era(era_epoch(0, 9_000), 0) == 1  # region A's epoch, replicated
    assert next_era(era_epoch(3, 5), 0) == 4  # promoted before, elsewhere
    assert next_era(era_epoch(0, 5), 2) == 3  # this etcd has had eras of its own
