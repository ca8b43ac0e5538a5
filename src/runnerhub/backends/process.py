"""The `process` backend: each runner is a local process (on a real host, the Actions
runner's `./run.sh`, which reads --jitconfig from ACTIONS_RUNNER_INPUT_JITCONFIG).

What it starts is recorded on disk, one JSON file per runner with the pid, the process's
start time and its owner, so a node that restarts (or another node on the same host) finds
and adopts its runners; start time and owner guard against a recycled pid, so nothing is
ever signalled that this backend did not start. The file is created (exclusively) before the
process starts, as a claim on the runner's name: a leader frozen between the two leaves the
claim for its successor to find, which then treats the name as spent rather than start a
second runner under it.

A runner gets an environment built from scratch (`runner_env`), never RunnerHub's own, and
runs as the pool's `user` when one is set. It is not an isolation boundary: a runner shares
the host's kernel, network and whatever that user may read (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from runnerhub.backends.base import BackendError, BackendRunner, RunnerSpec
from runnerhub.config import ProcessBackendSettings
from runnerhub.domain.naming import is_valid_name
from runnerhub.paths import private_dir

log = structlog.get_logger("runnerhub.backends.process")

JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Harmless settings programs expect; nothing else of RunnerHub's environment reaches a runner
# (it holds the database DSN, the GitHub token, the webhook secrets).
PASSED_THROUGH = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")


@dataclass(frozen=True)
class RunAs:
    """The account a pool's runners run as."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str

    @classmethod
    def resolve(cls, user: str | None) -> RunAs:
        """`user` by name or uid; None: this process's own user."""
        try:
            if user is None:
                pw = pwd.getpwuid(os.geteuid())
            else:
                pw = (
                    pwd.getpwuid(int(user))
                    if user.isascii() and user.isdigit()
                    else pwd.getpwnam(user)
                )
        except KeyError:
            raise BackendError(f"no user {user!r} on this host") from None
        groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
        return cls(pw.pw_uid, pw.pw_gid, groups, pw.pw_name, pw.pw_dir)

    @property
    def switches(self) -> bool:
        return self.uid != os.geteuid()


def runner_env(
    settings: ProcessBackendSettings, run_as: RunAs, home: Path | None, name: str, jit_config: str
) -> dict[str, str]:
    """A runner's whole environment: a plain PATH, who it is, the locale, the pool's `env`,
    and the JIT config last (nothing may override it)."""
    base = {
        "PATH": DEFAULT_PATH,
        "HOME": str(home or run_as.home),
        "USER": run_as.name,
        "LOGNAME": run_as.name,
    }
    base.update({k: os.environ[k] for k in PASSED_THROUGH if k in os.environ})
    return {**base, **settings.env, JIT_ENV: jit_config, "RUNNERHUB_RUNNER_NAME": name}


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


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
    # Whom it runs as (records written before this field: RunnerHub's own user).
    uid: int = field(default_factory=os.geteuid)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def load(cls, path: Path) -> _Record | None:
        """The record in `path`, if it is one of ours: a file named after the runner it
        describes, with a real pid (never init's), or 0 for a claim."""
        try:
            rec = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if rec.name != path.stem or not isinstance(rec.pid, int) or rec.pid < 0 or rec.pid == 1:
            return None
        return rec

    @property
    def claim(self) -> bool:
        """Written before its process started (pid 0): the name is taken, the pid unknown."""
        return self.pid == 0

    def is_running(self) -> bool:
        """The process that has this pid now is the one we started: same start time, same
        owner. A pid recycled by another process is never mistaken for the runner."""
        return _start_ticks(self.pid) == self.start_ticks and _owner(self.pid) == self.uid


def running_runner_pids(state_dir: Path) -> list[int]:
    """The pids of the runners recorded under a process backend's `state_dir` that still
    run: for stopping what a cluster leaves behind. A claim (pid 0) is never among them:
    `killpg(0)` would signal the caller's own process group."""
    records = (_Record.load(p) for p in (state_dir / "runners").glob("*.json"))
    return [r.pid for r in records if r is not None and not r.claim and r.is_running()]


class ProcessBackend:
    kind = "process"

    def __init__(self, state_dir: Path, pools: Mapping[str, ProcessBackendSettings]) -> None:
        self._dir = state_dir / "runners"
        self._logs = state_dir / "logs"
        for d in (state_dir, self._dir, self._logs):
            private_dir(d)  # a runner must not read the logs of others, nor edit records
        self._pools = dict(pools)
        self._run_as = {pool: RunAs.resolve(s.user) for pool, s in self._pools.items()}
        for pool, who in self._run_as.items():
            if not who.switches:
                log.warning(
                    "runners of this pool run as RunnerHub's own user: a job can read "
                    "everything RunnerHub can; set process.user",
                    pool=pool,
                    user=who.name,
                )
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # started by this process

    def _path(self, name: str, suffix: str = ".json", directory: Path | None = None) -> Path:
        """Where a runner's record (or log) lives: only ever inside its directory."""
        if not is_valid_name(name):
            raise BackendError(f"{name!r} is not a runner name")
        return (directory or self._dir) / f"{name}{suffix}"

    def _alive(self, rec: _Record) -> tuple[bool, int | None]:
        if rec.claim:
            return False, None  # its process, if it started, is not known: never signalled
        child = self._children.get(rec.name)
        if child is not None and child.pid == rec.pid:
            code = child.poll()  # also reaps it
            return code is None, code
        return rec.is_running(), None

    async def provision(self, spec: RunnerSpec) -> str:
        rec = _Record.load(self._path(spec.name))
        if rec is not None and self._alive(rec)[0]:
            return str(rec.pid)  # already running: adopt, never start a second
        settings = self._pools.get(spec.pool)
        if settings is None:
            raise BackendError(f"pool {spec.pool!r} has no process backend settings")
        return await asyncio.to_thread(self._spawn, spec, settings)

    def _spawn(self, spec: RunnerSpec, settings: ProcessBackendSettings) -> str:
        record_path = self._path(spec.name)
        log_path = self._path(spec.name, ".log", self._logs)
        run_as = self._run_as[spec.pool]
        argv = [
            a.replace("{jitconfig}", spec.jit_config).replace("{name}", spec.name)
            for a in settings.command
        ]
        cwd = self._workspace(spec.name, settings, run_as)
        switch = run_as.switches
        now = datetime.now(UTC).isoformat()
        self._claim(record_path, _Record(spec.name, spec.pool, 0, -1, now, str(log_path)))
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with open(fd, "ab") as out:
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=runner_env(settings, run_as, cwd, spec.name, spec.jit_config),
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                    umask=0o077,
                    user=run_as.uid if switch else None,
                    group=run_as.gid if switch else None,
                    extra_groups=list(run_as.groups) if switch else None,
                )
        except OSError as exc:
            record_path.unlink(missing_ok=True)  # nothing started: the name is free again
            where = f" as {run_as.name} in {cwd}" if cwd else ""
            raise BackendError(f"cannot start {argv[0]!r}{where}: {exc.strerror}") from None
        ticks = _start_ticks(child.pid)
        rec = _Record(
            spec.name,
            spec.pool,
            child.pid,
            ticks if ticks is not None else -1,
            now,
            str(log_path),
            run_as.uid,
        )
        # A temporary file of this process's own: another node on the same runner directory
        # never writes (nor renames) the same one.
        tmp = record_path.with_name(f".{spec.name}.{os.getpid()}.tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(rec.to_json())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(record_path)
        self._children[spec.name] = child
        log.info("runner process started", runner=spec.name, pid=child.pid, pool=spec.pool)
        return str(child.pid)

    @staticmethod
    def _claim(record_path: Path, claim: _Record) -> None:
        """Create the runner's record before its process: whoever creates it owns the name.
        It exists already: another start (this leader's before a crash, or a leader before
        this one, frozen mid-start) took the name, and its runner may run unseen."""
        try:
            fd = os.open(record_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise BackendError(
                f"runner {claim.name} was claimed by an earlier start; its name is spent"
            ) from None
        with open(fd, "w") as f:
            f.write(claim.to_json())
            f.flush()
            os.fsync(f.fileno())

    def _workspace_root(self, settings: ProcessBackendSettings, run_as: RunAs) -> Path | None:
        """Where a pool's runners get a directory each: `work_dir`, or for another user its
        home (ours is not its to read). None: our own runners keep the node's directory."""
        if settings.work_dir is not None:
            return settings.work_dir
        return Path(run_as.home) if run_as.switches else None

    def _workspace(self, name: str, settings: ProcessBackendSettings, run_as: RunAs) -> Path | None:
        """A fresh directory for one runner (its HOME and working directory), its user's
        only; removed when the runner is forgotten."""
        root = self._workspace_root(settings, run_as)
        if root is None:
            return None
        path = self._path(name, "", root)
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            if run_as.switches:
                os.chown(path, run_as.uid, run_as.gid)
        except OSError as exc:
            raise BackendError(
                f"cannot make the runner directory {path} for {run_as.name}: {exc.strerror} "
                "(set process.work_dir to a directory that exists)"
            ) from None
        return path

    async def list(self) -> list[BackendRunner]:
        found = []
        for path in sorted(self._dir.glob("*.json")):
            rec = _Record.load(path) if is_valid_name(path.stem) else None
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
        if not is_valid_name(name):
            return  # nothing of ours goes by that name
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
        if not rec.is_running():
            return  # gone, or its pid is another process's now: never signal that
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

    async def close(self) -> None:
        """Nothing to let go of: the runners outlive the node, on purpose."""

    def unreachable(self, ref: str | None) -> bool:
        return False  # this host's processes: always seen

    async def forget(self, name: str) -> None:
        if not is_valid_name(name):
            return
        child = self._children.pop(name, None)
        if child is not None:
            child.poll()
        rec = _Record.load(self._path(name))
        settings = self._pools.get(rec.pool) if rec else None
        if rec is not None and settings is not None:
            root = self._workspace_root(settings, self._run_as[rec.pool])
            if root is not None:  # never follows a symlink out of it (rmtree does not)
                shutil.rmtree(self._path(name, "", root), ignore_errors=True)
        self._path(name).unlink(missing_ok=True)
