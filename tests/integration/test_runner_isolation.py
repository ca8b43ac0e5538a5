"""A runner that runs as its pool's user gets none of RunnerHub's secrets (issue: every
runner used to inherit RunnerHub's whole environment).

The job's workload (`tests/probe_secrets.py`) tries each way in: its environment, the
configuration file, the GitHub App key, `cluster.json`, RunnerHub's state and runner
records, RunnerHub's own process, and PostgreSQL through what it knows of the DSN. The
secrets sit where an operator keeps them (files readable by RunnerHub's user only, in
directories anyone may enter), so only their own protection keeps the runner out; controls
show each probe works when it is let in."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerhub.backends.base import RunnerSpec
from runnerhub.backends.process import ProcessBackend
from runnerhub.config import ProcessBackendSettings
from runnerhub.dev.cluster.runners import RUNNER_USER, ensure_user
from runnerhub.dev.waiting import wait_until
from tests import probe_secrets

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

JIT = "eyJydW5uZXIiOiAiaml0In0="
SECRETS = {
    "RUNNERHUB_GITHUB__AUTH__TOKEN": "ghp_isolation_token_0123456789",
    "RUNNERHUB_WEBHOOK__SECRETS": '["whsec-isolation-0123456789"]',
    "RUNNERHUB_API_TOKENS__0__TOKEN": "adm-isolation-0123456789",
}
KEY = "-----BEGIN PRIVATE KEY-----\nMIIisolationkeymaterial0123456789\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def exposed() -> Iterator[Path]:
    """A directory anyone may enter, as /etc or /var/lib are: only each file's own mode
    keeps a runner out of it."""
    path = Path(tempfile.mkdtemp(prefix="runnerhub-isolation-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def secret_file(path: Path, text: str) -> Path:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    return path


async def test_a_runner_of_its_own_user_gets_none_of_runnerhubs_secrets(
    exposed: Path, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = ensure_user()
    for name, value in {**SECRETS, "RUNNERHUB_DATABASE__DSN": dsn}.items():
        monkeypatch.setenv(name, value)  # this process plays the node: its environment
    password = dsn.split("password=")[1].split()[0]
    conninfo = dsn.replace(f"password={password}", "").strip()
    etc = exposed / "etc"
    files = {
        "config": secret_file(etc / "runnerhub.yaml", f"database:\n  dsn: {dsn}\n"),
        "app_key": secret_file(etc / "app.pem", KEY),
        "cluster_json": secret_file(exposed / "cluster" / "cluster.json", json.dumps({"dsn": dsn})),
    }
    bin_dir = exposed / "bin"
    bin_dir.mkdir(mode=0o755)
    probe = bin_dir / "probe.py"
    shutil.copy(probe_secrets.__file__, probe)
    probe.chmod(0o644)
    work = exposed / "runners"
    work.mkdir(mode=0o755)
    state = exposed / "state"
    where = {
        "files": {k: str(v) for k, v in files.items()},
        "dirs": {"state": str(state / "process"), "records": str(state / "process" / "runners")},
        "writable": {"records": str(state / "process" / "runners")},
        "node_pid": os.getpid(),
        "conninfo": conninfo,
    }
    settings = ProcessBackendSettings(
        command=[
            "/usr/bin/python3",
            str(probe),
            str(work / "{name}" / "report.json"),
            json.dumps(where),
        ],
        env={"PROBE_CONTROL_PGPASSWORD": password},
        user=RUNNER_USER,
        work_dir=work,
    )
    backend = ProcessBackend(state / "process", {"linux": settings})
    await backend.provision(RunnerSpec("rh-7-1", "linux", ("self-hosted",), 7, JIT))
    report_path = work / "rh-7-1" / "report.json"
    await wait_until(report_path.exists, 30, "the workload's report")
    got = json.loads(report_path.read_text())
    await backend.terminate("rh-7-1")

    assert got["uid"] == user.pw_uid != os.geteuid()
    env = got["env"]
    assert env["ACTIONS_RUNNER_INPUT_JITCONFIG"] == JIT  # it reads its own environment...
    assert [k for k in env if k.startswith("RUNNERHUB_")] == ["RUNNERHUB_RUNNER_NAME"]
    for secret in [*SECRETS.values(), password, "BEGIN PRIVATE KEY"]:
        assert not any(secret in v for k, v in env.items() if k != "PROBE_CONTROL_PGPASSWORD")
    # ...but none of RunnerHub's files, state or process.
    for label in ("config", "app_key", "cluster_json", "node_environ"):
        assert got["files"][label] == "refused: Permission denied", label
    assert got["dirs"] == {
        "state": "refused: Permission denied",
        "records": "refused: Permission denied",
    }
    assert got["writable"] == {"records": "refused: Permission denied"}
    # PostgreSQL: nothing the runner has lets it in; the same probe with the password does.
    assert got["db"]["rc"] != 0 and "password" in got["db"]["err"], got["db"]
    assert got["db_control"]["rc"] == 0 and got["db_control"]["out"], got["db_control"]
    # The runner's directory went with it.
    assert not (work / "rh-7-1").exists()


# Says which signals reach it, in the order Python handles them (by number: a SIGTERM sent
# before the SIGWINCH that follows it is always reported first).
STRANGER = """
import signal
def said(n, _):
    print(signal.Signals(n).name, flush=True)
signal.signal(signal.SIGTERM, said)
signal.signal(signal.SIGWINCH, said)
print("ready", flush=True)
while True:
    signal.pause()
"""


def start_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[19])


async def test_the_janitor_never_signals_a_process_it_did_not_start(exposed: Path) -> None:
    user = ensure_user()
    state = exposed / "state"
    backend = ProcessBackend(state / "process", {"linux": ProcessBackendSettings(command=["true"])})
    # Someone else's process, under a pid a record of ours names, with its very start time:
    # only the owner tells them apart (what a recycled pid would look like at worst).
    stranger = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", STRANGER, stdout=asyncio.subprocess.PIPE, user=user.pw_uid
    )
    assert stranger.stdout is not None
    try:
        assert await stranger.stdout.readline() == b"ready\n"
        record = {
            "name": "rh-9-1",
            "pool": "linux",
            "pid": stranger.pid,
            "start_ticks": start_ticks(stranger.pid),
            "started_at": "2026-11-30T00:00:00+00:00",
            "log": str(state / "process" / "logs" / "rh-9-1.log"),
            "uid": os.geteuid(),
        }
        (state / "process" / "runners" / "rh-9-1.json").write_text(json.dumps(record))
        [listed] = await backend.list()
        assert listed.name == "rh-9-1" and not listed.alive
        await backend.terminate("rh-9-1", grace_s=0.2)
        stranger.send_signal(signal.SIGWINCH)
        line = await asyncio.wait_for(stranger.stdout.readline(), 10)
        assert line == b"SIGWINCH\n", "a process RunnerHub did not start was signalled"
        # A record that names a file outside its directory is never followed.
        (state / "process" / "runners" / "..json").write_text(json.dumps({**record, "name": ".."}))
        assert [r.name for r in await backend.list()] == []
    finally:
        stranger.kill()
        await stranger.wait()
