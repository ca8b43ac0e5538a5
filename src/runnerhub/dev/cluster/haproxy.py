"""A private HAProxy in front of RunnerHub nodes, for `runnerhub up --ha` and the tests; its
configuration comes from `runnerhub.render.haproxy` (what it does and why: see there), the
renderer production configurations come from too.

`LocalHAProxy` runs HAProxy in master-worker mode (`-W`) as our foreground child. A reload
is SIGUSR2 to the master, which re-executes itself and passes the listening sockets from the
old worker to the new one, so no connection is refused during a reload; the old worker
finishes its requests, closes kept-alive connections after their next answer, then leaves.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.process import (
    ManagedProcess,
    accepts,
    env_path,
    find_binary,
    wait_ready,
)
from runnerhub.lb.stats import stats_rows
from runnerhub.render.haproxy import (
    WEBHOOK_RATE_PER_10S,
    WEBHOOKS,
    Backend,
    PatroniMember,
    TlsFront,
    render_config,
)


class HAProxyError(Exception):
    pass


def find_haproxy() -> Path:
    """$RUNNERHUB_HAPROXY (the binary), else the PATH, else /usr/sbin (not on every PATH)."""
    return find_binary(
        "haproxy",
        HAProxyError,
        "install haproxy (`make` installs it) or set RUNNERHUB_HAPROXY",
        first=[env_path("RUNNERHUB_HAPROXY")],
        then=[Path("/usr/sbin/haproxy")],
    )


def check_config(path: Path) -> str:
    """`haproxy -c` with warnings as errors (`-dW`); its output, or raise with it."""
    proc = subprocess.run(
        [str(find_haproxy()), "-c", "-dW", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise HAProxyError(f"{path}: configuration rejected (exit {proc.returncode}):\n{output}")
    return output


@dataclass(frozen=True)
class Process:
    pid: int
    kind: str  # "master" or "worker"
    reloads: int
    old: bool  # a worker from before the last reload, finishing its connections


def parse_show_proc(text: str) -> tuple[int, list[Process]]:
    """The master CLI's `show proc`: (failed reloads, processes)."""
    procs: list[Process] = []
    failed = 0
    old = False
    for line in text.splitlines():
        if line.startswith("#"):
            old = line.strip() == "# old workers"
            continue
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        if fields[1] == "master" and "[failed:" in line:
            failed = int(line.split("[failed:", 1)[1].split("]", 1)[0])
        procs.append(Process(int(fields[0]), fields[1], int(fields[2]), old))
    return failed, procs


class LocalHAProxy(ManagedProcess):
    """A private HAProxy under `base_dir`, its frontend and stats page on loopback. Its pid
    is the master's (the workers are its children, in its process group)."""

    def __init__(
        self,
        base_dir: Path,
        frontend_port: int = 0,
        stats_port: int | None = 0,
        postgres_members: Sequence[PatroniMember] = (),
        postgres_port: int = 0,
        tls: TlsFront | None = None,
        webhook_rate_per_10s: int | None = WEBHOOK_RATE_PER_10S,
        agent_ports: Mapping[str, int] | None = None,
    ) -> None:
        self.name = "haproxy"
        # Each node's agent port (node.lb_agent_port): nodes on one host need their own.
        self.agent_ports = dict(agent_ports or {})
        self.tls = tls
        self.webhook_rate_per_10s = webhook_rate_per_10s
        self.base_dir = base_dir.resolve()
        # With Patroni members: also a TCP endpoint that leads to the current primary.
        self.postgres_members = list(postgres_members)
        self.postgres_port = (postgres_port or free_port()) if postgres_members else None
        self.frontend_port = frontend_port or free_port()
        self.stats_port = (stats_port or free_port()) if stats_port is not None else None
        self.config_file = self.base_dir / "haproxy.cfg"
        self.log_file = self.base_dir / "haproxy.log"
        self.master_socket = self._socket_path(self.base_dir / "master.sock")
        self.backends: list[Backend] = []
        self.popen: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _socket_path(wanted: Path) -> Path:
        # A Unix socket path must fit in 108 bytes; deep test directories may not.
        if len(str(wanted).encode()) < 100:
            return wanted
        digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"rh-haproxy-{digest}.sock"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}"

    @property
    def https_url(self) -> str | None:
        return f"https://127.0.0.1:{self.tls.port}" if self.tls else None

    @property
    def stats_url(self) -> str | None:
        return f"http://127.0.0.1:{self.stats_port}/stats" if self.stats_port else None

    # -- configuration ---------------------------------------------------------------------

    def render(self, backends: Sequence[Backend]) -> str:
        return render_config(
            backends,
            self.frontend_port,
            self.stats_port,
            postgres_port=self.postgres_port,
            postgres_members=self.postgres_members,
            tls=self.tls,
            webhook_rate_per_10s=self.webhook_rate_per_10s,
            agent_ports=self.agent_ports,
        )

    def write_config(self, backends: Sequence[Backend]) -> Path:
        """Check the new configuration, then put it in place atomically."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_suffix(".cfg.new")
        tmp.write_text(self.render(backends))
        try:
            check_config(tmp)
        except HAProxyError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.config_file)
        self.backends = list(backends)
        return self.config_file

    def check_config(self) -> str:
        return check_config(self.config_file)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, backends: Sequence[Backend] | None = None, timeout_s: float = 10.0) -> None:
        if self.alive():
            return
        if backends is not None or not self.config_file.exists():
            self.write_config(backends or [])
        self.master_socket.unlink(missing_ok=True)
        self.spawn(
            [
                str(find_haproxy()),
                *("-W", "-db", "-f", str(self.config_file)),
                *("-S", f"{self.master_socket},mode,600"),
            ]
        )
        try:
            self._wait(
                lambda: any(p.kind == "worker" for p in self.processes()) and self._accepts(),
                timeout_s,
                "start",
            )
        except BaseException:
            self.stop()
            raise

    def reload(self, backends: Sequence[Backend], timeout_s: float = 10.0) -> None:
        """Switch to `backends` without refusing a connection; return once the new worker
        runs (the old one may still be finishing requests)."""
        if not self.alive():
            raise HAProxyError("haproxy is not running")
        before = self._show_proc()
        if before is None:
            raise HAProxyError(f"the master CLI does not answer:\n{self.tail()}")
        failed_before, procs = before
        master_reloads = next(p.reloads for p in procs if p.kind == "master")
        self.write_config(backends)
        assert self.popen is not None
        self.popen.send_signal(signal.SIGUSR2)

        def reloaded() -> bool:
            now = self._show_proc()
            if now is None:
                return False  # the master is re-executing itself
            failed, current = now
            if failed > failed_before:
                raise HAProxyError(f"the reload failed:\n{self.tail()}")
            master = next(p for p in current if p.kind == "master")
            return master.reloads > master_reloads and any(
                p.kind == "worker" and not p.old and p.reloads == 0 for p in current
            )

        self._wait(reloaded, timeout_s, "reload")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Hard stop: SIGTERM to the master, which stops every worker (old ones too) before
        it exits; SIGKILL the whole process group (our session) if that takes too long."""
        super().stop(timeout_s)
        self.master_socket.unlink(missing_ok=True)

    # -- observation -----------------------------------------------------------------------

    def master_cli(self, command: str, timeout_s: float = 2.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(self.master_socket))
            # Without "quit" the master CLI keeps the connection open for more commands.
            s.sendall(command.encode() + b"; quit\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def _show_proc(self) -> tuple[int, list[Process]] | None:
        try:
            failed, procs = parse_show_proc(self.master_cli("show proc"))
        except OSError:
            return None
        return (failed, procs) if any(p.kind == "master" for p in procs) else None

    def processes(self) -> list[Process]:
        """The master and its workers, current and old (empty if the master is not
        answering, e.g. while it re-executes itself for a reload)."""
        shown = self._show_proc()
        return shown[1] if shown else []

    def _accepts(self) -> bool:
        return accepts(self.frontend_port)

    def _wait(self, probe: Callable[[], bool], timeout_s: float, what: str) -> None:
        wait_ready(
            probe,
            timeout_s,
            f"haproxy {what}",
            error=HAProxyError,
            watch=[self],
            log_lines=20,
            interval_s=0.02,
        )

    def server_states(self, backend: str = WEBHOOKS) -> dict[str, str]:
        """Each RunnerHub node's state in `backend` (default: the deliveries') as the stats
        page shows it ("UP", "DOWN", "UP 1/2"…)."""
        return self._per_server(backend, "status")

    def server_weights(self, backend: str = WEBHOOKS) -> dict[str, int]:
        """Each node's current weight in `backend` (its agent sets it: lb/agent.py)."""
        return {name: int(w) for name, w in self._per_server(backend, "weight").items()}

    def _per_server(self, backend: str, column: str) -> dict[str, str]:
        """One stats column of each server of `backend` (the summary rows left out)."""
        rows = self._stats_rows(backend)
        return {r["svname"]: r[column] for r in rows if r["svname"] not in ("BACKEND", "")}

    def backend_counters(self, backend: str = WEBHOOKS) -> dict[str, int]:
        """`backend`'s retry (`wretr`) and redispatch (`wredis`) counters, among others."""
        for row in self._stats_rows(backend):
            if row["svname"] == "BACKEND":
                return {k: int(v) for k, v in row.items() if k and v and v.isdigit()}
        return {}

    def _stats_rows(self, backend: str) -> list[dict[str, str]]:
        if self.stats_url is None:
            raise HAProxyError("this HAProxy has no stats page (stats_port=None)")
        text = httpx.get(f"{self.stats_url};csv", timeout=2).text
        return [r for r in stats_rows(text) if r.get("pxname") == backend]
