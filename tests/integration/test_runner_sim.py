"""The runner simulator as a real process against the GitHub simulator."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from runnerhub.dev.sim.github import SimConfig, serve
from runnerhub.dev.sim.runner import ENV_JITCONFIG
from runnerhub.dev.waiting import wait_until

PAT = "ghp_runner_tests"


@contextlib.asynccontextmanager
async def run_sim(config: SimConfig) -> AsyncIterator[str]:
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, "127.0.0.1", 0, ready=ready.set_result))
    waiters: set[asyncio.Future[Any]] = {task, ready}
    await asyncio.wait(waiters, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert ready.done(), "the simulator did not start"
    try:
        yield f"http://127.0.0.1:{ready.result()}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Runner:
    name: str
    encoded: str
    process: asyncio.subprocess.Process

    async def finish(self, within: float = 20) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.process.communicate(), within)
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()


@dataclass
class Sim:
    url: str
    api: httpx.AsyncClient
    spawned: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def create_jobs(self, repository: str, **spec: Any) -> list[int]:
        body = {"repository": repository, "labels": ["self-hosted"], "duration_s": 0, **spec}
        response = await self.api.post("/_sim/jobs", json=body)
        assert response.status_code == 201, response.text
        return [job["id"] for job in response.json()["jobs"]]

    async def fate(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = (await self.api.get(f"/_sim/jobs/{job_id}")).json()
        return result

    async def jit(self, repository: str, name: str) -> tuple[int, str]:
        response = await self.api.post(
            f"/repos/{repository}/actions/runners/generate-jitconfig",
            json={"name": name, "runner_group_id": 1, "labels": ["self-hosted", "linux"]},
        )
        assert response.status_code == 201, response.text
        return response.json()["runner"]["id"], response.json()["encoded_jit_config"]

    async def runner_record(self, runner_id: int) -> dict[str, Any]:
        runners = (await self.api.get("/_sim/runners")).json()["runners"]
        [record] = [r for r in runners if r["id"] == runner_id]
        result: dict[str, Any] = record
        return result

    async def spawn(
        self, encoded: str, *args: str, via_env: bool = True
    ) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if k != ENV_JITCONFIG}
        if via_env:
            env[ENV_JITCONFIG] = encoded
        else:
            args = ("--jitconfig", encoded, *args)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "runnerhub.dev.sim.runner",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.spawned.append(process)
        return process

    async def start_runner(
        self, repository: str, name: str, *args: str, via_env: bool = True
    ) -> tuple[int, Runner]:
        runner_id, encoded = await self.jit(repository, name)
        process = await self.spawn(encoded, *args, via_env=via_env)
        return runner_id, Runner(name, encoded, process)


@contextlib.asynccontextmanager
async def sim_world(**overrides: Any) -> AsyncIterator[Sim]:
    config = SimConfig(organizations=["acme"], pats=[PAT], **overrides)
    async with (
        run_sim(config) as url,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"token {PAT}"}) as api,
    ):
        sim = Sim(url, api)
        try:
            yield sim
        finally:
            for process in sim.spawned:
                if process.returncode is None:
                    process.kill()
                    await process.wait()


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Sim]:
    # Shared by the module; each test works in its own repository, so they do not meet.
    async with sim_world() as shared:
        yield shared


def assert_no_secrets(runner: Runner, *outputs: str) -> None:
    token = json.loads(base64.b64decode(runner.encoded))["runner_token"]
    for output in outputs:
        assert token not in output and runner.encoded not in output


async def test_takes_exactly_one_job_then_exits(sim: Sim) -> None:
    repo = "acme/one-job"
    jobs = await sim.create_jobs(repo, count=3, duration_s=0.2, conclusion="failure")
    runner_id, runner = await sim.start_runner(repo, "solo")
    code, out, err = await runner.finish()

    assert code == 0, err
    oldest = jobs[0]
    assert out.splitlines() == [
        "runner solo: registered, listening for jobs",
        f"runner solo: took job {oldest}",
        f"runner solo: completed job {oldest} (failure)",
    ]
    fate = await sim.fate(oldest)
    assert (fate["status"], fate["conclusion"], fate["executions"]) == (
        "completed",
        "failure",
        ["solo"],
    )
    assert [(await sim.fate(j))["status"] for j in jobs[1:]] == ["queued", "queued"]
    assert (await sim.runner_record(runner_id))["deleted"] is True
    assert_no_secrets(runner, out, err)


async def test_many_runners_run_every_job_exactly_once(sim: Sim) -> None:
    repo = "acme/fleet"
    jobs = await sim.create_jobs(repo, count=6, duration_s=0.2)
    jobs += await sim.create_jobs(repo, count=6, duration_s=0.1, conclusion="failure")
    runners = [
        (await sim.start_runner(repo, f"fleet-{n}", via_env=n % 2 == 0))[1] for n in range(12)
    ]
    results = await asyncio.gather(*(r.finish(within=30) for r in runners))
    assert [code for code, _, _ in results] == [0] * 12, results

    fates = [await sim.fate(job_id) for job_id in jobs]
    assert all(f["status"] == "completed" for f in fates)
    assert all(len(f["executions"]) == 1 for f in fates)
    assert sorted(f["executions"][0] for f in fates) == sorted(r.name for r in runners)
    assert [f["conclusion"] for f in fates] == ["success"] * 6 + ["failure"] * 6


async def test_idle_timeout_exits_zero(sim: Sim) -> None:
    _, runner = await sim.start_runner("acme/idle", "idle", "--idle-timeout", "0.3")
    code, out, _ = await runner.finish()
    assert code == 0
    assert out.splitlines()[-1] == "runner idle: idle timeout, exiting"


async def test_sigterm_while_idle_exits_within_a_second(sim: Sim) -> None:
    runner_id, runner = await sim.start_runner("acme/term-idle", "term-idle")

    async def polling() -> bool:
        return bool((await sim.runner_record(runner_id))["polling"])

    await wait_until(polling, what="the runner's long poll")
    runner.process.send_signal(signal.SIGTERM)
    code, out, err = await runner.finish(within=1.0)
    assert code == 0, err
    assert out.splitlines()[-1] == "runner term-idle: stopped while idle"


async def test_sigterm_while_running_reports_the_job_cancelled(sim: Sim) -> None:
    repo = "acme/term-busy"
    [job_id] = await sim.create_jobs(repo, duration_s=30)
    _, runner = await sim.start_runner(repo, "term-busy")

    async def started() -> bool:
        return bool((await sim.fate(job_id))["status"] == "in_progress")

    await wait_until(started, what="the job to start")
    runner.process.send_signal(signal.SIGTERM)
    code, out, err = await runner.finish(within=3)
    assert code == 0, err
    assert f"runner term-busy: completed job {job_id} (cancelled)" in out
    fate = await sim.fate(job_id)
    assert (fate["conclusion"], fate["executions"]) == ("cancelled", ["term-busy"])


async def test_a_job_cancelled_on_github_stops_the_runner(sim: Sim) -> None:
    repo = "acme/cancel"
    [job_id] = await sim.create_jobs(repo, duration_s=30)
    runner_id, runner = await sim.start_runner(repo, "cancel-me")

    async def started() -> bool:
        return bool((await sim.fate(job_id))["status"] == "in_progress")

    await wait_until(started, what="the job to start")
    assert (await sim.api.post(f"/_sim/jobs/{job_id}/cancel")).status_code == 200
    code, out, _ = await runner.finish(within=5)
    assert code == 0
    assert f"runner cancel-me: job {job_id} was cancelled" in out
    assert (await sim.runner_record(runner_id))["deleted"] is True


async def test_deleted_registration_exits_3(sim: Sim) -> None:
    repo = "acme/deleted"
    runner_id, encoded = await sim.jit(repo, "gone-before")
    deleted = await sim.api.delete(f"/repos/{repo}/actions/runners/{runner_id}")
    assert deleted.status_code == 204
    code, _, err = await Runner("gone-before", encoded, await sim.spawn(encoded)).finish()
    assert code == 3
    assert err.strip() == "runner-sim: the runner registration was deleted (HTTP 410)"

    runner_id, runner = await sim.start_runner(repo, "gone-while-idle")

    async def polling() -> bool:
        return bool((await sim.runner_record(runner_id))["polling"])

    await wait_until(polling, what="the runner's long poll")
    assert (await sim.api.delete(f"/repos/{repo}/actions/runners/{runner_id}")).status_code == 204
    code, _, err = await runner.finish(within=3)
    assert code == 3, err
    assert_no_secrets(runner, err)


async def test_bad_or_missing_config_exits_2(sim: Sim) -> None:
    for encoded, via_env in (("definitely not base64!", True), ("", True), ("e30=", False)):
        process = await sim.spawn(encoded, via_env=via_env)
        code, _, err = await Runner("bad", encoded, process).finish()
        assert code == 2
        assert err.startswith("runner-sim: invalid JIT config:")
        assert len(err.strip().splitlines()) == 1


async def test_sim_url_override(sim: Sim) -> None:
    repo = "acme/override"
    [job_id] = await sim.create_jobs(repo)
    _, encoded = await sim.jit(repo, "override")
    config = json.loads(base64.b64decode(encoded))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        config["sim_url"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
    wrong = base64.b64encode(json.dumps(config).encode()).decode()
    process = await sim.spawn(wrong, "--sim-url", sim.url)
    code, _, err = await Runner("override", wrong, process).finish()
    assert code == 0, err
    assert (await sim.fate(job_id))["executions"] == ["override"]


async def test_heartbeats_keep_a_long_job_alive_and_a_killed_runner_fails_its_job() -> None:
    async with sim_world(runner_heartbeat_timeout_s=1.5) as sim:
        repo = "acme/heartbeat"
        [alive_job] = await sim.create_jobs(repo, duration_s=3.0)
        _, alive = await sim.start_runner(repo, "alive")

        async def started(job_id: int) -> bool:
            return bool((await sim.fate(job_id))["status"] == "in_progress")

        await wait_until(lambda: started(alive_job), what="the long job to start")
        [lost_job] = await sim.create_jobs(repo, duration_s=30)
        _, lost = await sim.start_runner(repo, "lost")
        await wait_until(lambda: started(lost_job), what="the second job to start")
        lost.process.kill()

        async def completed(job_id: int) -> dict[str, Any] | None:
            fate = await sim.fate(job_id)
            return fate if fate["status"] == "completed" else None

        lost_fate = await wait_until(lambda: completed(lost_job), what="the lost job to fail")
        assert (lost_fate["conclusion"], lost_fate["executions"]) == ("failure", ["lost"])
        code, _, err = await alive.finish(within=10)
        assert code == 0, err
        alive_fate = await sim.fate(alive_job)
        assert (alive_fate["conclusion"], alive_fate["executions"]) == ("success", ["alive"])
