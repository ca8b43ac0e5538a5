"""A local container engine reached the ways a remote runner host is: over TCP with TLS
client certificates, and over SSH. Both stand in front of a `LocalPodman`'s socket.

- `TlsEngineFront`: Podman's API service has no TLS of its own (Docker's `--tlsverify`
  has), so HAProxy terminates TLS in front of its socket and refuses any client without a
  certificate from the CA, as `dockerd --tlsverify` does.
- `LocalSshd`: OpenSSH's server on a loopback port with a host key and one authorised client
  key of its own, through which the backend forwards the engine's socket.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from runnerhub.dev.cluster.haproxy import find_haproxy
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.process import ManagedProcess, accepts, find_binary, wait_ready
from runnerhub.dev.cluster.tls import Issued, LocalCA
from runnerhub.paths import private_dir


class RemoteEngineError(Exception):
    pass


@dataclass
class TlsEngineFront(ManagedProcess):
    """tcp://127.0.0.1:`port` with TLS: the engine's API for clients with a certificate."""

    base_dir: Path
    engine_socket: Path
    name: str = "engine-tls"
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        private_dir(self.base_dir)
        self.log_file = self.base_dir / "haproxy.log"
        self.ca = LocalCA(self.base_dir / "ca")
        self.client: Issued = self.ca.issue("runnerhub-client", client=True)
        self._server = self.ca.issue("engine").bundle(self.base_dir / "engine-bundle.pem")

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        config = self.base_dir / "haproxy.cfg"
        config.write_text(
            f"""# written by RunnerHub's tests: TLS with client certificates before an engine
global
    maxconn 256
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend engine
    bind 127.0.0.1:{self.port} ssl crt {self._server} ca-file {self.ca.cert} verify required
    default_backend engine
backend engine
    server engine unix@{self.engine_socket}
"""
        )
        self.spawn([str(find_haproxy()), "-db", "-f", str(config)])
        wait_ready(
            lambda: accepts(self.port),
            timeout_s,
            "HAProxy's TLS",
            error=RemoteEngineError,
            watch=[self],
        )


@dataclass
class LocalSshd(ManagedProcess):
    """OpenSSH's server on 127.0.0.1:`port`, letting in `user` with `client_key` only."""

    base_dir: Path
    user: str = "root"
    name: str = "sshd"
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        private_dir(self.base_dir)
        self.log_file = self.base_dir / "sshd.log"
        self.host_key = self.base_dir / "host_key"
        self.client_key = self.base_dir / "client_key"
        self.known_hosts = self.base_dir / "known_hosts"

    @property
    def sshd(self) -> Path:
        return find_binary(
            "sshd",
            RemoteEngineError,
            "apt-get install openssh-server",
            then=[Path("/usr/sbin/sshd")],
        )

    def _keygen(self, path: Path) -> str:
        keygen = find_binary("ssh-keygen", RemoteEngineError, "apt-get install openssh-client")
        if not path.exists():
            subprocess.run(
                [str(keygen), "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                check=True,
                capture_output=True,
            )
        return path.with_suffix(".pub").read_text().strip()

    def start(self, timeout_s: float = 10.0) -> None:
        sshd = self.sshd
        host_public = self._keygen(self.host_key)
        (self.base_dir / "authorized_keys").write_text(self._keygen(self.client_key) + "\n")
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public}\n")
        # Privilege separation's empty directory (the package's tmpfiles.d makes it at boot).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = self.base_dir / "sshd_config"
        config.write_text(
            f"""# written by RunnerHub's tests
ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.host_key}
PidFile {self.base_dir / "sshd.pid"}
AuthorizedKeysFile {self.base_dir / "authorized_keys"}
AllowUsers {self.user}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding local
# (AllowTcpForwarding no would refuse the socket forward too: it covers every local one)
X11Forwarding no
"""
        )
        self.spawn([str(sshd), "-D", "-e", "-f", str(config)], env={"PATH": os.defpath})
        wait_ready(
            lambda: accepts(self.port), timeout_s, "sshd", error=RemoteEngineError, watch=[self]
        )
