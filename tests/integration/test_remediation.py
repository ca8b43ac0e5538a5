"""Remediation against real runner processes and PostgreSQL: each action fires on its fault
(a runner stuck without its job, a runner alive long after its job ended, a disk short of
space with logs of gone runners) and not on the healthy case next to it; each is recorded,
budgeted and switchable off."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from runnerhub.backends.base import RunnerSpec
from runnerhub.backends.process import ProcessBackend
from runnerhub.config import ProcessBackendSettings, Settings
from runnerhub.context import NodeContext
from runnerhub.control.reconciler import Reconciler
from runnerhub.control.remediation import Remediation
from runnerhub.control.scheduler import Scheduler
from runnerhub.dev.waiting import wait_until
from runnerhub.github import GitHubClient, PatAuth
from runnerhub.store import runners as runner_store
from runnerhub.store.db import Conn, Pool
from tests.integration.test_github_client_sim import PAT, SIM_URL, sim_config, sim_http

# A runner's stand-in: it idles as a runner waiting for a job does.
IDLE = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def backend(tmp_path: Path) -> ProcessBackend:
    return ProcessBackend(tmp_path / "runners", {"linux": ProcessBackendSettings(command=IDLE)})


async def job(db: Pool, job_id: int, state: str, completed_ago_s: float | None = None) -> None:
    async with db.connection() as conn:
        await conn.execute(
            """INSERT INTO jobs (id, run_id, repository, labels, state, last_source,
                                 completed_at)
               VALUES (%s, 1, 'acme/app', '{self-hosted}', %s, 'webhook',
                       CASE WHEN %s::float8 IS NULL THEN NULL
                            ELSE now() - make_interval(secs => %s::float8) END)""",
            (job_id, state, completed_ago_s, completed_ago_s),
        )


async def intent(conn: Conn, name: str, job_id: int | None) -> None:
    """A runner row of the linux pool in acme/app, as the scheduler records its intent."""
    await runner_store.insert_requested(
        conn,
        name=name,
        pool="linux",
        scope="repo:acme/app",
        labels=["self-hosted"],
        job_id=job_id,
        generation=1 if job_id is not None else 0,
        backend="process",
        node="node-test",
    )


async def runner(
    db: Pool, backend: ProcessBackend, name: str, job_id: int, age_s: float, state: str = "running"
) -> None:
    async with db.connection() as conn:
        await intent(conn, name, job_id)
        await runner_store.set_state(conn, name, "running", "node-test")
        if state == "busy":
            await runner_store.set_state(conn, name, "busy", "node-test")
        await conn.execute(
            "UPDATE runners SET created_at = now() - make_interval(secs => %s) WHERE name = %s",
            (age_s, name),
        )
    await backend.provision(RunnerSpec(name, "linux", ("self-hosted",), job_id, "jit"))


async def row(db: Pool, name: str) -> Any:
    async with db.connection() as conn:
        return await runner_store.get(conn, name)


async def alive(backend: ProcessBackend, name: str) -> bool:
    return any(b.name == name and b.alive for b in await backend.list())


def count(action: str, skipped: bool = False) -> float:
    metric = "runnerhub_remediations_skipped_total" if skipped else "runnerhub_remediations_total"
    return REGISTRY.get_sample_value(metric, {"action": action}) or 0.0


async def events(db: Pool, kind: str) -> list[str]:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT subject FROM events WHERE kind = %s ORDER BY id", (kind,))
        return [r["subject"] for r in await cur.fetchall()]


async def test_a_runner_stuck_without_its_job_is_replaced_a_fresh_one_is_not(
    db: Pool, backend: ProcessBackend, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(janitor={"idle_spare_ttl_s": 300})
    await job(db, 1, "queued")
    await job(db, 2, "queued")
    await runner(db, backend, "rh-1-1", 1, age_s=600)  # never took its job in 10 minutes
    await runner(db, backend, "rh-2-1", 2, age_s=5)  # just started
    before = count("replace_stuck_runner")
    try:
        await Remediation(NodeContext(settings, db), {"process": backend}).cycle()
        stuck = await row(db, "rh-1-1")
        assert stuck.state == "exited"
        assert stuck.last_error == "replaced: had not taken job 1 after 300 s"
        await wait_until(lambda: _not(alive(backend, "rh-1-1")), 10, "the stuck runner stopped")
        assert (await row(db, "rh-2-1")).state == "running" and await alive(backend, "rh-2-1")
        assert count("replace_stuck_runner") == before + 1
        assert await events(db, "remediation.replace_stuck_runner") == ["runner:rh-1-1"]
        # The job is served again, by the next generation, and that is recorded too.
        github = GitHubClient("http://127.0.0.1:9", PatAuth("ghp_unused"), max_retries=1)
        scheduler = Scheduler(NodeContext(settings, db), github, {"process": backend})
        try:
            await scheduler.cycle()
        finally:
            await scheduler.cancel_in_flight()
            await github.aclose()
        assert await events(db, "remediation.requeue_job") == ["job:1"]
    finally:
        for b in await backend.list():
            await backend.terminate(b.name, grace_s=1)


async def test_a_runner_alive_long_after_its_job_completed_is_stopped(
    db: Pool, backend: ProcessBackend, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(remediation={"zombie_grace_s": 120})
    await job(db, 3, "completed", completed_ago_s=600)
    await job(db, 4, "completed", completed_ago_s=10)  # within the grace: may still exit
    await job(db, 5, "in_progress")
    for name, job_id in (("rh-3-1", 3), ("rh-4-1", 4), ("rh-5-1", 5)):
        await runner(db, backend, name, job_id, age_s=900, state="busy")
    try:
        await Remediation(NodeContext(settings, db), {"process": backend}).cycle()
        zombie = await row(db, "rh-3-1")
        assert zombie.state == "exited" and "after job 3 completed" in zombie.last_error
        assert (await row(db, "rh-4-1")).state == "busy"
        assert (await row(db, "rh-5-1")).state == "busy"
        assert await events(db, "remediation.stop_zombie_runner") == ["runner:rh-3-1"]
    finally:
        for b in await backend.list():
            await backend.terminate(b.name, grace_s=1)


async def _not(probe: Any) -> bool:
    return not await probe


def logs(directory: Path, names: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / f"{name}.log").write_bytes(b"x" * 4096)


async def test_logs_of_gone_runners_are_pruned_only_when_the_disk_is_short(
    db: Pool, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    directory = tmp_path / "logs"
    logs(directory, ["rh-old-1", "rh-old-2"])
    await job(db, 6, "queued")
    async with db.connection() as conn:  # a live runner: its log stays whatever the disk
        await runner_store.insert_requested(
            conn, name="rh-6-1", pool="linux", scope="repo:acme/app", labels=["x"],
            job_id=6, generation=1, backend="process", node="node-test",
        )  # fmt: skip
    logs(directory, ["rh-6-1"])
    plenty = settings_factory(remediation={"prune_below_free_fraction": 0.0})
    await Remediation(NodeContext(plenty, db), {}, [directory]).cycle()
    assert len(list(directory.iterdir())) == 3  # enough free space: nothing deleted

    # "Short of space" whatever this machine's disk holds: ask for all of it to be free.
    short = settings_factory(remediation={"prune_below_free_fraction": 0.999999})
    await Remediation(NodeContext(short, db), {}, [directory]).cycle()
    assert [p.name for p in directory.iterdir()] == ["rh-6-1.log"]
    assert await events(db, "remediation.prune_logs") == [f"dir:{directory}"]


async def test_actions_are_budgeted_and_can_be_switched_off(
    db: Pool, backend: ProcessBackend, settings_factory: Callable[..., Settings]
) -> None:
    for job_id in (7, 8):
        await job(db, job_id, "queued")
        await runner(db, backend, f"rh-{job_id}-1", job_id, age_s=600)
    try:
        off = settings_factory(remediation={"replace_stuck_runners": False})
        await Remediation(NodeContext(off, db), {"process": backend}).cycle()
        assert (await row(db, "rh-7-1")).state == "running"

        skipped = count("replace_stuck_runner", skipped=True)
        budget = settings_factory(remediation={"max_actions_per_hour": 1})
        await Remediation(NodeContext(budget, db), {"process": backend}).cycle()
        states = {(await row(db, n)).state for n in ("rh-7-1", "rh-8-1")}
        assert states == {"exited", "running"}  # one replaced, the other left for later
        assert count("replace_stuck_runner", skipped=True) == skipped + 1
    finally:
        for b in await backend.list():
            await backend.terminate(b.name, grace_s=1)


async def test_a_registration_nothing_runs_is_removed_and_recorded(
    db: Pool, settings_factory: Callable[..., Settings]
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = settings_factory()
    async with sim_http(sim_config(key, repositories=["acme/app"])) as sim:
        github = GitHubClient(SIM_URL, PatAuth(PAT), http=sim, max_retries=1)
        # A runner of ours ran in this repository (so the sweep looks there)...
        async with db.connection() as conn:
            await intent(conn, "rh-1-1", None)
        # ...and GitHub holds a registration of ours that no runner row or process claims
        # (its provisioning died between registering and recording it), and one not ours.
        await github.generate_jitconfig("repo:acme/app", "rh-7-1", ["self-hosted"])
        await github.generate_jitconfig("repo:acme/app", "someone-else", ["self-hosted"])
        await Reconciler(NodeContext(settings, db), github, {}).cycle()
        names = [r.name for r in await github.list_runners("repo:acme/app")]
        assert names == ["someone-else"]
        assert await events(db, "remediation.remove_registration") == ["runner:rh-7-1"]
