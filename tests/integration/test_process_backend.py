"""The process backend with real processes: JIT config kept out of argv, idempotent
provisioning, adoption by a restarted node, pid-reuse guard, graceful then forced stop."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from runnerhub.backends.base import BackendError, RunnerSpec
from runnerhub.backends.process import ProcessBackend, running_runner_pids
from runnerhub.config import ProcessBackendSettings
from runnerhub.dev.waiting import wait_until

JIT = "eyJzZWNyZXQiOiAidG9wIHNlY3JldCBqaXQifQ=="

# Writes what it was given to a file, then waits to be stopped (or exits at once with "exit").
CHILD = """
import json, os, sys, signal
out = sys.argv[1]
if len(sys.argv) > 2 and sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(out + ".tmp", "w") as f:  # then renamed: the test reads it once it exists
    json.dump({"jit": os.environ.get("ACTIONS_RUNNER_INPUT_JITCONFIG"),
               "name": os.environ.get("RUNNERHUB_RUNNER_NAME"), "argv": sys.argv}, f)
os.replace(out + ".tmp", out)
if len(sys.argv) > 2 and sys.argv[2] == "exit":
    sys.exit(3)
while True:
    signal.pause()  # idle like a runner waiting for work, until a signal ends it
"""


def backend(tmp_path: Path, *extra: str, grace: float = 5.0) -> ProcessBackend:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(tmp_path / "{name}.out"), *extra]
    settings = ProcessBackendSettings(command=cmd, stop_grace_s=grace)
    return ProcessBackend(tmp_path / "state", {"linux": settings})


def spec(name: str = "rh-1-1") -> RunnerSpec:
    return RunnerSpec(name, "linux", ("self-hosted",), 1, JIT)


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_the_jit_config_reaches_the_runner_in_its_environment_not_its_argv(
    tmp_path: Path,
) -> None:
    b = backend(tmp_path)
    ref = await b.provision(spec())
    out = tmp_path / "rh-1-1.out"
    await wait_until(out.exists, 10, "the runner to start")
    seen = json.loads(out.read_text())
    assert seen["jit"] == JIT and seen["name"] == "rh-1-1"
    assert JIT not in _cmdline(int(ref))
    assert JIT not in repr(spec())
    await b.terminate("rh-1-1")


async def test_provisioning_twice_keeps_one_process(tmp_path: Path) -> None:
    b = backend(tmp_path)
    first = await b.provision(spec())
    second = await b.provision(spec())
    assert first == second
    assert [r.name for r in await b.list()] == ["rh-1-1"]
    await b.terminate("rh-1-1")
    assert await b.list() == []


async def test_a_restarted_node_adopts_and_can_stop_its_runners(tmp_path: Path) -> None:
    first = backend(tmp_path)
    ref = await first.provision(spec())
    restarted = backend(tmp_path)  # knows nothing but the files on disk
    listed = await restarted.list()
    assert [(r.name, r.ref, r.alive) for r in listed] == [("rh-1-1", ref, True)]
    assert await restarted.provision(spec()) == ref  # adopted, not started again
    await restarted.terminate("rh-1-1")
    await wait_until(lambda: first._children["rh-1-1"].poll() is not None, 10, "exit")


async def test_an_exited_runner_is_listed_dead_with_its_exit_code(tmp_path: Path) -> None:
    b = backend(tmp_path, "exit")
    await b.provision(spec())

    async def dead() -> bool:
        return not (await b.list())[0].alive

    await wait_until(dead, 10, "the runner to exit")
    assert (await b.list())[0].exit_code == 3
    await b.forget("rh-1-1")
    assert await b.list() == []


async def test_a_recycled_pid_is_not_mistaken_for_the_runner(tmp_path: Path) -> None:
    b = backend(tmp_path)
    await b.provision(spec())
    record = tmp_path / "state" / "runners" / "rh-1-1.json"
    original = record.read_text()
    data = json.loads(original)
    data["pid"] = os.getpid()  # alive, but started at another time
    record.write_text(json.dumps(data))
    try:
        other = backend(tmp_path)
        assert [r.alive for r in await other.list()] == [False]
        await other.terminate("rh-1-1")  # must not signal the recycled pid
    finally:
        record.write_text(original)
    await b.terminate("rh-1-1")


async def test_a_runner_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    b = backend(tmp_path, "ignore-term", grace=0.3)
    ref = int(await b.provision(spec()))
    await wait_until((tmp_path / "rh-1-1.out").exists, 10, "the runner to start")
    await b.terminate("rh-1-1")
    await wait_until(
        lambda: (
            not Path(f"/proc/{ref}").exists()
            or "Z" in Path(f"/proc/{ref}/stat").read_text().split()[2]
        ),
        10,
        "death",
    )


async def test_a_missing_command_is_a_clear_backend_error(tmp_path: Path) -> None:
    from runnerhub.backends.base import BackendError

    settings = ProcessBackendSettings(command=["/nonexistent/run.sh"])
    b = ProcessBackend(tmp_path / "state", {"linux": settings})
    with pytest.raises(BackendError, match=r"cannot start '/nonexistent/run\.sh'"):
        await b.provision(spec())


async def test_a_start_frozen_before_its_process_leaves_the_name_spent_for_a_successor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader frozen between claiming a runner's name and starting its process (stood in
    for by holding its Popen): the successor on the same runner directory sees the name
    taken by a runner that is not known to run, and starts no second one under it; when the
    frozen start goes on, its runner is recorded and the successor adopts it."""
    frozen = backend(tmp_path)
    successor = backend(tmp_path)
    held, go = threading.Event(), threading.Event()
    popen = subprocess.Popen

    def freezes(*args: Any, **kw: Any) -> subprocess.Popen[bytes]:
        held.set()
        go.wait(30)
        return popen(*args, **kw)

    monkeypatch.setattr(subprocess, "Popen", freezes)
    starting = asyncio.ensure_future(frozen.provision(spec()))
    await wait_until(held.is_set, 10, "the first start to claim the name")
    [claimed] = await successor.list()
    assert (claimed.name, claimed.alive, claimed.exit_code) == ("rh-1-1", False, None)
    # What a cluster's stop signals: never the claim's pid 0 (killpg(0) is our own group).
    assert running_runner_pids(tmp_path / "state") == []
    with pytest.raises(BackendError, match="claimed by an earlier start; its name is spent"):
        await successor.provision(spec())
    go.set()
    ref = await starting
    monkeypatch.setattr(subprocess, "Popen", popen)
    assert [(r.name, r.ref, r.alive) for r in await successor.list()] == [("rh-1-1", ref, True)]
    assert await successor.provision(spec()) == ref  # adopted
    assert running_runner_pids(tmp_path / "state") == [int(ref)]
    await successor.terminate("rh-1-1")
    assert await successor.list() == []
