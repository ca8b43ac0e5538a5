"""The provisioning plan: one runner per queued job (I5), a reason for every job left
without one (I6), spares reused before new runners, capacity capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from runnerhub.domain.capacity import (
    LiveRunner,
    PoolSpec,
    QueuedJob,
    can_serve,
    desired_capacity,
    plan_pool,
)

T0 = datetime(2026, 11, 27, tzinfo=UTC)
POOL = PoolSpec("linux", min_idle=0, max_runners=3, spare_scope=None)


def job(i: int, repo: str = "acme/app", gen: int = 0) -> QueuedJob:
    return QueuedJob(
        job_id=i, run_attempt=1, repository=repo, scope=f"repo:{repo}", next_generation=gen
    )


def runner(
    name: str, job_id: int | None, busy: bool = False, scope: str = "repo:acme/app", age: int = 0
) -> LiveRunner:
    return LiveRunner(name, scope, job_id, busy, T0 - timedelta(seconds=age))


def test_desired_capacity_is_queued_plus_min_idle_capped() -> None:
    assert desired_capacity(2, 1, 10) == 3
    assert desired_capacity(20, 1, 10) == 10
    assert desired_capacity(0, 0, 10) == 0


def test_each_queued_job_without_a_runner_gets_one_with_a_deterministic_name() -> None:
    plan = plan_pool(POOL, [job(1), job(2)], [], "rh")
    assert [(p.name, p.job_id) for p in plan.provisions] == [("rh-1-1", 1), ("rh-2-1", 2)]
    again = plan_pool(POOL, [job(1), job(2)], [], "rh")
    assert again.provisions == plan.provisions


def test_a_job_that_has_a_runner_gets_no_second_one() -> None:
    plan = plan_pool(POOL, [job(1)], [runner("rh-1-1", 1)], "rh")
    assert plan.provisions == [] and plan.assigns == []


def test_a_new_generation_name_after_a_runner_died() -> None:
    plan = plan_pool(POOL, [job(1, gen=2)], [], "rh")
    assert plan.provisions[0].name == "rh-1-1-g2"


def test_a_full_pool_gives_the_job_a_reason() -> None:
    busy = [runner(f"r{i}", 100 + i, busy=True) for i in range(3)]
    plan = plan_pool(POOL, [job(1)], busy, "rh")
    assert plan.provisions == []
    assert "full" in plan.waiting[1]


def test_a_free_runner_is_reused_before_a_new_one_is_started() -> None:
    # rh-9-1 was started for job 9, which another runner took: it is free.
    plan = plan_pool(POOL, [job(1)], [runner("rh-9-1", 9)], "rh")
    assert plan.provisions == []
    assert [(a.runner, a.job_id) for a in plan.assigns] == [("rh-9-1", 1)]


def test_a_free_runner_of_another_repository_is_not_reused() -> None:
    plan = plan_pool(POOL, [job(1)], [runner("rh-9-1", 9, scope="repo:acme/other")], "rh")
    assert [p.job_id for p in plan.provisions] == [1]
    assert [r.runner for r in plan.retires] == ["rh-9-1"]


def test_org_runners_serve_every_repository_of_the_org() -> None:
    assert can_serve("org:acme", "acme/app")
    assert not can_serve("org:acme", "other/app")
    assert can_serve("repo:acme/app", "acme/app")


def test_spares_fill_min_idle_and_extras_retire() -> None:
    pool = PoolSpec("linux", min_idle=2, max_runners=5, spare_scope="org:acme")
    plan = plan_pool(pool, [], [], "rh")
    assert plan.spares_wanted == 2 and plan.provisions == []
    plan = plan_pool(pool, [], [], "rh", [7, 8])
    assert [p.name for p in plan.provisions] == ["rh-linux-spare-7", "rh-linux-spare-8"]
    extras = [runner(f"s{i}", None, scope="org:acme", age=10 - i) for i in range(4)]
    plan = plan_pool(pool, [], extras, "rh")
    assert [r.runner for r in plan.retires] == ["s0", "s1"]  # the oldest go


jobs_st = st.lists(st.integers(1, 30), unique=True, max_size=12)


@given(
    jobs_st,
    st.lists(st.tuples(st.integers(1, 40), st.booleans()), max_size=8),
    st.integers(1, 6),
    st.integers(0, 2),
)
def test_plan_invariants(
    job_ids: list[int], runner_specs: list[tuple[int, bool]], max_runners: int, min_idle: int
) -> None:
    pool = PoolSpec("p", min(min_idle, max_runners), max_runners, "repo:acme/app")
    jobs = [job(i) for i in job_ids]
    runners = [runner(f"x{n}", j, busy) for n, (j, busy) in enumerate(runner_specs)]
    plan = plan_pool(pool, jobs, runners, "rh")
    served = {r.job_id for r in runners if r.job_id in set(job_ids)}
    provisioned = [p.job_id for p in plan.provisions if p.job_id is not None]
    assigned = [a.job_id for a in plan.assigns]
    # I5: never a second runner for a job, nor two for one job in one plan.
    assert not (set(provisioned) | set(assigned)) & served
    assert len(provisioned + assigned) == len(set(provisioned + assigned))
    # I6: every queued job has a runner, gets one now, or has a reason.
    for j in job_ids:
        assert j in served or j in provisioned or j in assigned or j in plan.waiting
    # Capacity: never more live runners than the pool allows.
    assert len(runners) + len(plan.provisions) <= max(max_runners, len(runners))
    assert not {a.runner for a in plan.assigns} & {r.runner for r in plan.retires}
