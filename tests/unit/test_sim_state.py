"""The simulated GitHub's rules, without HTTP: assignment, lifecycle, reaping, snapshots."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.errors import ApiError
from runnerhub.dev.sim.model import Delivery, Job, Runner
from runnerhub.dev.sim.state import SimState
from runnerhub.dev.waiting import wait_until


def make_state(**overrides: object) -> tuple[SimState, list[tuple[int, str]]]:
    config = SimConfig(repositories=["octo/app", "octo/lib"], organizations=["acme"])
    for key, value in overrides.items():
        setattr(config, key, value)
    state = SimState(config)
    events: list[tuple[int, str]] = []
    state.on_job_event = lambda job, action: events.append((job.id, action))
    return state, events


def queue(state: SimState, repo: str, labels: list[str], count: int = 1) -> list[Job]:
    return state.create_run(
        state.repo_by_name(repo),
        labels=labels,
        count=count,
        duration_s=0.0,
        conclusion="success",
        workflow_name="ci",
        job_name="build",
    )


def register(state: SimState, scope: str, name: str, labels: list[str]) -> Runner:
    runner = state.register_runner(scope, name, labels, 1, "_work")
    state.open_session(runner)
    return runner


async def test_ids_are_increasing_and_job_ids_do_not_look_like_run_ids() -> None:
    state, events = make_state()
    first = queue(state, "octo/app", ["self-hosted"], count=3)
    second = queue(state, "octo/app", ["self-hosted"])
    ids = [job.id for job in [*first, *second]]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert len({job.run_id for job in first}) == 1
    assert second[0].run_id > first[0].run_id
    assert min(ids) > 10_000_000 > max(job.run_id for job in [*first, *second])
    assert events == [(job_id, "queued") for job_id in ids]


async def test_oldest_matching_job_goes_first_and_labels_are_case_insensitive() -> None:
    state, _ = make_state()
    gpu = queue(state, "octo/app", ["self-hosted", "GPU"])[0]
    plain_old, plain_new = queue(state, "octo/app", ["self-hosted"], count=2)
    cpu_runner = register(state, "repo:octo/app", "cpu", ["self-hosted", "linux"])
    gpu_runner = register(state, "repo:octo/app", "gpu", ["Self-Hosted", "gpu", "linux"])

    assert await state.acquire(cpu_runner, 0) is plain_old  # cannot take the gpu job
    assert await state.acquire(gpu_runner, 0) is gpu  # oldest it can take
    assert plain_new.status == "queued"


async def test_scope_rule_repo_and_org_runners() -> None:
    state, _ = make_state()
    other = queue(state, "octo/lib", ["x"])[0]
    in_org = queue(state, "acme/tools", ["x"])[0]
    repo_runner = register(state, "repo:octo/app", "r", ["x"])
    org_runner = register(state, "org:acme", "o", ["x"])

    assert await state.acquire(repo_runner, 0) is None  # octo/lib is not its repo
    assert await state.acquire(org_runner, 0) is in_org
    assert other.status == "queued"


async def test_a_job_is_handed_to_exactly_one_runner() -> None:
    state, events = make_state()
    job = queue(state, "octo/app", ["x"])[0]
    first = register(state, "repo:octo/app", "a", ["x"])
    second = register(state, "repo:octo/app", "b", ["x"])

    assert await state.acquire(first, 0) is job
    assert await state.acquire(second, 0) is None
    assert job.executions == ["a"]
    assert (job.status, job.runner_name, job.runner_id) == ("in_progress", "a", first.id)
    assert job.runner_group_name == "Default"
    assert first.busy and events[-1] == (job.id, "in_progress")
    with pytest.raises(ApiError) as err:
        await state.acquire(first, 0)  # ephemeral: one job per registration
    assert err.value.status == 409


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    await wait_until(predicate, within, "the condition")


async def test_long_poll_wakes_when_a_matching_job_arrives() -> None:
    state, _ = make_state()
    runner = register(state, "repo:octo/app", "a", ["x"])
    waiter = asyncio.create_task(state.acquire(runner, 5))
    await wait_for(lambda: runner.polling == 1)
    job = queue(state, "octo/app", ["x"])[0]
    assert await asyncio.wait_for(waiter, 1) is job


async def test_complete_finishes_the_job_and_removes_the_ephemeral_runner() -> None:
    state, events = make_state()
    job = queue(state, "octo/app", ["x"])[0]
    runner = register(state, "repo:octo/app", "a", ["x"])
    await state.acquire(runner, 0)
    state.complete(runner, job.id, "failure")

    assert (job.status, job.conclusion) == ("completed", "failure")
    assert job.completed_at is not None
    assert runner.deleted and not runner.busy
    assert events[-1] == (job.id, "completed")
    with pytest.raises(ApiError) as err:
        state.protocol_runner(runner.id, runner.token)
    assert err.value.status == 410


def test_runner_names_are_unique_per_scope() -> None:
    state, _ = make_state()
    state.register_runner("repo:octo/app", "r1", ["x"], 1, "_work")
    state.register_runner("repo:octo/lib", "r1", ["x"], 1, "_work")  # other scope: fine
    with pytest.raises(ApiError) as err:
        state.register_runner("repo:octo/app", "R1", ["x"], 1, "_work")
    assert err.value.status == 409
    assert "Already exists" in err.value.message


async def test_busy_runner_cannot_be_deleted() -> None:
    state, _ = make_state()
    queue(state, "octo/app", ["x"])
    runner = register(state, "repo:octo/app", "a", ["x"])
    await state.acquire(runner, 0)
    with pytest.raises(ApiError) as err:
        state.delete_runner(runner)
    assert err.value.status == 422
    assert err.value.message == 'Bad request - Runner "a" is still running a job'


async def test_a_deleted_runner_takes_no_job() -> None:
    state, _ = make_state()
    runner = register(state, "repo:octo/app", "a", ["x"])
    state.delete_runner(runner)
    queue(state, "octo/app", ["x"])
    with pytest.raises(ApiError) as err:
        await state.acquire(runner, 0)
    assert err.value.status == 410


def test_protocol_auth_checks_token_before_telling_about_deletion() -> None:
    state, _ = make_state()
    runner = state.register_runner("repo:octo/app", "a", ["x"], 1, "_work")
    state.delete_runner(runner)
    for token, status in ((None, 401), ("wrong", 401), (runner.token, 410)):
        with pytest.raises(ApiError) as err:
            state.protocol_runner(runner.id, token)
        assert err.value.status == status
    with pytest.raises(ApiError) as err:
        state.protocol_runner(999, runner.token)
    assert err.value.status == 404


def test_second_session_for_the_same_registration_is_refused() -> None:
    state, _ = make_state()
    runner = register(state, "repo:octo/app", "a", ["x"])
    assert runner.status == "online"
    with pytest.raises(ApiError) as err:
        state.open_session(runner)
    assert err.value.status == 409


async def test_cancel_queued_and_running_jobs() -> None:
    state, events = make_state()
    queued, running = queue(state, "octo/app", ["x"], count=2)
    runner = register(state, "repo:octo/app", "a", ["x"])
    state.cancel(queued.id)
    assert await state.acquire(runner, 0) is running  # the cancelled one is gone
    assert state.heartbeat(runner) == {"job_id": running.id, "cancelled": False}
    state.cancel(running.id)
    assert state.heartbeat(runner) == {"job_id": running.id, "cancelled": True}
    state.complete(runner, running.id, "cancelled")
    assert [(queued.conclusion, running.conclusion)] == [("cancelled", "cancelled")]
    assert events.count((running.id, "completed")) == 1  # the runner's report adds none
    with pytest.raises(ApiError) as err:
        state.cancel(running.id)
    assert err.value.status == 409


async def test_reap_fails_the_job_of_a_silent_busy_runner() -> None:
    state, events = make_state(runner_heartbeat_timeout_s=5.0)
    job = queue(state, "octo/app", ["x"])[0]
    runner = register(state, "repo:octo/app", "a", ["x"])
    idle = register(state, "repo:octo/app", "idle", ["y"])
    await state.acquire(runner, 0)

    state.reap()
    assert job.status == "in_progress"  # still within the timeout

    runner.last_contact -= 6
    idle.last_contact -= 6
    state.reap()
    assert (job.status, job.conclusion) == ("completed", "failure")
    assert runner.deleted
    assert events[-1] == (job.id, "completed")
    assert (idle.deleted, idle.status) == (False, "offline")  # idle: just offline


def test_any_repo_under_a_configured_org_exists_others_do_not() -> None:
    state, _ = make_state()
    assert state.repo("ACME", "new-repo").full_name == "acme/new-repo"
    assert state.repo("acme", "NEW-REPO") is state.repo("acme", "new-repo")
    for owner, name in (("nobody", "x"), ("octo", "missing")):
        with pytest.raises(ApiError) as err:
            state.repo(owner, name)
        assert err.value.status == 404


async def test_snapshot_round_trip_continues_where_it_was() -> None:
    state, _ = make_state()
    done, waiting = queue(state, "octo/app", ["x"], count=2)
    runner = register(state, "repo:octo/app", "a", ["x"])
    await state.acquire(runner, 0)
    state.complete(runner, done.id, "success")
    kept = register(state, "org:acme", "kept", ["x", "self-hosted"])
    state.label_id("x")

    data = json.loads(b"".join(state.snapshot_chunks({})))
    restored, _ = make_state()
    restored.restore(data)

    assert restored.jobs[done.id].executions == ["a"]
    assert restored.jobs[done.id].conclusion == "success"
    assert list(restored.queued) == [waiting.id]
    assert restored.runners[kept.id].name == "kept"
    assert restored.runners[runner.id].deleted
    assert restored.label_id("x") == state.label_id("x")
    assert restored.runners[kept.id].last_contact == pytest.approx(time.monotonic(), abs=5)
    new = queue(restored, "octo/app", ["x"])[0]
    assert new.id > waiting.id and new.run_id > waiting.run_id
    assert restored.stats()["jobs"] == {"queued": 2, "in_progress": 0, "completed": 1}


def test_restore_refuses_an_unknown_version() -> None:
    state, _ = make_state()
    with pytest.raises(ValueError, match="version"):
        state.restore({"version": 99})


def delivery(state: SimState, n: int) -> Delivery:
    return Delivery(
        id=state.new_delivery_id(),
        guid=f"guid-{n}",
        event="workflow_job",
        action="queued",
        repository="octo/app",
        repository_id=1,
        installation_id=None,
        redelivery=False,
        delivered_at=time.time(),
        duration=0.01,
        status="OK",
        status_code=200,
        url="http://receiver/hook",
        request_headers={"X-GitHub-Delivery": f"guid-{n}"},
        body=json.dumps({"n": n}),
        response_headers={},
        response_body="ok",
    )


def test_deliveries_are_capped_and_survive_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runnerhub.dev.sim.state.MAX_DELIVERIES", 3)
    state, _ = make_state()
    for n in range(5):
        state.add_delivery(delivery(state, n))
    assert [d.guid for d in state.deliveries.values()] == ["guid-2", "guid-3", "guid-4"]

    data = json.loads(b"".join(state.snapshot_chunks({"extra": 1})))
    assert data["extra"] == 1
    restored, _ = make_state()
    restored.restore(data)
    assert list(restored.deliveries.values()) == list(state.deliveries.values())
    assert restored.new_delivery_id() == state.new_delivery_id()
