"""The `process` backend: each runner is a local process (on a real host, the Actions
runner's `./run.sh`, which reads --jitconfig from ACTIONS_RUNNER_INPUT_JITCONFIG).

What it starts is recorded on disk, one JSON file per runner with the pid and the process's
start time, so a node that restarts (or another node on the same host) finds and adopts its
runners; the start time guards against a recycled pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from runnerhub.backends.base import BackendError, BackendRunner, RunnerSpec
from runnerhub.config import ProcessBackendSettings

log = structlog.get_logger("runnerhub.backends.process")

JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone/a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: exited, waiting to be reaped
        return None
    return int(fields[19])  # field 22 of stat(5), counted after "pid (comm)"


@dataclass
class _Record:
    name: str
    pool: str
    pid: int
    start_ticks: int
    started_at: str
    log: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def load(cls, path: Path) -> _Record | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


class ProcessBackend:
    kind = "process"

    def __init__(self, state_dir: Path, pools: Mapping[str, ProcessBackendSettings]) -> None:
        self._dir = state_dir / "runners"
        self._logs = state_dir / "logs"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        self._pools = dict(pools)
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # started by this process

    def _path(self, name: str) -> Path:
        return self._dir / f"{name}.json"

    def _alive(self, rec: _Record) -> tuple[bool, int | None]:
        child = self._children.get(rec.name)
        if child is not None and child.pid == rec.pid:
            code = child.poll()  # also reaps it
            return code is None, code
        return _start_ticks(rec.pid) == rec.start_ticks, None

    async def provision(self, spec: RunnerSpec) -> str:
        rec = _Record.load(self._path(spec.name))
        if rec is not None and self._alive(rec)[0]:
            return str(rec.pid)  # already running: adopt, never start a second
        settings = self._pools.get(spec.pool)
        if settings is None:
            raise BackendError(f"pool {spec.pool!r} has no process backend settings")
        return await asyncio.to_thread(self._spawn, spec, settings)

    def _spawn(self, spec: RunnerSpec, settings: ProcessBackendSettings) -> str:
        argv = [
            a.replace("{jitconfig}", spec.jit_config).replace("{name}", spec.name)
            for a in settings.command
        ]
        env = {
            **os.environ,
            **settings.env,
            JIT_ENV: spec.jit_config,
            "RUNNERHUB_RUNNER_NAME": spec.name,
        }
        log_path = self._logs / f"{spec.name}.log"
        try:
            with log_path.open("ab") as out:
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise BackendError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
        ticks = _start_ticks(child.pid)
        rec = _Record(
            spec.name,
            spec.pool,
            child.pid,
            ticks if ticks is not None else -1,
            datetime.now(UTC).isoformat(),
            str(log_path),
        )
        tmp = self._path(spec.name).with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(rec.to_json())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self._path(spec.name))
        self._children[spec.name] = child
        log.info("runner process started", runner=spec.name, pid=child.pid, pool=spec.pool)
        return str(child.pid)

    async def list(self) -> list[BackendRunner]:
        found = []
        for path in sorted(self._dir.glob("*.json")):
            rec = _Record.load(path)
            if rec is None:
                continue
            alive, code = self._alive(rec)
            found.append(
                BackendRunner(
                    rec.name,
                    rec.pool,
                    str(rec.pid),
                    alive,
                    datetime.fromisoformat(rec.started_at),
                    code,
                )
            )
        return found

    async def terminate(self, name: str, grace_s: float | None = None) -> None:
        rec = _Record.load(self._path(name))
        if rec is not None and self._alive(rec)[0]:
            settings = self._pools.get(rec.pool)
            grace = (
                grace_s if grace_s is not None else (settings.stop_grace_s if settings else 10.0)
            )
            await self._stop(rec, grace)
        await self.forget(name)

    async def _stop(self, rec: _Record, grace_s: float) -> None:
        self._signal(rec, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self._alive(rec)[0]:
            if time.monotonic() > deadline:
                self._signal(rec, signal.SIGKILL)
                deadline = time.monotonic() + 5
            await asyncio.sleep(0.05)
        log.info("runner process stopped", runner=rec.name, pid=rec.pid)

    def _signal(self, rec: _Record, sig: signal.Signals) -> None:
        try:
            # We started each runner as the leader of its own session: signal the whole group
            # (the runner and what it started), but never a group it does not lead.
            if os.getpgid(rec.pid) == rec.pid:
                os.killpg(rec.pid, sig)
            else:
                os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise BackendError(f"not allowed to signal runner {rec.name} (pid {rec.pid})") from exc

    async def forget(self, name: str) -> None:
        child = self._children.pop(name, None)
        if child is not None:
            child.poll()
        self._path(name).unlink(missing_ok=True)
