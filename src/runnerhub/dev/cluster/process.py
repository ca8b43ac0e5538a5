"""The servers the local cluster runs as its children, handled one way: etcd members, Patroni
members, Redis and Sentinel processes, HAProxy, RunnerHub nodes and the GitHub simulator.

`find_binary` looks for an executable; `ManagedProcess` starts one in its own session with
its output appended to a log file, signals and stops it (SIGTERM, then SIGKILL) and shows
the log's tail; `wait_ready` waits for a condition with a deadline, failing at once, with
the log, when a process it watches exits. What differs per server (flags, configuration,
readiness, stop order) stays in its module. A single PostgreSQL (`postgres.py`) is started,
awaited and stopped by `pg_ctl` itself, so it shares only `find_binary`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from runnerhub.dev.waiting import Timeout, wait_until_sync

T = TypeVar("T")


def env_path(variable: str, name: str = "") -> Path | None:
    """The path $`variable` names, joined with `name` when it names the directory holding
    it; None when the variable is unset or empty."""
    value = os.environ.get(variable)
    return Path(value, name) if value else None


def find_binary(
    name: str,
    error: Callable[[str], Exception],
    install: str,
    *,
    first: Iterable[Path | None] = (),
    then: Iterable[Path] = (),
    what: str = "",
) -> Path:
    """The executable `name`: the first of `first` that is one (None entries, e.g. an unset
    environment variable, are skipped), else `name` on the PATH, else the first of `then`.
    None found: raise `error("<what, or name> not found: <install>")`."""
    on_path = shutil.which(name)
    for candidate in [*first, Path(on_path) if on_path else None, *then]:
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise error(f"{what or name} not found: {install}")


class ManagedProcess:
    """A server run as our child, its output appended to `log_file`.

    A mixin: the class using it holds `name`, `log_file` and `popen` (None until started)
    and starts its server with `spawn`.
    """

    name: str
    log_file: Path
    popen: subprocess.Popen[bytes] | None

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
        group: int | None = None,
    ) -> None:
        """Start `argv` in its own session: a Ctrl-C meant for `runnerhub up` or pytest does
        not reach it (they stop everything in order), and it is ours to signal. `env`: its
        whole environment (default: ours); `user`, `group`: the account it runs as, without
        our supplementary groups."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # Ours only: a runner on this host has no business reading the services' logs.
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "ab") as out:
            self.popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=cwd,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
            )

    @property
    def pid(self) -> int | None:
        """Only while it runs: the pid of one that exited may be another process's by now."""
        return self.popen.pid if self.alive() and self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (SIGKILL, SIGSTOP, SIGCONT…); after SIGKILL, reap so its ports are free."""
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(sig)
        if sig == signal.SIGKILL:
            self.popen.wait(10)

    def terminate(self) -> None:
        """Ask it to stop, without waiting (to stop several at once)."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)
            self.popen.send_signal(signal.SIGCONT)  # a paused process must run to see SIGTERM

    def wait_exit(self, timeout_s: float = 10.0) -> None:
        """Wait until it has exited; past `timeout_s`, SIGKILL its whole process group."""
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def stop(self, timeout_s: float = 10.0) -> None:
        self.terminate()
        self.wait_exit(timeout_s)

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines of its log ("" when there is none yet)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def exit_report(self) -> str | None:
        """None while it runs; else that it does not, its exit code and its log's tail."""
        if self.alive():
            return None
        code = self.popen.returncode if self.popen else None
        return f"{self.name} is not running (exit {code}):\n{self.tail()}"


def stop_together(processes: Sequence[ManagedProcess], timeout_s: float) -> None:
    """SIGTERM to every one, then wait for each (SIGKILL past `timeout_s` from now): their
    shutdowns overlap instead of adding up."""
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + timeout_s
    for p in processes:
        p.wait_exit(max(0.1, deadline - time.monotonic()))


def wait_ready(
    probe: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    error: Callable[[str], Exception],
    watch: Sequence[ManagedProcess] = (),
    logs: Sequence[ManagedProcess] | None = None,
    log_lines: int = 5,
    interval_s: float = 0.05,
) -> T:
    """Poll `probe` until it returns something truthy; return that. A process of `watch`
    that is not running fails the wait at once, with its log (a server that cannot start
    says why sooner than a timeout would). Past `timeout_s`, raise `error` saying `what` was
    awaited, with the last `log_lines` of each log of `logs` (default: `watch`)."""

    def ready() -> T:
        for p in watch:
            report = p.exit_report()
            if report is not None:
                raise error(report)
        return probe()

    try:
        return wait_until_sync(ready, timeout_s, what, interval_s=interval_s)
    except Timeout as exc:
        shown = watch if logs is None else logs
        tails = "\n".join(f"--- {p.name}\n{p.tail(log_lines)}" for p in shown)
        raise error(f"{exc}\n{tails}") from exc


def pid_running(pid: int) -> bool:
    """Alive and not a zombie (a process whose parent is gone may be left unreaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def accepts(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    """Something listens on `host`:`port` and takes a connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def answers_ok(url: str, timeout_s: float = 1.0) -> bool:
    """`url` answers 200 (an HTTP server that is not listening yet answers nothing)."""
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False
