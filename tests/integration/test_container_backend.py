"""The container backend on a real engine: Podman's Docker-compatible API service with its
own storage and socket (the runc runtime), and the runner image made from Debian's packages
(`make runner-image`, imported with `podman import`). A node runs GitHub's jobs in
containers, each once; the JIT config is only in the container's environment; the pool's
limits are the container's; a runner that runs is adopted by another backend (a new leader)
instead of started twice; an exited one is replaced; an engine that does not answer is a
clear error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runnerhub.backends.base import BackendError, RunnerSpec
from runnerhub.backends.container import JIT_ENV, RUNNER_LABEL, ContainerBackend
from runnerhub.config import ContainerBackendSettings
from runnerhub.dev.cluster.podman import RUNNER_IMAGE, RUNNER_SCRIPT, LocalPodman
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.workload import query
from runnerhub.dev.waiting import wait_until
from tests.checks import assert_each_ran_once
from tests.github_process import LINUX, github_sim, node_config, start_node

RUNNER = ["python3", RUNNER_SCRIPT, "--idle-timeout", "60"]


def pool(engine: LocalPodman, **kw: object) -> ContainerBackendSettings:
    settings: dict[str, object] = {"image": RUNNER_IMAGE, "network": "host", **kw}
    return ContainerBackendSettings(endpoint=engine.endpoint, **settings)  # type: ignore[arg-type]


def container_pool(settings: ContainerBackendSettings, max_runners: int) -> dict[str, object]:
    """A node's pool `linux` whose runners are containers with `settings`."""
    return {
        "name": "linux",
        "labels": LINUX,
        "max_runners": max_runners,
        "backend": "container",
        "container": settings.model_dump(mode="json"),
    }


def inspect(engine: LocalPodman, name: str) -> dict[str, object]:
    return dict(json.loads(engine.podman("container", "inspect", name))[0])


def ours(engine: LocalPodman) -> list[str]:
    out = engine.podman(
        "ps", "--all", "--filter", f"label={RUNNER_LABEL}", "--format", "{{.Names}}"
    )
    return out.split()


@pytest.fixture
async def backend(podman: LocalPodman) -> AsyncIterator[ContainerBackend]:
    b = ContainerBackend({"linux": pool(podman, command=["sleep", "300"], stop_timeout_s=1)})
    yield b
    for r in await b.list():
        await b.terminate(r.name)
    await b.close()


async def test_a_node_runs_each_job_once_in_a_container_of_its_own(
    podman: LocalPodman, dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    with github_sim(tmp_path / "github", f"http://127.0.0.1:{port}/webhooks/github") as gh:
        config = node_config("node-c", dsn, gh, tmp_path, port=port)
        settings = pool(
            podman, command=RUNNER, cpus=0.5, memory_mb=256, pids_limit=128, read_only=True
        )
        config["pools"] = [container_pool(settings, 4)]
        node = start_node(config, tmp_path / "node.yaml")
        try:
            ids = gh.enqueue(LINUX, 3)

            def completed() -> bool:
                jobs = gh.jobs()
                return all(jobs[i]["status"] == "completed" for i in ids)

            started: dict[str, dict[str, object]] = {}

            def seen() -> bool:  # each runner's container, while it is there
                for name in ours(podman):
                    if name not in started:
                        started[name] = inspect(podman, name)
                return completed()

            await wait_until(lambda: asyncio.to_thread(seen), 90, "the jobs to complete")
            jobs = gh.jobs()
            assert all(len(jobs[i]["executions"]) == 1 for i in ids), jobs
            assert len(started) >= 1
            for name, c in started.items():
                config_ = c["Config"]
                host = c["HostConfig"]
                assert isinstance(config_, dict) and isinstance(host, dict)
                env = config_["Env"]
                assert any(e.startswith(f"{JIT_ENV}=") for e in env), name
                assert not any(JIT_ENV in a or len(a) > 200 for a in config_["Cmd"]), name
                assert all(len(v) < 200 for v in config_["Labels"].values()), name
                assert config_["Labels"][RUNNER_LABEL] == name
                assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 << 20
                assert host["PidsLimit"] == 128 and host["ReadonlyRootfs"] is True
            # Exited containers are removed once recorded (the janitor forgets them).
            await wait_until(lambda: asyncio.to_thread(lambda: not ours(podman)), 60, "cleanup")
        finally:
            node.stop()


def spec(name: str, job: int) -> RunnerSpec:
    return RunnerSpec(name, "linux", tuple(LINUX), job, "not-a-real-jit-config", 1, 7)


async def test_a_running_runner_is_adopted_by_another_backend_not_started_twice(
    podman: LocalPodman, backend: ContainerBackend
) -> None:
    first = await backend.provision(spec("rh-901-1", 901))
    # A new leader's backend (another node, a restarted one): it sees the runner...
    successor = ContainerBackend(backend._pools)
    try:
        [running] = [r for r in await successor.list() if r.name == "rh-901-1"]
        assert running.alive and running.pool == "linux" and running.ref == first
        # ...and provisioning it again adopts it: the same container, not a second one.
        assert await successor.provision(spec("rh-901-1", 901)) == first
        assert ours(podman) == ["rh-901-1"]
        labels = inspect(podman, "rh-901-1")["Config"]["Labels"]  # type: ignore[index]
        assert labels["io.runnerhub.job"] == "901" and labels["io.runnerhub.epoch"] == "7"
        # Stopped and forgotten: gone; a name the backend does not know is fine.
        await successor.terminate("rh-901-1")
        assert ours(podman) == []
        await successor.terminate("rh-404-1")
    finally:
        await successor.close()


async def test_an_exited_runner_is_replaced_and_its_exit_code_reported(
    podman: LocalPodman, tmp_path: Path
) -> None:
    b = ContainerBackend({"linux": pool(podman, command=["sh", "-c", "exit 3"])})
    try:
        first = await b.provision(spec("rh-902-1", 902))

        async def exited() -> bool:
            return any(r.name == "rh-902-1" and not r.alive for r in await b.list())

        await wait_until(exited, 30, "the runner to exit")
        [gone] = [r for r in await b.list() if r.name == "rh-902-1"]
        assert gone.exit_code == 3
        second = await b.provision(spec("rh-902-1", 902))  # it ran: a new one
        assert second != first and ours(podman) == ["rh-902-1"]
        await b.forget("rh-902-1")
        assert ours(podman) == []
    finally:
        await b.close()


async def test_an_engine_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    gone = ContainerBackendSettings(image=RUNNER_IMAGE, endpoint=f"unix://{tmp_path}/none.sock")
    b = ContainerBackend({"linux": gone})
    try:
        with pytest.raises(
            BackendError, match=r"can take rh-903-1: .*none\.sock .* did not answer"
        ):
            await b.provision(spec("rh-903-1", 903))
        assert await b.list() == []  # nothing seen there: its runners may run, unseen
        assert b.unreachable(f"0123456789ab@unix://{tmp_path}/none.sock")
    finally:
        await b.close()
    with pytest.raises(BackendError, match="has no container backend settings"):
        await b.provision(RunnerSpec("rh-904-1", "gpu", ("gpu",), 904, "x"))


PROBE = """
import json, os
print(json.dumps({
    "env": sorted(os.environ),
    "engine_socket": os.path.exists("/var/run/docker.sock"),
    "paths": {p: os.path.exists(p) for p in %r},
    "uid": os.getuid(),
}))
"""


async def exited_output(b: ContainerBackend, engine: LocalPodman, name: str) -> str:
    async def done() -> bool:
        return any(r.name == name and not r.alive for r in await b.list())

    await wait_until(done, 30, f"{name} to exit")
    return engine.podman("logs", name)


async def test_a_job_in_a_container_sees_none_of_runnerhubs_secrets_nor_the_engine(
    podman: LocalPodman, tmp_path: Path
) -> None:
    """What a workflow job could look for, from inside its container: RunnerHub's
    environment, its configuration and state, the engine's socket. None is there; the
    engine socket only when a pool asks for it."""
    secret_paths = [str(tmp_path), str(podman.socket), str(podman.base_dir), "/etc/runnerhub"]
    probe = ["python3", "-c", PROBE % secret_paths]
    b = ContainerBackend(
        {
            "linux": pool(podman, command=probe),
            "builds": pool(podman, command=probe, engine_socket=True),
        }
    )
    try:
        await b.provision(spec("rh-905-1", 905))
        seen = json.loads(await exited_output(b, podman, "rh-905-1"))
        # The engine's own (PATH, HOSTNAME, HOME, container, TERM), Python's locale coercion
        # (LC_CTYPE), the runner's name and its JIT config: nothing of RunnerHub's.
        own = {"PATH", "HOSTNAME", "HOME", "container", "TERM", "LC_CTYPE"}
        extra = set(seen["env"]) - own
        assert extra == {JIT_ENV, "RUNNERHUB_RUNNER_NAME"}, seen["env"]
        assert seen["engine_socket"] is False and not any(seen["paths"].values()), seen
        assert seen["uid"] == 65534  # the image's unprivileged user
        builds = RunnerSpec("rh-906-1", "builds", ("builds",), 906, "jit", 1, None)
        await b.provision(builds)
        assert json.loads(await exited_output(b, podman, "rh-906-1"))["engine_socket"] is True
    finally:
        for name in ("rh-905-1", "rh-906-1"):
            await b.terminate(name)
        await b.close()


async def test_an_image_that_does_not_exist_is_a_clear_error_and_starts_nothing(
    podman: LocalPodman,
) -> None:
    b = ContainerBackend({"linux": pool(podman, image="localhost/no-such-runner:1")})
    try:
        with pytest.raises(BackendError, match="no-such-runner") as failed:
            await b.provision(spec("rh-907-1", 907))
        assert "rh-907-1" in str(failed.value) and ours(podman) == []
    finally:
        await b.close()


@pytest.fixture(scope="module")
def second_host(
    podman: LocalPodman, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalPodman]:
    """A second runner host: another Podman API service, storage of its own, same image."""
    engine = LocalPodman(tmp_path_factory.mktemp("podman-b") / "engine")
    engine.start()
    try:
        engine.podman("image", "load", "--input", str(saved_image(podman)))
        yield engine
    finally:
        engine.destroy()


def saved_image(engine: LocalPodman) -> Path:
    out = engine.base_dir / "runner-image.tar"
    if not out.exists():
        engine.podman("image", "save", "--output", str(out), RUNNER_IMAGE)
    return out


async def test_runners_go_where_there_is_room_and_a_silent_host_is_left_alone(
    podman: LocalPodman, second_host: LocalPodman
) -> None:
    """Two runner hosts (2 and 3 runners): each runner goes to the one with the most room,
    none past them. Host B's engine is killed (its containers run on): its runners are
    unreachable, not gone; none of them is started elsewhere, new ones go to A; when B
    answers again its runners are seen again, each the same container."""
    a, b_ = podman, second_host
    s = pool(
        a,
        command=["sleep", "300"],
        stop_timeout_s=1,
        hosts=[
            {"endpoint": a.endpoint, "max_runners": 2},
            {"endpoint": b_.endpoint, "max_runners": 3},
        ],
    )
    backend = ContainerBackend({"linux": s}, failure_threshold=1, open_s=1)
    try:
        refs = {
            f"rh-91{i}-1": await backend.provision(spec(f"rh-91{i}-1", 910 + i)) for i in range(5)
        }
        on_a, on_b = ours(a), ours(b_)
        assert len(on_a) == 2 and len(on_b) == 3, (on_a, on_b)
        with pytest.raises(BackendError, match="every one is full"):
            await backend.provision(spec("rh-920-1", 920))
        ids_b = {n: inspect(b_, n)["Id"] for n in on_b}

        b_.kill()  # host B's engine stops answering; its containers run on
        listed = {r.name for r in await backend.list()}
        assert listed == set(on_a)
        assert all(backend.unreachable(refs[n]) for n in on_b)
        assert not any(backend.unreachable(refs[n]) for n in on_a)
        with pytest.raises(BackendError, match="may run there"):
            await backend.provision(spec(on_b[0], 0))
        await backend.terminate(on_a[0])
        moved = await backend.provision(spec("rh-921-1", 921))
        assert moved.endswith(f"@{a.endpoint}")

        b_.start()  # it answers again: the same containers, none started twice

        async def seen_again() -> bool:
            return set(on_b) <= {r.name for r in await backend.list()}

        await wait_until(seen_again, 30, "host B's runners seen again")
        assert {n: inspect(b_, n)["Id"] for n in on_b} == ids_b
        assert not any(backend.unreachable(refs[n]) for n in on_b)
    finally:
        for r in await backend.list():
            await backend.terminate(r.name)
        await backend.close()


async def test_a_runner_host_killed_mid_load_loses_no_job_and_runs_none_twice(
    podman: LocalPodman, second_host: LocalPodman, dsn: str, tmp_path: Path
) -> None:
    """A node's pool on two runner hosts. With jobs running on both, host B's engine is
    killed: the jobs queued from then on get runners on host A, while the ones running on
    B are left alone (unseen, not marked gone, not started again). B answers again before
    they end: they are seen again and not stopped as strays; their exited containers are
    removed. Every job ran exactly once, and succeeded."""
    a, b_ = podman, second_host
    port = free_port()
    with github_sim(tmp_path / "github", f"http://127.0.0.1:{port}/webhooks/github") as gh:
        config = node_config("node-hosts", dsn, gh, tmp_path, port=port)
        settings = pool(
            a,
            command=RUNNER,
            stop_timeout_s=1,
            # Room for 3 each: the first 4 jobs land on both (2 and 2), and A has room
            # for one more when B goes silent.
            hosts=[
                {"endpoint": a.endpoint, "max_runners": 3},
                {"endpoint": b_.endpoint, "max_runners": 3},
            ],
        )
        config["pools"] = [container_pool(settings, 10)]
        config["circuit_breaker"] = {"failure_threshold": 1, "open_s": 2}
        node = start_node(config, tmp_path / "node.yaml")
        try:
            first = gh.call(
                "POST",
                "/_sim/jobs",
                json={"repository": "acme/web", "labels": LINUX, "count": 4, "duration_s": 6},
            )["jobs"]
            ids = [j["id"] for j in first]

            def running_on_both() -> bool:
                jobs = gh.jobs()
                busy = sum(jobs[i]["status"] == "in_progress" for i in ids)
                return busy == 4 and bool(ours(a)) and bool(ours(b_))

            await wait_until(lambda: asyncio.to_thread(running_on_both), 60, "jobs on both")
            b_.kill()
            later = gh.enqueue(LINUX, 3)

            def later_running() -> bool:
                jobs = gh.jobs()
                return any(jobs[i]["status"] != "queued" for i in later)

            await wait_until(lambda: asyncio.to_thread(later_running), 60, "a runner on host A")
            assert any(gh.jobs()[i]["status"] == "in_progress" for i in ids)  # B's still run
            b_.start()

            def completed() -> bool:
                jobs = gh.jobs()
                return all(jobs[i]["status"] == "completed" for i in ids + later)

            await wait_until(lambda: asyncio.to_thread(completed), 90, "every job to complete")
            assert_each_ran_once(gh.url, dsn, ids + later)
            await wait_until(
                lambda: asyncio.to_thread(lambda: not ours(a) and not ours(b_)),
                60,
                "every exited container removed, on both hosts",
            )
        finally:
            node.stop()


async def test_a_pool_whose_image_is_missing_backs_off_says_why_and_recovers(
    podman: LocalPodman, dsn: str, tmp_path: Path
) -> None:
    """A pool names an image the engine does not have: the job's runner is not started,
    its record says why, and it is tried again after a growing delay, not in a loop;
    once the image is there, the job runs, once."""
    missing = "localhost/runnerhub-runner:not-yet"
    port = free_port()
    with github_sim(tmp_path / "github", f"http://127.0.0.1:{port}/webhooks/github") as gh:
        config = node_config("node-image", dsn, gh, tmp_path, port=port)
        config["pools"] = [container_pool(pool(podman, image=missing, command=RUNNER), 2)]
        config["scheduler"] = {"tick_s": 1, "retry_base_s": 0.3, "retry_max_s": 2}
        config["circuit_breaker"] = {"failure_threshold": 3, "open_s": 1}
        node = start_node(config, tmp_path / "node.yaml")
        try:
            [job] = gh.enqueue(LINUX, 1)

            def failing() -> dict[str, object] | None:
                rows = query(dsn, "SELECT attempts, last_error FROM runners WHERE job_id = %s", job)
                return rows[0] if rows and rows[0]["attempts"] >= 3 else None

            row = await wait_until(lambda: asyncio.to_thread(failing), 30, "attempts to fail")
            assert "not-yet" in str(row["last_error"]) and "image" in str(row["last_error"])
            began, first = time.monotonic(), int(str(row["attempts"]))

            def two_more() -> bool:
                rows = query(dsn, "SELECT attempts FROM runners WHERE job_id = %s", job)
                return int(rows[0]["attempts"]) >= first + 2

            await wait_until(lambda: asyncio.to_thread(two_more), 30, "two more attempts")
            # Backed off: two more tries took seconds (a loop would take milliseconds).
            assert time.monotonic() - began >= 1.5
            assert ours(podman) == [] and gh.jobs()[job]["status"] == "queued"

            podman.podman("tag", RUNNER_IMAGE, missing)  # the image arrives
            try:
                await wait_until(
                    lambda: asyncio.to_thread(lambda: gh.jobs()[job]["status"] == "completed"),
                    60,
                    "the job to run once the image is there",
                )
                assert len(gh.jobs()[job]["executions"]) == 1
            finally:
                podman.podman("rmi", missing)  # the tag only: the image keeps its own
        finally:
            node.stop()
