"""A runner host's container engine reached over SSH: OpenSSH's client forwards the engine's
socket on that host to a local socket (`ssh -L local.sock:remote.sock`), which the engine
client then uses as a unix:// endpoint.

OpenSSH rather than an SSH library: it is what the operator's keys, agent, known hosts and
`~/.ssh/config` already work with, and what `docker -H ssh://` runs too. The forward is
started on first use and again whenever it has died (a network cut ends it through
ServerAlive); the host's key must be known beforehand (StrictHostKeyChecking=yes), never
trusted on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import structlog

from runnerhub.config import SshTarget

log = structlog.get_logger("runnerhub.backends.ssh")

CONNECT_TIMEOUT_S = 10


class SshUnreachable(ConnectionError):
    """The forward could not be made: ssh's own words say why."""


def ssh_argv(
    ssh: str,
    target: SshTarget,
    local_socket: Path,
    identity: Path | None = None,
    known_hosts: Path | None = None,
) -> list[str]:
    """The ssh command that forwards the engine's socket on `target` to `local_socket`."""
    argv = [
        ssh,
        "-nNT",  # no stdin, no command, no terminal: a forward only
        "-o", "BatchMode=yes",  # never a prompt: a key or nothing
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "StreamLocalBindUnlink=yes",
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
        "-o", "ServerAliveInterval=5",  # a silent link ends the forward within ~15 s
        "-o", "ServerAliveCountMax=3",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
    ]  # fmt: skip
    if identity is not None:
        argv += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    if known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={known_hosts}"]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    return [*argv, "-L", f"{local_socket}:{target.socket}", "--", target.host]


class SshTunnel:
    """The forward of one runner host's engine socket, kept up while it is used."""

    def __init__(
        self,
        endpoint: str,
        target: SshTarget,
        identity: Path | None = None,
        known_hosts: Path | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._target = target
        self._identity = identity
        self._known_hosts = known_hosts
        # A short private directory: a socket path may not pass 107 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="rh-ssh-"))
        self.socket = self._dir / "engine.sock"
        self._errors = self._dir / "ssh.err"
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def ensure(self) -> None:
        """The forward, up: started (again) when it is not. SshUnreachable if it cannot be."""
        if self._up():
            return
        async with self._lock:
            if not self._up():
                await self._start()

    def _up(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self.socket.exists()

    async def _start(self) -> None:
        await self._end()
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SshUnreachable("ssh not found: apt-get install openssh-client")
        self.socket.unlink(missing_ok=True)
        argv = ssh_argv(ssh, self._target, self.socket, self._identity, self._known_hosts)
        with self._errors.open("wb") as errors:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,  # a Ctrl-C for the node is not the forward's
            )
        deadline = time.monotonic() + CONNECT_TIMEOUT_S + 2
        while not self.socket.exists():
            if self._proc.returncode is not None or time.monotonic() > deadline:
                why = self._why()
                await self._end()
                raise SshUnreachable(f"ssh to {self._target.host}: {why}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 0.02)
        log.info("engine socket forwarded over ssh", host=self.endpoint, pid=self._proc.pid)

    def _why(self) -> str:
        try:
            lines = self._errors.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1][:300] if lines else "no forward within the connect timeout"

    async def _end(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def close(self) -> None:
        await self._end()
        shutil.rmtree(self._dir, ignore_errors=True)
