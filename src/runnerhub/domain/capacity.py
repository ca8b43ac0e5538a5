"""Desired capacity and the provisioning plan for one pool: pure, no I/O.

The scheduler takes a snapshot (the pool's queued jobs, its live runners), calls `plan_pool`
and carries out the actions it returns. Keeping the decision here makes I5 (one runner per
queued job) and I6 (every queued job has a runner or a reason) testable without any I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from runnerhub.domain.naming import job_runner_name, spare_runner_name


@dataclass(frozen=True)
class PoolSpec:
    name: str
    min_idle: int
    max_runners: int
    spare_scope: str | None  # where spare runners register ("org:acme" / "repo:acme/app")


@dataclass(frozen=True)
class QueuedJob:
    job_id: int
    run_attempt: int
    repository: str
    scope: str  # where a runner for it must register
    next_generation: int  # how many runners were provisioned for this job before


@dataclass(frozen=True)
class LiveRunner:
    """A runner we have asked for and that has not exited (requested … busy)."""

    name: str
    scope: str
    job_id: int | None  # the queued job it is meant for; None for a spare
    busy: bool  # GitHub has given it a job
    created_at: datetime


@dataclass(frozen=True)
class Provision:
    name: str
    scope: str
    job_id: int | None
    generation: int = 0


@dataclass(frozen=True)
class Assign:
    """Point a free runner at a queued job instead of starting a new one."""

    runner: str
    job_id: int


@dataclass(frozen=True)
class Retire:
    """A spare runner beyond min_idle: remove its registration, then stop it."""

    runner: str


@dataclass
class PoolPlan:
    pool: str
    desired: int
    current: int
    provisions: list[Provision] = field(default_factory=list)
    assigns: list[Assign] = field(default_factory=list)
    retires: list[Retire] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)  # job id -> reason
    spares_wanted: int = 0


def can_serve(runner_scope: str, repository: str) -> bool:
    """A runner registered on a repository serves that repository; on an org, all of its."""
    owner = repository.split("/", 1)[0]
    return runner_scope in (f"repo:{repository}", f"org:{owner}")


def desired_capacity(queued: int, min_idle: int, max_runners: int) -> int:
    """Matching queued jobs plus the idle floor, capped by the pool's maximum."""
    return min(max_runners, queued + min_idle)


def plan_pool(
    pool: PoolSpec,
    jobs: Sequence[QueuedJob],
    runners: Sequence[LiveRunner],
    prefix: str,
    spare_serials: Sequence[int] = (),
) -> PoolPlan:
    """Decide what one pool needs now. `jobs` come oldest first; `spare_serials` number
    new spare runners (when there are fewer than needed, fewer spares are started now)."""
    queued_ids = {j.job_id for j in jobs}
    covered = {r.job_id for r in runners if r.job_id in queued_ids}
    needing = [j for j in jobs if j.job_id not in covered]
    # Free: alive, not working, and not meant for any job still queued.
    free = sorted(
        (r for r in runners if not r.busy and r.job_id not in queued_ids),
        key=lambda r: r.created_at,
    )
    plan = PoolPlan(
        pool=pool.name,
        desired=desired_capacity(len(jobs), pool.min_idle, pool.max_runners),
        current=len(runners),
    )

    unserved: list[QueuedJob] = []
    for job in needing:
        spare = next((r for r in free if can_serve(r.scope, job.repository)), None)
        if spare is None:
            unserved.append(job)
            continue
        free.remove(spare)
        plan.assigns.append(Assign(spare.name, job.job_id))

    room = pool.max_runners - len(runners)
    for job in unserved:
        if room <= 0:
            plan.waiting[job.job_id] = (
                f"pool {pool.name} is full ({len(runners)} of {pool.max_runners} runners)"
            )
            continue
        room -= 1
        name = job_runner_name(prefix, job.job_id, job.run_attempt, job.next_generation)
        plan.provisions.append(Provision(name, job.scope, job.job_id, job.next_generation))

    if len(free) < pool.min_idle and pool.spare_scope is not None:
        wanted = min(pool.min_idle - len(free), max(room, 0))
        plan.spares_wanted = wanted
        for serial in list(spare_serials)[:wanted]:
            name = spare_runner_name(prefix, pool.name, serial)
            plan.provisions.append(Provision(name, pool.spare_scope, None))
    elif len(free) > pool.min_idle:
        # Keep the newest as spares; the oldest have waited longest for nothing.
        plan.retires.extend(Retire(r.name) for r in free[: len(free) - pool.min_idle])
    return plan
