"""A private etcd cluster in a directory: for leader election in the tests and benchmarks.

Every member listens on loopback only, on ports chosen once and kept in `cluster.json`, so
that starting again on the same directory resumes the same cluster with its data (etcd
stores the peer URLs in its membership and would not accept new ones). Members run in their
own sessions and are ours to signal: chaos tests kill, pause and resume them one by one.
Each member's flags come from `runnerhub.render.etcd`, as production configuration files do.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.process import ManagedProcess, env_path, find_binary, wait_ready
from runnerhub.dev.cluster.tls import Issued, LocalCA
from runnerhub.paths import write_private
from runnerhub.render.etcd import EtcdMemberConfig, EtcdTlsFiles, flags

HOST = "127.0.0.1"
STATE_FILE = "cluster.json"


class EtcdError(Exception):
    pass


def find_etcd(name: str = "etcd") -> Path:
    """`etcd` or `etcdctl`: from $RUNNERHUB_ETCD_BIN (a directory), else the PATH."""
    package = "etcd-server" if name == "etcd" else "etcd-client"
    return find_binary(
        name,
        EtcdError,
        f"install {package} (`make` installs it) or set RUNNERHUB_ETCD_BIN",
        first=[env_path("RUNNERHUB_ETCD_BIN", name)],
    )


def _clean_env() -> dict[str, str]:
    # etcd reads ETCD_* variables as flags: keep the machine's settings out of our cluster.
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


@dataclass
class EtcdMember(ManagedProcess):
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    log_file: Path
    initial_cluster: str = ""
    cluster_token: str = ""
    heartbeat_ms: int = 100
    election_ms: int = 1000
    popen: subprocess.Popen[bytes] | None = None
    tls: EtcdTls | None = None  # clients over TLS, each showing a certificate of the CA
    # Members over TLS too, each showing its certificate to the others. Off only for a
    # cluster made before peers had TLS: etcd keeps the peer URLs it was made with.
    peer_tls: bool = False

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{'https' if self.tls and self.peer_tls else 'http'}://{HOST}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    def config(self) -> EtcdMemberConfig:
        served = self.tls.server_files(self.name) if self.tls else None
        # The same certificate to its peers, whose own must be of the same CA.
        peers = (
            replace(served, ca=self.tls.ca.cert, client_cert_auth=True)
            if served and self.tls and self.peer_tls
            else None
        )
        return EtcdMemberConfig(
            name=self.name,
            data_dir=self.data_dir,
            listen_client_urls=[self.client_url],
            advertise_client_urls=[self.client_url],
            listen_peer_urls=[self.peer_url],
            advertise_peer_urls=[self.peer_url],
            initial_cluster=self.initial_cluster,
            cluster_token=self.cluster_token,
            heartbeat_ms=self.heartbeat_ms,
            election_ms=self.election_ms,
            client_tls=served,
            peer_tls=peers,
        )

    def argv(self) -> list[str]:
        return [str(find_etcd("etcd")), *flags(self.config())]

    def start(self) -> None:
        if not self.alive():
            self.spawn(self.argv(), env=_clean_env())

    def status(self, timeout_s: float = 1.0) -> dict[str, str] | None:
        """This member's id and the leader it knows (the v3 JSON gateway), or None."""
        try:
            r = httpx.post(
                f"{self.client_url}/v3/maintenance/status",
                json={},
                timeout=timeout_s,
                verify=self.tls.client_context() if self.tls else True,
            )
            body = r.json()
            return {"member_id": body["header"]["member_id"], "leader": body.get("leader", "0")}
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """`/health`: this member sees a leader and a quorum read through raft succeeds."""
        try:
            r = httpx.get(
                f"{self.client_url}/health",
                timeout=timeout_s,
                verify=self.tls.client_context() if self.tls else True,
            )
            return r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, ValueError, AttributeError):
            return False


@dataclass
class EtcdTls:
    """TLS for a local etcd: each member's certificate from a local CA, for its clients
    (who must show one of the CA too unless `client_certs` is off) and for its peers
    (who always must: `--peer-client-cert-auth`)."""

    ca: LocalCA
    # Clients must show a certificate of the CA. Off: TLS, and users with passwords only
    # (Patroni reaches etcd through its HTTP gateway, which refuses a request carrying a
    # client certificate once authentication is on).
    client_certs: bool = True

    def server_files(self, name: str) -> EtcdTlsFiles:
        issued = self.ca.issue(name, also_client=True)
        return EtcdTlsFiles(issued.cert, issued.key, self.ca.cert, self.client_certs)

    def client(self, name: str = "etcd-admin") -> Issued:
        """A client certificate (made once, kept under the CA's directory)."""
        cert, key = self.ca.directory / f"{name}.pem", self.ca.directory / f"{name}.key"
        if cert.exists() and key.exists():
            return Issued(cert, key)
        return self.ca.issue(name, client=True)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca.cert)
        if self.client_certs:
            admin = self.client()
            context.load_cert_chain(admin.cert, admin.key)
        return context


@dataclass(frozen=True)
class EtcdClientAccess:
    """How a client of a local etcd reaches it: TLS checked against `ca`, as `username`
    (a role that may touch only its prefix). Empty: plain HTTP/gRPC, no user."""

    ca: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def patroni(self, ca_copy: Path | None) -> dict[str, Any]:
        """Patroni's etcd3 settings for it (`ca_copy`: the CA where Patroni can read it)."""
        out: dict[str, Any] = {}
        if self.ca is not None:
            out |= {"protocol": "https", "cacert": str(ca_copy or self.ca)}
        if self.username is not None:
            out |= {"username": self.username, "password": self.password}
        return out


class LocalEtcd:
    """`members` etcd processes forming one cluster under `base_dir`; with `tls`, clients
    speak TLS with certificates; `enable_auth` turns on etcd's users and roles."""

    def __init__(
        self,
        base_dir: Path,
        members: int = 3,
        cluster_token: str | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        tls: LocalCA | None = None,
        client_certs: bool = True,
    ) -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.base_dir = base_dir.resolve()
        state = self.base_dir / STATE_FILE
        if state.exists():
            saved = json.loads(state.read_text())
            if len(saved["members"]) != members:
                raise EtcdError(
                    f"{self.base_dir} holds a {len(saved['members'])}-member cluster, "
                    f"not {members}: destroy() it first"
                )
            token = str(saved["token"])
            ports = [(int(m["client_port"]), int(m["peer_port"])) for m in saved["members"]]
            peer_tls = bool(saved.get("peer_tls", False))
        else:
            token = cluster_token or f"rh-etcd-{secrets.token_hex(6)}"
            ports = [(free_port(), free_port()) for _ in range(members)]
            peer_tls = tls is not None
        self.cluster_token = token
        self.peer_tls = peer_tls
        self.tls = EtcdTls(tls, client_certs) if tls is not None else None
        # Once enable_auth ran (kept beside the data: a cluster resumed knows it).
        self._auth_file = self.base_dir / "root-password"
        self.root_password: str | None = (
            self._auth_file.read_text().strip() if self._auth_file.exists() else None
        )
        self.members = [
            EtcdMember(
                name=f"etcd-{i + 1}",
                data_dir=self.base_dir / f"etcd-{i + 1}.data",
                client_port=client,
                peer_port=peer,
                log_file=self.base_dir / f"etcd-{i + 1}.log",
                cluster_token=token,
                heartbeat_ms=heartbeat_ms,
                election_ms=election_ms,
                tls=self.tls,
                peer_tls=peer_tls,
            )
            for i, (client, peer) in enumerate(ports)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    # -- lifecycle -------------------------------------------------------------------------

    def _save(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "token": self.cluster_token,
            "peer_tls": self.peer_tls,
            "members": [
                {"name": m.name, "client_port": m.client_port, "peer_port": m.peer_port}
                for m in self.members
            ],
        }
        (self.base_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every member (fresh, or resuming the data already here); wait until healthy."""
        find_etcd("etcd")
        self._save()
        for m in self.members:
            m.start()
        try:
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Followers first, all at once, then the leader. A leader stopping while a follower
        is still connected hands leadership over first, and if that follower is stopping
        too, etcd waits its full request timeout (5 s + 2 elections) for the handover."""
        live = [m for m in self.members if m.alive()]
        leader = self.leader_index() if len(live) > 1 else None
        last = [self.members[leader]] if leader is not None else []
        followers = [m for m in live if m not in last]
        for m in followers:
            m.terminate()
        for m in [*followers, *last]:
            m.stop()

    def destroy(self) -> None:
        """Stop, then remove the data (the logs stay, for a failed test's post-mortem)."""
        self.stop()
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
        (self.base_dir / STATE_FILE).unlink(missing_ok=True)
        self._auth_file.unlink(missing_ok=True)
        self.root_password = None

    # -- state -----------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def member(self, i: int) -> EtcdMember:
        return self.members[i]

    def wait_healthy(self, timeout_s: float = 30.0, members: Sequence[int] | None = None) -> None:
        """Wait until every member in `members` (default: all) runs, passes `/health` and
        names the same leader; a member that exited fails fast, with its log."""
        chosen = [self.members[i] for i in (members if members is not None else range(len(self)))]

        def healthy() -> bool:
            if not all(m.healthy() for m in chosen):
                return False
            statuses = [m.status() for m in chosen]
            if any(s is None for s in statuses):
                return False
            leaders = {s["leader"] for s in statuses if s is not None}
            return len(leaders) == 1 and leaders != {"0"}

        wait_ready(healthy, timeout_s, "etcd to become healthy", error=EtcdError, watch=chosen)

    def leader_index(self) -> int | None:
        """Which member is raft leader now, as the running members report it (None if no
        member answers, none knows a leader, or the leader is not running)."""
        ids: dict[str, int] = {}
        seen: Counter[str] = Counter()
        for i, m in enumerate(self.members):
            s = m.status() if m.alive() else None
            if s is None:
                continue
            ids[s["member_id"]] = i
            if s["leader"] != "0":
                seen[s["leader"]] += 1
        # During an election members may disagree for a moment: take the most reported.
        return ids.get(seen.most_common(1)[0][0]) if seen else None

    def etcdctl(
        self, *args: str, endpoints: Sequence[str] | None = None, timeout_s: float = 10
    ) -> str:
        """Run `etcdctl` (v3 API) against `endpoints` (default: all); its stdout, or raise."""
        env = {**_clean_env(), "ETCDCTL_API": "3"}
        access: list[str] = []
        if self.tls is not None:
            access.append(f"--cacert={self.tls.ca.cert}")
            if self.tls.client_certs:
                admin = self.tls.client()
                access += [f"--cert={admin.cert}", f"--key={admin.key}"]
        if self.root_password is not None:  # in the environment: not in `ps`
            env["ETCDCTL_USER"] = f"root:{self.root_password}"
        scheme = "https://" if self.tls else ""  # etcdctl's default is plain HTTP
        cmd = [
            str(find_etcd("etcdctl")),
            *access,
            f"--endpoints={','.join(f'{scheme}{e}' for e in endpoints or self.endpoints)}",
            f"--command-timeout={max(1, int(timeout_s))}s",
            "--dial-timeout=2s",
            *args,
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, env=env, timeout=timeout_s + 5
        )
        if proc.returncode != 0:
            raise EtcdError(f"etcdctl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def enable_auth(self, users: Mapping[str, tuple[Sequence[str], str]]) -> None:
        """etcd's authentication on, with a root user (its password kept here for
        `etcdctl`) and, per name, a user with that password whose role may read and write
        only under each prefix: `{"runnerhub": (("/runnerhub/",), "pw")}`. Once only: a
        resumed cluster has it on already."""
        if self.root_password is not None:
            return
        root = secrets.token_urlsafe(16)
        self.etcdctl("user", "add", "root", f"--new-user-password={root}")
        self.etcdctl("user", "grant-role", "root", "root")
        for name, (prefixes, password) in users.items():
            self.etcdctl("role", "add", name)
            for prefix in prefixes:
                self.etcdctl("role", "grant-permission", name, "--prefix=true", "readwrite", prefix)
            self.etcdctl("user", "add", name, f"--new-user-password={password}")
            self.etcdctl("user", "grant-role", name, name)
        self.etcdctl("auth", "enable")
        self.root_password = root
        write_private(self._auth_file, root)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under `prefix` (a cluster's keys that describe a past)."""
        self.etcdctl("del", "--prefix", prefix)

    def __len__(self) -> int:
        return len(self.members)
