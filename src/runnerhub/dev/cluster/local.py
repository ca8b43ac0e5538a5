"""`runnerhub up`: a whole RunnerHub on this machine, under one state directory.

It starts its own PostgreSQL, the GitHub simulator, one RunnerHub node whose process backend
runs runner simulators, and a demo workload; shows progress, then the URLs, the API token
and a live summary. Ctrl-C stops everything in order (node, runners, simulator, database);
running it again on the same directory resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel

from runnerhub.backends.process import running_runner_pids
from runnerhub.backup.pitr import Target, TargetError
from runnerhub.config import load_settings
from runnerhub.dev.cluster.asking import answer, take_request
from runnerhub.dev.cluster.dr import restore_in_place
from runnerhub.dev.cluster.drill import LOST_FLAG, STANDBY_FLAG
from runnerhub.dev.cluster.etcd import EtcdClientAccess, EtcdError, LocalEtcd
from runnerhub.dev.cluster.haproxy import HAProxyError, LocalHAProxy
from runnerhub.dev.cluster.patroni import LocalPatroni, PatroniError
from runnerhub.dev.cluster.pgbackrest import LocalPgBackRest
from runnerhub.dev.cluster.podman import (
    RUNNER_IMAGE,
    RUNNER_SCRIPT,
    LocalPodman,
    PodmanError,
    build_runner_rootfs,
    find_podman,
)
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.postgres import SERVICE_USER, LocalPostgres, PostgresError
from runnerhub.dev.cluster.process import (
    ManagedProcess,
    answers_ok,
    pid_running,
    stop_together,
    wait_ready,
)
from runnerhub.dev.cluster.redis import LocalRedis, RedisError
from runnerhub.dev.cluster.region import (
    StandbyRegion,
    caught_up,
    stand_by_local_node,
    write_node_config,
)
from runnerhub.dev.cluster.runners import RunnerSetup, runner_setup
from runnerhub.dev.cluster.supervise import RestartPolicy
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.dev.waiting import Timeout, wait_until_sync
from runnerhub.dr.promote import PromotionReport, promote
from runnerhub.paths import write_private
from runnerhub.render.haproxy import TlsFront
from runnerhub.render.patroni import StandbyOf

# Renders what the API reports (pools, jobs, runners) for the live view.
StatusView = Callable[[httpx.Client], RenderableType]

ORG = "acme"
REPOS = ["acme/web", "acme/api"]
DEMO_POOLS: list[dict[str, Any]] = [
    {"name": "linux", "labels": ["self-hosted", "linux", "x64"], "max_runners": 8},
    {"name": "gpu", "labels": ["self-hosted", "linux", "x64", "gpu"], "max_runners": 2},
    {
        "name": "arm",
        "labels": ["self-hosted", "linux", "arm64"],
        "max_runners": 4,
        "min_idle": 1,
        "organization": ORG,
    },
]
# What the demo asks for, with weights: most jobs are plain Linux, some need a GPU or ARM,
# and one in twenty asks for a GitHub-hosted runner (RunnerHub leaves those alone).
DEMO_LABELS = [
    (["self-hosted", "linux", "x64"], 12),
    (["self-hosted", "linux", "x64", "gpu"], 3),
    (["self-hosted", "linux", "arm64"], 4),
    (["ubuntu-latest"], 1),
]


@dataclass
class Secrets:
    webhook_secret: str
    admin_token: str
    read_token: str
    github_token: str
    # etcd's users (HA): the nodes' (the leader key's prefix) and Patroni's (its own).
    etcd_runnerhub_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    etcd_patroni_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # Redis's ACL user for the nodes (HA): `runnerhub:*` keys and channels only.
    redis_node_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @classmethod
    def load_or_create(cls, path: Path) -> Secrets:
        if path.exists():
            saved = json.loads(path.read_text())
            loaded = cls(**saved)
            if saved.keys() != loaded.__dict__.keys():  # from before a secret was added
                write_private(path, json.dumps(loaded.__dict__, indent=2))
            return loaded
        made = cls(
            webhook_secret=secrets.token_urlsafe(32),
            admin_token="rh_admin_" + secrets.token_urlsafe(24),
            read_token="rh_read_" + secrets.token_urlsafe(24),
            github_token="ghp_sim" + secrets.token_hex(18),
        )
        write_private(path, json.dumps(made.__dict__, indent=2))
        return made


# etcd's users and the nodes' key prefix in the HA cluster (docs/security.md).
ETCD_PREFIX = "/runnerhub"
ETCD_NODE_USER = "runnerhub"
ETCD_PATRONI_USER = "patroni"
REDIS_NODE_USER = "runnerhub"

# What starting a local service may raise (the supervisor reports it and goes on).
START_ERRORS = (
    OSError,
    RuntimeError,
    PostgresError,
    PatroniError,
    RedisError,
    EtcdError,
    PodmanError,
)


# `make runner-image` leaves the runner image's root file system here (a checkout).
REPO_ROOTFS = Path(__file__).resolve().parents[4] / "build" / "runner-rootfs.tar"


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Service(ManagedProcess):
    """A RunnerHub node or the GitHub simulator."""

    name: str
    argv: list[str]
    log_file: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start it with `env` added to ours."""
        self.spawn(self.argv, env={**os.environ, **(env or {})})

    # Longer than the other servers': a node finishes its requests and hands over.
    STOP_TIMEOUT_S = 15.0

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        super().stop(timeout_s)


@dataclass
class LocalCluster:
    state_dir: Path
    port: int = 8080
    demo_jobs: int = 30
    ha: bool = False  # 3 etcd members, HAProxy in front of `nodes` nodes
    nodes: int = 1
    # PostgreSQL as a 3-member Patroni cluster (synchronous replication, automatic failover)
    # rather than one server; None: in HA mode, yes.
    patroni: bool | None = None
    patroni_members: int = 3  # 2 still fails over (synchronous mode); tests save a member
    # WAL archiving and scheduled backups with pgBackRest (two repositories); None: with
    # Patroni, yes.
    backups: bool | None = None
    # A second region (docs/dr.md): its own etcd, a Patroni standby cluster following this
    # one, and a RunnerHub node standing by (`node-b1`). Needs Patroni and backups.
    dr: bool = False
    # Where runners run: "process" (on this host) or "container" (a Podman API service of
    # the cluster's own, the runner image made from Debian's packages: docs/backends.md).
    backend: str = "process"
    console: Console = field(default_factory=Console)
    # Settings merged into every node's configuration (section by section), e.g. for tests.
    overrides: dict[str, Any] = field(default_factory=dict)
    sim_args: list[str] = field(default_factory=list)  # extra `github-sim` flags

    @classmethod
    def for_faults(
        cls, state_dir: Path, lease_ttl_s: float = 2.0, patroni: bool = False
    ) -> LocalCluster:
        """A quiet HA cluster with fast loops, for chaos tests and failover benchmarks
        (with one PostgreSQL server unless the faults are the database's: it starts faster)."""
        return cls(
            state_dir,
            port=0,
            demo_jobs=0,
            ha=True,
            nodes=3,
            patroni=patroni,
            backups=False,  # the faults are elsewhere; a backup every run would slow them
            console=Console(file=io.StringIO()),
            # Sustained load is far beyond what one GitHub App may call in an hour (5,000 to
            # 15,000 requests): these runs are about node faults, not rate limits.
            sim_args=["--rate-limit", "1000000"],
            overrides={
                "scheduler": {"tick_s": 1, "retry_base_s": 0.2, "retry_max_s": 2},
                "janitor": {"interval_s": 0.5},
                "reconciler": {"interval_s": 5},
                "ha": {"lease_ttl_s": lease_ttl_s},
                "database": {"replication_check_s": 1},
                "health": {"github_interval_s": 1},
            },
        )

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir.resolve()
        self.logs = self.state_dir / "logs"
        self.services: list[Service] = []
        self.node_services: list[Service] = []
        self.node_urls: dict[str, str] = {}
        self.pg = LocalPostgres(self.state_dir / "postgres")
        self.etcd: LocalEtcd | None = None
        self.haproxy: LocalHAProxy | None = None
        self.tls_port = 0  # HAProxy's HTTPS port (HA only)
        self.haproxy_stats_port = 0  # its stats page: the nodes' load_balancers check reads it
        self.agent_ports: dict[str, int] = {}  # each node's HAProxy agent port (HA only)
        self.stopping = threading.Event()
        if self.ha and self.nodes < 2:
            self.nodes = 3
        if self.patroni is None:
            self.patroni = self.ha
        if self.patroni and not self.ha:
            raise ValueError("Patroni needs the HA cluster's etcd: use it with ha=True")
        if self.dr and not (self.patroni and self.backups is not False):
            raise ValueError("a standby region follows Patroni and its archive: use ha=True")
        self.region_b: StandbyRegion | None = None
        self.standby_services: list[Service] = []  # region B's nodes: not behind HAProxy
        self.standby_urls: dict[str, str] = {}
        self.pg_cluster: LocalPatroni | None = None
        self.redis: LocalRedis | None = None
        self.podman: LocalPodman | None = None
        self.restarts = RestartPolicy()
        self.runners: RunnerSetup = runner_setup(self.state_dir)
        self._reported: set[str] = set()  # given up on, and said so
        # Held while regions change roles: the supervisor leaves processes alone meanwhile.
        self._changing = threading.Lock()

    @functools.cached_property
    def ca(self) -> LocalCA:
        """The local cluster's CA (made on first use): HAProxy's certificate comes from it,
        and the GitHub simulator trusts it for its TLS deliveries."""
        return LocalCA(self.state_dir / "tls")

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every part, each once what it needs runs: etcd, PostgreSQL, Redis, the
        GitHub simulator, the nodes, then HAProxy in front of them."""
        if self._region_a_state() != "active":
            raise RuntimeError(
                f"region B took over {self.state_dir} in a DR drill; a cluster is not resumed "
                "after a region failover: start a new one in another --state-dir"
            )
        if self.backend == "container":
            find_podman()  # before anything starts: say at once what is missing
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # the database's service user must reach inside
        self.logs.mkdir(mode=0o700, exist_ok=True)
        self.logs.chmod(0o700)
        self.secrets = Secrets.load_or_create(self.state_dir / "secrets.json")
        if self.ha:
            self._start_etcd()
        if self.patroni:
            self._start_patroni()
        else:
            self._start_postgres()

        self._choose_port()
        # In HA mode the port is HAProxy's; the nodes listen on ports of their own.
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.webhook_url = f"{self.api_url}/webhooks/github"
        if self.ha:
            # GitHub's deliveries reach HAProxy over TLS (a certificate from a local CA);
            # the plain port stays, on loopback, for the local tools.
            self.tls_port = free_port()
            self.haproxy_stats_port = free_port()
            self.webhook_url = f"https://127.0.0.1:{self.tls_port}/webhooks/github"
        ports = [free_port() for _ in range(self.nodes)] if self.ha else [self.port]

        if self.ha:
            self._start_redis()
        if self.backend == "container":
            self._start_podman()
        with self.console.status("starting the GitHub simulator…"):
            self.sim_url = self._start_sim()
        self.console.print(f"[green]✓[/green] GitHub simulator at {self.sim_url}")
        for i, port in enumerate(ports, start=1):
            self._start_node(f"node-{i}", port)
        if self.ha:
            self._start_haproxy()
            with self.console.status("waiting for a leader…"):
                wait_until_sync(self.leader, 30, "a leader to be elected", interval_s=0.1)
                wait_until_sync(
                    self._all_nodes_healthy, 30, "every node to take part", interval_s=0.1
                )
            self.console.print(f"[green]✓[/green] leader: {self.leader()}")
        if self.dr:
            self._start_region_b()
        self._write_cluster_file()
        self.console.print(
            f"[green]✓[/green] dashboard at {self.dashboard_url} (sign in with the admin or "
            f"read token in {self.state_dir / 'cluster.json'})"
        )

    @property
    def dashboard_url(self) -> str:
        return f"{self.api_url}/ui/"

    def _start_etcd(self) -> None:
        # TLS (a certificate from the local CA) and users: the nodes may touch only the
        # leader keys, Patroni only its own (and its restored clusters').
        self.etcd = LocalEtcd(self.state_dir / "etcd", members=3, tls=self.ca, client_certs=False)
        with self.console.status("starting etcd (3 members)…"):
            self.etcd.start()
            self.etcd.enable_auth(self._etcd_users(LocalPatroni.namespace))
        self.console.print(
            f"[green]✓[/green] etcd at {', '.join(self.etcd.endpoints)} (TLS, users)"
        )

    def _etcd_users(self, patroni_namespace: str) -> dict[str, tuple[list[str], str]]:
        """Each region's etcd users: the nodes under the leader key's prefix, Patroni under
        its namespace (and `/restored-`, where a restore into a new cluster bootstraps)."""
        return {
            ETCD_NODE_USER: ([f"{ETCD_PREFIX}/"], self.secrets.etcd_runnerhub_password),
            ETCD_PATRONI_USER: (
                [patroni_namespace, "/restored-"],
                self.secrets.etcd_patroni_password,
            ),
        }

    @property
    def patroni_etcd_access(self) -> EtcdClientAccess:
        return EtcdClientAccess(self.ca.cert, ETCD_PATRONI_USER, self.secrets.etcd_patroni_password)

    def _start_patroni(self) -> None:
        assert self.etcd is not None
        backups = self.backups if self.backups is not None else True
        self.pg_cluster = LocalPatroni(
            self.state_dir / "patroni",
            self.etcd.endpoints,
            members_count=self.patroni_members,
            backups=backups,
            etcd_access=self.patroni_etcd_access,
            tls=self.ca,
        )
        with self.console.status("starting PostgreSQL under Patroni (3 members)…"):
            self.pg_cluster.start()
            self.dsn = self.pg_cluster.create_database("runnerhub")
        primary = self.pg_cluster.primary()
        self.console.print(
            f"[green]✓[/green] PostgreSQL (Patroni) at {self.pg_cluster.ports}, "
            f"primary {primary.name if primary else '?'}, synchronous replication, TLS only"
        )
        if self.pg_cluster.pgbackrest is not None:
            repos = ", ".join(
                f"repo{r.index} {r.name}{' (encrypted)' if r.encrypted else ''}"
                for r in self.pg_cluster.pgbackrest.repos
            )
            self.console.print(f"[green]✓[/green] WAL archived with pgBackRest to {repos}")

    def _start_postgres(self) -> None:
        with self.console.status("starting PostgreSQL…"):
            self.pg.init()
            self.pg.start()
            self.pg.wait_ready()
            self.dsn = self.pg.create_database("runnerhub")
        self.console.print(f"[green]✓[/green] PostgreSQL on 127.0.0.1:{self.pg.port}")

    def _start_region_b(self) -> None:
        assert self.pg_cluster is not None and self.haproxy is not None
        assert self.haproxy.postgres_port is not None
        self.region_b = StandbyRegion(
            self.state_dir / "region-b",
            self.pg_cluster,
            self.haproxy.postgres_port,
            ca=self.ca,
            etcd_users=self._etcd_users(StandbyRegion.namespace),
            etcd_access=self.patroni_etcd_access,
        )
        with self.console.status(
            "starting region B (etcd with TLS and users, a Patroni standby cluster)…"
        ):
            self.region_b.start()
        self.console.print(
            f"[green]✓[/green] region B: standby cluster at {self.region_b.pg.ports}, "
            f"streaming from region A's primary (127.0.0.1:{self.haproxy.postgres_port}), "
            "replaying repo2 when it cannot"
        )
        self._start_node("node-b1", free_port(), standby=True)

    def _choose_port(self) -> None:
        if self.port == 0:
            self.port = free_port()
        elif not _port_free(self.port):
            chosen = free_port()
            self.console.print(f"[yellow]port {self.port} is taken; using {chosen}[/yellow]")
            self.port = chosen

    def _start_podman(self) -> None:
        """The container engine runners run on: a Podman API service of the cluster's
        own (its storage under the state directory), with the runner image."""
        self.podman = LocalPodman(self.state_dir / "podman")
        with self.console.status("starting Podman's API service…"):
            self.podman.start()
        if not self.podman.has_image(RUNNER_IMAGE):
            rootfs = REPO_ROOTFS if REPO_ROOTFS.exists() else self.state_dir / "runner-rootfs.tar"
            if not rootfs.exists():
                with self.console.status("making the runner image from Debian's packages…"):
                    build_runner_rootfs(rootfs)
            self.podman.build_runner_image(rootfs)
        self.console.print(f"[green]✓[/green] Podman at {self.podman.endpoint}: {RUNNER_IMAGE}")

    def _runs_on(self) -> dict[str, Any]:
        """A demo pool's backend and its settings."""
        if self.podman is None:
            return {"process": self.runners.process(stop_grace_s=5)}
        return {
            "backend": "container",
            "container": {
                "image": RUNNER_IMAGE,
                "endpoint": self.podman.endpoint,
                "network": "host",  # the simulated GitHub listens on this host's loopback
                "command": ["python3", RUNNER_SCRIPT, "--idle-timeout", "600"],
                "cpus": 0.5,
                "memory_mb": 256,
                "read_only": True,
                "stop_timeout_s": 5,
            },
        }

    def _start_redis(self) -> None:
        # TLS only (the local CA), and an ACL user for the nodes (NODE_ACL).
        self.redis = LocalRedis(
            self.state_dir / "redis",
            tls=self.ca,
            users={REDIS_NODE_USER: self.secrets.redis_node_password},
        )
        with self.console.status("starting Redis (primary, replica, 3 Sentinels)…"):
            self.redis.start()
        host, port = self.redis.primary()
        self.console.print(
            f"[green]✓[/green] Redis primary {host}:{port}, Sentinels at "
            f"{', '.join(f'{h}:{p}' for h, p in self.redis.sentinels)}"
        )

    def _node_service(self, name: str, config: Path) -> Service:
        return Service(
            name,
            [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(config)],
            self.logs / f"{name}.log",
        )

    def _start_node(self, name: str, port: int, standby: bool = False) -> None:
        """A node of region A (behind HAProxy), or with `standby` region B's."""
        node = self._node_service(name, self._write_config(name, port, standby=standby))
        urls = self.standby_urls if standby else self.node_urls
        with self.console.status(f"starting RunnerHub {name}…"):
            node.start()
            self.services.append(node)
            (self.standby_services if standby else self.node_services).append(node)
            urls[name] = f"http://127.0.0.1:{port}"
            # A standby is never ready for deliveries (/readyz says "standby"): it lives.
            probe = "livez" if standby else "readyz"
            self._wait_http(f"{urls[name]}/{probe}", node, f"{name} to answer /{probe}")
        where = " (region B, standing by)" if standby else ""
        self.console.print(f"[green]✓[/green] RunnerHub {name}{where} at {urls[name]}")

    def _start_haproxy(self) -> None:
        members = self.pg_cluster.members if self.pg_cluster else []
        pem = self.ca.issue("haproxy").bundle(self.state_dir / "tls" / "haproxy.pem")
        self.haproxy = LocalHAProxy(
            self.state_dir / "haproxy",
            frontend_port=self.port,
            stats_port=self.haproxy_stats_port,
            postgres_members=[(m.name, "127.0.0.1", m.pg_port, m.api_port) for m in members],
            tls=TlsFront(self.tls_port, pem, redirect=False),
            agent_ports=self.agent_ports,
        )
        with self.console.status("starting HAProxy…"):
            self.haproxy.start(
                [(n, "127.0.0.1", int(u.rsplit(":", 1)[1])) for n, u in self.node_urls.items()]
            )
            self._wait_http(
                f"{self.api_url}/readyz",
                self.node_services[0],
                "HAProxy to route to a ready node",
            )
        self.console.print(
            f"[green]✓[/green] HAProxy at {self.api_url} and "
            f"https://127.0.0.1:{self.tls_port} (CA: {self.ca.cert})"
        )
        if self.haproxy.postgres_port:
            self.console.print(
                f"[green]✓[/green] PostgreSQL primary via HAProxy at "
                f"127.0.0.1:{self.haproxy.postgres_port}"
            )

    def heal(self, timeout_s: float = 60.0) -> None:
        """Make the cluster whole after injected faults: resume paused nodes, restart dead
        nodes and etcd members, then wait for a leader and every node taking part."""
        if self.etcd is not None:
            for m in self.etcd.members:
                if m.alive():
                    m.kill(signal.SIGCONT)
                else:
                    m.start()
            self.etcd.wait_healthy(timeout_s)
        for svc in self.node_services:
            if svc.alive():
                svc.kill(signal.SIGCONT)
                continue
            svc.start()
            self._wait_http(f"{self.node_urls[svc.name]}/readyz", svc, f"{svc.name} to be ready")
        if self.ha:
            wait_until_sync(self.leader, timeout_s, "a leader", interval_s=0.1)
            wait_until_sync(self._all_nodes_healthy, timeout_s, "every node", interval_s=0.1)

    def _all_nodes_healthy(self) -> bool:
        try:
            r = httpx.get(
                f"{self.api_url}/api/v1/cluster",
                timeout=2,
                headers={"Authorization": f"Bearer {self.secrets.admin_token}"},
            )
            nodes = r.json()["nodes"] if r.status_code == 200 else []
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return sum(bool(n["healthy"]) for n in nodes) == len(self.node_services)

    def leader(self) -> str | None:
        """The elected leader's node id, as the cluster reports it."""
        try:
            r = httpx.get(
                f"{self.api_url}/api/v1/cluster",
                timeout=2,
                headers={"Authorization": f"Bearer {self.secrets.admin_token}"},
            )
            return str(r.json()["leader"]) if r.status_code == 200 and r.json()["leader"] else None
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def _start_sim(self) -> str:
        ready = self.state_dir / "github-sim.ready"
        ready.unlink(missing_ok=True)
        sim = Service(
            "github-sim",
            [
                sys.executable,
                "-m",
                "runnerhub.cli.main",
                "github-sim",
                "--port",
                "0",
                "--webhook-url",
                self.webhook_url,
                *(("--webhook-ca", str(self.ca.cert)) if self.ha else ()),
                "--org",
                ORG,
                *[a for r in REPOS for a in ("--repo", r)],
                "--state-file",
                str(self.state_dir / "github-sim.json"),
                "--ready-file",
                str(ready),
                *self.sim_args,
            ],
            self.logs / "github-sim.log",
        )
        sim.start(
            env={
                "RUNNERHUB_SIM_WEBHOOK_SECRET": self.secrets.webhook_secret,
                "RUNNERHUB_SIM_PATS": self.secrets.github_token,
            }
        )
        self.services.append(sim)
        wait_ready(ready.exists, 30, "the GitHub simulator", error=RuntimeError, watch=[sim])
        port = json.loads(ready.read_text())["port"]
        return f"http://127.0.0.1:{port}"

    def _write_config(self, name: str, port: int, standby: bool = False) -> Path:
        config = self._node_config(name, port)
        if self.ha and not standby:  # HAProxy's agent check: the leader takes ~no deliveries
            config["node"]["lb_agent_port"] = self.agent_ports.setdefault(name, free_port())
        if standby:
            assert self.region_b is not None
            config["node"]["role"] = "standby"
            config["node"]["runner_state_dir"] = str(self.state_dir / name / "runners")
            config["database"] = {"dsn": self.region_b.dsn(), "standby_lag_alert_s": 60}
            config["health"] = {"patroni_urls": [m.api_url for m in self.region_b.pg.members]}
            # Region B's own etcd: its leaders are elected there once it is promoted. TLS
            # from the same CA and the same users as region A's.
            config["ha"] = {**config["ha"], "etcd_endpoints": self.region_b.etcd.endpoints}
            for section in ("redis", "backup"):  # region A's: not region B's to use
                config.pop(section, None)
        path = self.state_dir / f"{name}.yaml"
        write_node_config(path, config)
        return path

    def _node_config(self, name: str, port: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "node": {
                "id": name,
                "host": "127.0.0.1",
                "port": port,
                "state_dir": str(self.state_dir / name),
                # Shared by every node here, so whichever leads adopts every runner.
                "runner_state_dir": str(self.state_dir / "runners"),
            },
            "database": {"dsn": self.dsn},
            "webhook": {"secrets": [self.secrets.webhook_secret]},
            "github": {
                "api_url": self.sim_url,
                "auth": {"token": self.secrets.github_token},
                "organizations": [ORG],
                "hooks": [{"organization": ORG, "hook_id": 1}],
            },
            "pools": [{**p, **self._runs_on()} for p in DEMO_POOLS],
            "api_tokens": [
                {"name": "admin", "token": self.secrets.admin_token, "role": "admin"},
                {"name": "reader", "token": self.secrets.read_token, "role": "read"},
            ],
            "scheduler": {"tick_s": 2},
            "janitor": {"interval_s": 2},
            "reconciler": {"interval_s": 15},
            "log": {"level": "info", "format": "json"},
        }
        if self.etcd is not None:
            config["ha"] = {
                "etcd_endpoints": self.etcd.endpoints,
                "heartbeat_s": 0.5,
                "key_prefix": ETCD_PREFIX,
                "etcd_ca_file": str(self.ca.cert),
                "etcd_username": ETCD_NODE_USER,
                "etcd_password": self.secrets.etcd_runnerhub_password,
            }
        if self.ha:  # HAProxy forwards for its clients: the failed-auth limit sees them
            config["api"] = {"trusted_proxies": ["127.0.0.1/32"]}
        if self.redis is not None:
            config["redis"] = {
                "sentinels": [f"{h}:{p}" for h, p in self.redis.sentinels],
                "master_name": self.redis.master_name,
                "username": REDIS_NODE_USER,
                "password": self.secrets.redis_node_password,
                "sentinel_password": self.redis.password,  # the Sentinels' requirepass
                "ca_file": str(self.ca.cert),
                "check_s": 1,
            }
        health: dict[str, Any] = {}
        if self.pg_cluster is not None:  # /health reports every PostgreSQL member
            health["patroni_urls"] = [m.api_url for m in self.pg_cluster.members]
        if self.haproxy_stats_port:  # and HAProxy's backends
            health["haproxy_stats_urls"] = [f"http://127.0.0.1:{self.haproxy_stats_port}/stats"]
        if health:
            config["health"] = health
        if self.pg_cluster is not None and self.pg_cluster.pgbackrest is not None:
            config["backup"] = self._backup_settings(self.pg_cluster.pgbackrest)
        for section, value in self.overrides.items():
            config[section] = (
                {**config.get(section, {}), **value} if isinstance(value, dict) else value
            )
        return config

    def _backup_settings(self, b: LocalPgBackRest) -> dict[str, Any]:
        """The nodes' `backup` section: the demo's schedule is minutes, not days."""
        user = SERVICE_USER if os.geteuid() == 0 else None
        minutes = {"full": 60, "diff": 20, "incr": 5, "verify": 10, "restore_test": 30}
        schedule = {f"{k}_every_s": v * 60.0 for k, v in minutes.items()}
        settings = b.node_settings(user)
        settings["repos"] = [{**r, **schedule} for r in settings["repos"]]
        settings["restore_test_dir"] = str(b.root / "restore-test")
        return settings

    def _region_b_backup(self) -> dict[str, Any] | None:
        """Region B's nodes' `backup` section once it is active: its own pgBackRest, into
        the one repository it has (none where the nodes' backups are turned off)."""
        if self.region_b is None or self.overrides.get("backup", {}).get("enabled") is False:
            return None
        return self._backup_settings(self.region_b.pgbackrest)

    def _wait_http(self, url: str, svc: Service, what: str, timeout_s: float = 60) -> None:
        """Until `url` answers 200; `svc` exiting meanwhile fails at once, with its log."""

        wait_ready(
            lambda: answers_ok(url),
            timeout_s,
            what,
            error=RuntimeError,
            watch=[svc],
            interval_s=0.1,
        )

    def _write_cluster_file(self) -> None:
        info = {
            "state_dir": str(self.state_dir),
            "mode": "ha" if self.ha else "single",
            "config_files": {
                n: str(self.state_dir / f"{n}.yaml") for n in [*self.node_urls, *self.standby_urls]
            },
            "api_url": self.api_url,
            "dashboard_url": self.dashboard_url,
            "node_urls": self.node_urls,
            "etcd_endpoints": self.etcd.endpoints if self.etcd else [],
            # etcd speaks TLS (this CA) and has users: Patroni's, for `dr restore`.
            "etcd_ca_file": str(self.ca.cert) if self.etcd else None,
            "etcd_patroni_password": self.secrets.etcd_patroni_password if self.etcd else None,
            "haproxy_stats_url": self.haproxy.stats_url if self.haproxy else None,
            "webhook_url": self.webhook_url,
            "ca_file": str(self.ca.cert) if self.ha else None,
            "admin_token": self.secrets.admin_token,
            "read_token": self.secrets.read_token,
            "webhook_secret": self.secrets.webhook_secret,
            "github_sim_url": self.sim_url,
            "github_token": self.secrets.github_token,
            "database_dsn": self.dsn,
            "postgres_primary_endpoint": (
                f"127.0.0.1:{self.haproxy.postgres_port}"
                if self.haproxy and self.haproxy.postgres_port
                else None
            ),
            # What `runnerhub chaos` and `runnerhub cluster status` need to find each part.
            "patroni": {
                m.name: {
                    "api_url": m.api_url,
                    "address": m.address,
                    "config": str(m.config_file),
                    "data_dir": str(m.data_dir),
                }
                for m in (self.pg_cluster.members if self.pg_cluster else [])
            },
            "backups": self._backups_info(),
            "container_engine": self.podman.endpoint if self.podman else None,
            "region_b": (
                self.region_b.describe(self.standby_urls, self._region_b_backup())
                if self.region_b
                else None
            ),
            "redis": self._redis_info(),
            "pids": {
                **({"postgres": self.pg.pid()} if not self.pg_cluster else {}),
                **(
                    {f"patroni-{m.name}": m.pid for m in self.pg_cluster.members}
                    if self.pg_cluster
                    else {}
                ),
                **{s.name: s.pid for s in self.services},
                **(
                    {f"etcd-{i}": m.pid for i, m in enumerate(self.etcd.members)}
                    if self.etcd
                    else {}
                ),
                **({"haproxy": self.haproxy.pid} if self.haproxy else {}),
                **(self._region_b_pids() if self.region_b else {}),
                **(self.redis.pids() if self.redis else {}),
            },
            "started_at": time.time(),
        }
        write_private(self.state_dir / "cluster.json", json.dumps(info, indent=2))

    def _redis_info(self) -> dict[str, Any] | None:
        if self.redis is None:
            return None
        return {
            "master_name": self.redis.master_name,
            "password": self.redis.password,
            "ca_file": str(self.ca.cert) if self.redis.tls else None,
            "sentinels": self.redis.sentinels,
            "processes": {
                name: {"address": f"{p.address[0]}:{p.address[1]}", "config": str(p.config_file)}
                for name, p in self.redis.processes.items()
            },
        }

    def _backups_info(self) -> dict[str, Any] | None:
        b = self.pg_cluster.pgbackrest if self.pg_cluster else None
        if b is None:
            return None
        return {
            "config_path": str(b.config_path),
            "log_path": str(b.log_path),
            "repos": {r.name: {"index": r.index, "path": str(r.path)} for r in b.repos},
            "cipher_pass_file": str(b.secrets_file),  # the path only, never the pass
        }

    def _region_b_pids(self) -> dict[str, int | None]:
        assert self.region_b is not None
        b = self.region_b
        return {
            **{f"region-b-patroni-{m.name}": m.pid for m in b.pg.members},
            **{f"region-b-etcd-{i}": m.pid for i, m in enumerate(b.etcd.members)},
        }

    # -- demo workload ---------------------------------------------------------------------

    def enqueue_demo(self) -> list[int]:
        """Enqueue the demo jobs once per state directory; return every demo job id."""
        marker = self.state_dir / "demo-jobs.json"
        if marker.exists():
            return list(json.loads(marker.read_text()))
        rng = random.Random(7)
        labels, weights = zip(*DEMO_LABELS, strict=True)
        ids: list[int] = []
        with httpx.Client(base_url=self.sim_url, timeout=10) as sim:
            for i in range(self.demo_jobs):
                r = sim.post(
                    "/_sim/jobs",
                    json={
                        "repository": REPOS[i % len(REPOS)],
                        "labels": rng.choices(labels, weights)[0],
                        "duration_s": round(rng.uniform(1.0, 4.0), 1),
                        "count": 1,
                        "workflow_name": "demo",
                    },
                )
                r.raise_for_status()
                ids.extend(j["id"] for j in r.json()["jobs"])
        write_private(marker, json.dumps(ids))
        return ids

    def demo_progress(self, ids: list[int]) -> tuple[int, int, int]:
        """(completed, self-hosted demo jobs, jobs run more than once) from the simulator."""
        with httpx.Client(base_url=self.sim_url, timeout=5) as sim:
            jobs = [j for j in sim.get("/_sim/jobs").json()["jobs"] if j["id"] in set(ids)]
        ours = [j for j in jobs if "ubuntu-latest" not in j["labels"]]
        done = sum(1 for j in ours if j["status"] == "completed")
        doubles = sum(1 for j in ours if len(j.get("executions", [])) > 1)
        return done, len(ours), doubles

    # -- watch and stop --------------------------------------------------------------------

    def banner(self) -> Panel:
        runners = (
            f"as {self.runners.user}, in {self.runners.work_dir}"
            if self.runners.user
            else "as you: not isolated (run as root for a runner user of their own)"
        )
        ha = ""
        if self.ha:
            ha = (
                f"  nodes       {', '.join(self.node_urls)} behind HAProxy; leader: "
                f"{self.leader() or '(electing)'}\n"
                f"  HAProxy     stats {self.haproxy.stats_url if self.haproxy else '-'}\n"
            )
        if self.region_b is not None:
            ha += (
                f"  region B    {', '.join(f'{n} {u}' for n, u in self.standby_urls.items())} "
                "standing by (its /api/v1/cluster: lag)\n"
            )
        return Panel.fit(
            f"[b]RunnerHub is up[/b]  (state: {self.state_dir})\n"
            f"{ha}"
            f"  dashboard   {self.dashboard_url}\n"
            f"  API         {self.api_url}/api/v1   docs: {self.api_url}/docs\n"
            f"  webhooks    {self.webhook_url}\n"
            f"  metrics     {self.api_url}/metrics\n"
            f"  GitHub sim  {self.sim_url}\n"
            f"  admin token {self.secrets.admin_token}\n"
            f"  cluster     {self.state_dir / 'cluster.json'}\n"
            f"  runners     {runners}\n"
            "Ctrl-C stops everything; `runnerhub up` again resumes.",
            title="runnerhub up",
        )

    def watch(self, ids: list[int], exit_after_demo: bool, summary: StatusView) -> int:
        """Show the banner, `summary` of the API and the demo's progress until stopped (or
        until the demo completes, with `exit_after_demo`); the exit status."""
        headers = {"Authorization": f"Bearer {self.secrets.admin_token}"}
        with (
            httpx.Client(headers=headers, timeout=5) as api,
            Live(
                console=self.console, refresh_per_second=2, transient=False, auto_refresh=False
            ) as live,
        ):
            while not self.stopping.is_set():
                if not self.supervise():
                    return 1
                self._serve_request()
                api.base_url = self.serving_url()  # region B's node once a drill took A down
                try:
                    done, total, doubles = self.demo_progress(ids)
                    line = f"demo: {done}/{total} self-hosted jobs completed, {doubles} run twice"
                    live.update(Group(self.banner(), summary(api), line), refresh=True)
                except httpx.HTTPError as exc:
                    live.update(Group(self.banner(), f"(waiting for the API: {exc})"), refresh=True)
                    done, total, doubles = 0, 1, 0
                if exit_after_demo and total and done == total:
                    break
                self.stopping.wait(1.0)
        if exit_after_demo and not self.stopping.is_set():
            if doubles:
                self.console.print(f"[red]demo: {doubles} jobs ran twice[/red]")
                return 1
            self.console.print(f"[green]demo complete: {done} jobs, each run once[/green]")
        return 0

    # -- supervision -------------------------------------------------------------------

    def _processes(self) -> list[tuple[str, Callable[[], bool], Callable[[], None]]]:
        """Every process `up` keeps running: (name, alive, start again)."""
        out: list[tuple[str, Callable[[], bool], Callable[[], None]]] = [
            (s.name, s.alive, s.start) for s in self.standby_services
        ]
        if self.region_b is not None:
            b = self.region_b
            out += [(f"region-b-etcd-{i}", m.alive, m.start) for i, m in enumerate(b.etcd.members)]
            out += [
                (f"region-b-patroni-{m.name}", m.alive, functools.partial(b.pg.start_member, m))
                for m in b.pg.members
            ]
        if self._region_a_state() == "lost":
            return out  # a drill took region A down: it stays down
        out += [(s.name, s.alive, s.start) for s in self.node_services]
        if self.etcd is not None:
            out += [(f"etcd-{i}", m.alive, m.start) for i, m in enumerate(self.etcd.members)]
        if self.pg_cluster is not None:
            pg = self.pg_cluster
            out += [
                (f"patroni-{m.name}", m.alive, functools.partial(pg.start_member, m))
                for m in pg.members
            ]
        else:
            out.append(("postgres", self.pg.running, self.pg.start))
        if self.redis is not None:
            redis = self.redis
            out += [
                (name, p.alive, functools.partial(redis.restart, name))
                for name, p in redis.processes.items()
            ]
        if self.podman is not None:
            out.append(("podman", self.podman.alive, self.podman.start))
        return out

    def supervise(self) -> bool:
        """Start again what exited (a crash, `runnerhub chaos kill`), as systemd would: after
        a growing delay, and not a process that keeps exiting (`dev.cluster.supervise`). False
        when the cluster cannot go on: the simulator, which stands in for GitHub, is gone."""
        if not self._changing.acquire(blocking=False):
            return True  # regions are changing roles: their processes are being restarted
        try:
            return self._supervise()
        finally:
            self._changing.release()

    def _supervise(self) -> bool:
        nodes = [*self.node_services, *self.standby_services]
        sim = [s for s in self.services if s not in nodes and not s.alive()]
        if sim:
            self.console.print(f"[red]{', '.join(s.name for s in sim)} exited; stopping[/red]")
            return False
        now = time.monotonic()
        restarted = False
        for name, alive, start in self._processes():
            if alive():
                continue
            decision = self.restarts.decide(name, now)
            if decision == "give_up" and name not in self._reported:
                self._reported.add(name)
                self.console.print(
                    f"[red]{name} keeps exiting; not restarted again (see {self.logs})[/red]"
                )
            if decision != "restart":
                continue
            try:
                start()
            except START_ERRORS as exc:
                self.console.print(f"[red]{name} exited and did not start again: {exc}[/red]")
                continue
            restarted = True
            self.console.print(
                f"[yellow]{name} exited; started again "
                f"({self.restarts.restarts(name)} time(s) in the last minute)[/yellow]"
            )
        if restarted:
            self._write_cluster_file()  # `runnerhub chaos` and `cluster status` read the pids
        return True

    def stop(self) -> None:
        self.console.print("stopping…")
        # All at once, each with its own grace period: one after the other, the nodes' and
        # then the other servers' shutdowns added up (15 s of a chaos test's teardown).
        nodes = [s for s in self.services if s.name.startswith("node")]
        stop_together(nodes, Service.STOP_TIMEOUT_S)
        self._stop_runner_processes()
        if self.podman is not None:
            self.podman.stop_containers()  # the runners; the image stays for `up` again
            self.podman.stop()
        stop_together(self.services, Service.STOP_TIMEOUT_S)
        if self.region_b is not None:
            self.region_b.stop()  # it follows region A: it goes first
        if self.haproxy is not None:
            self.haproxy.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.pg_cluster is not None:
            self.pg_cluster.stop()  # before etcd: Patroni hands its key back on the way out
        if self.etcd is not None:
            self.etcd.stop()
        try:
            self.pg.stop()
        except PostgresError as exc:
            self.console.print(f"[yellow]{exc}[/yellow]")
        self.console.print(f"stopped; `runnerhub up` resumes from {self.state_dir}")

    def serving_url(self) -> str:
        """Where the API answers: HAProxy, or region B's node once it took over."""
        if self.standby_urls and self._region_a_state() != "active":
            return next(iter(self.standby_urls.values()))
        return self.api_url

    def switch_back(self, timeout_s: float = 180.0) -> PromotionReport:
        """The active role back to region A, region B its standby again."""
        with self._changing:
            return self._switch_back(timeout_s)

    def _switch_back(self, timeout_s: float) -> PromotionReport:
        """After `rejoin_region_a`: the active role moves back to region A, planned, and
        region B stands by again — the drill ends where it began. Region B's node stops
        first (nothing writes in region B), region A replays all region B wrote, then is
        promoted (a new era above region B's), its nodes run active behind HAProxy again,
        GitHub's hook points at HAProxy, and region B is copied afresh from region A."""
        b, pg, etcd = self.region_b, self.pg_cluster, self.etcd
        if self._region_a_state() != "standby" or b is None or pg is None or etcd is None:
            raise RuntimeError("region A does not stand by for region B: nothing to switch")
        for svc in self.standby_services:
            svc.stop()  # a planned switch: region B writes nothing from here on
        wait_until_sync(lambda: caught_up(b.dsn(), pg.dsn("runnerhub")), 60, "region A")
        node = self.node_services[0]
        settings = load_settings(self.state_dir / f"{node.name}.yaml")
        report = asyncio.run(promote(settings, self.webhook_url, force=True))
        pg.standby_of = None
        pg.synchronous_mode = True
        self.dsn = pg.dsn("runnerhub")
        pg.patch_config({"synchronous_mode": True})
        for svc in self.node_services:  # their whole configuration again, active
            svc.stop()
            self._write_config(svc.name, int(self.node_urls[svc.name].rsplit(":", 1)[1]))
            svc.start()
        assert self.haproxy is not None
        self.haproxy.start()
        clear = functools.partial(b.etcd.delete_prefix, b.pg.namespace)
        b.pg.rebuild_as_standby(b.follow(), clear, timeout_s)
        for svc in self.standby_services:
            stand_by_local_node(
                self.state_dir / f"{svc.name}.yaml",
                b.dsn(),
                [m.api_url for m in b.pg.members],
            )
            svc.start()
        (self.state_dir / STANDBY_FLAG).unlink()
        self._write_cluster_file()
        return report

    def _serve_request(self) -> None:
        """What another process (`runnerhub dr failback`, `dr restore --in-place`) asked
        for, done; the answer written for it (`dev.cluster.asking`)."""
        request = take_request(self.state_dir)
        if request is None:
            return
        action = request.get("action")
        began = time.monotonic()
        outcome: dict[str, Any] = {"ok": True}
        try:
            if action == "switch_back":
                with self.console.status("the active role moves back to region A…"):
                    self.switch_back()
                done = "region A is active again, region B its standby"
            elif action == "rejoin":
                with self.console.status("region A rejoins as region B's standby…"):
                    self.rejoin_region_a()
                done = "region A stands by for region B"
            elif action == "restore_in_place":
                target = Target(time=_time(request.get("time")), lsn=request.get("lsn"))
                with self.console.status(f"restoring in place to {target.describe()}…"):
                    outcome |= self.restore_in_place(target, int(request.get("repo", 1)))
                done = f"the database is as it was at {target.describe()}"
            else:
                raise RuntimeError(f"unknown request {action!r}")
            outcome["seconds"] = round(time.monotonic() - began, 1)
            self.console.print(f"[green]✓[/green] {done}")
        except (*START_ERRORS, Timeout, TargetError) as exc:
            outcome = {"ok": False, "error": str(exc)}
            self.console.print(f"[red]{action} did not complete: {exc}[/red]")
        answer(self.state_dir, outcome)

    def restore_in_place(self, target: Target, repo: int) -> dict[str, Any]:
        """`runnerhub dr restore --in-place`: region A's database as it was at `target`,
        under the same DSN; the nodes go on running (they spool what they cannot write
        meanwhile), and region B, which replayed past the target, is copied afresh."""
        pg, etcd = self.pg_cluster, self.etcd
        if pg is None or etcd is None or pg.pgbackrest is None:
            raise RuntimeError("restoring in place needs `runnerhub up --ha` (with backups)")
        if self._region_a_state() != "active":
            raise RuntimeError("region A is not the active region: restore where it is")
        with self._changing:
            done = restore_in_place(
                pg, functools.partial(etcd.delete_prefix, pg.namespace), target, repo
            )
            if self.region_b is not None:
                b = self.region_b
                clear = functools.partial(b.etcd.delete_prefix, b.pg.namespace)
                b.pg.rebuild_as_standby(b.follow(), clear)
            self._write_cluster_file()
        return {
            "base": done.base.label,
            "kept": [str(k) for k in done.kept],
            "archived": done.archived,
        }

    def _region_a_state(self) -> str:
        """active; lost (a drill took it down: nothing of it is started again); standby
        (it came back as region B's standby: `rejoin_region_a`)."""
        if (self.state_dir / LOST_FLAG).exists():
            return "lost"
        return "standby" if (self.state_dir / STANDBY_FLAG).exists() else "active"

    def rejoin_region_a(self, timeout_s: float = 180.0) -> None:
        """Region A back as region B's standby (`runnerhub dr failback`)."""
        with self._changing:
            self._rejoin_region_a(timeout_s)

    def _rejoin_region_a(self, timeout_s: float) -> None:
        """After region B took over: region A comes back as its standby (docs/dr.md). Its
        etcd starts again with Patroni's keys cleared, its database is copied afresh from
        region B's primary, and its nodes stand by; then `up` looks after it again."""
        b = self.region_b
        if self._region_a_state() != "lost" or b is None or self.pg_cluster is None:
            raise RuntimeError("region A is not lost: nothing to rejoin")
        assert self.etcd is not None
        for m in self.etcd.members:
            m.start()
        self.etcd.wait_healthy(timeout_s)
        primary = b.pg.primary()
        if primary is None:
            raise RuntimeError("region B has no primary to copy from")
        self.pg_cluster.rebuild_as_standby(
            StandbyOf("127.0.0.1", primary.pg_port),
            functools.partial(self.etcd.delete_prefix, self.pg_cluster.namespace),
            timeout_s,
        )
        self.dsn = self.pg_cluster.dsn("runnerhub")
        for svc in self.node_services:
            path = self.state_dir / f"{svc.name}.yaml"
            stand_by_local_node(path, self.dsn, [m.api_url for m in self.pg_cluster.members])
            svc.start()
        write_private(self.state_dir / STANDBY_FLAG, datetime.now(UTC).isoformat())
        (self.state_dir / LOST_FLAG).unlink()
        self._write_cluster_file()

    def _stop_runner_processes(self) -> None:
        """Runners run in their own sessions so they outlive a node crash; stop them here
        (region A's and region B's: each region runs its own)."""
        pids = []
        dirs = [
            self.state_dir / "runners",
            *(self.state_dir / n / "runners" for n in self.standby_urls),
        ]
        for pid in (p for d in dirs for p in running_runner_pids(d)):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)
                pids.append(pid)
        # They are not our children: wait until they are gone, then kill what lingers.
        try:
            wait_until_sync(lambda: not any(pid_running(p) for p in pids), 10, "runners to stop")
        except Timeout:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


def run_local_cluster(
    state_dir: Path,
    port: int,
    demo_jobs: int,
    exit_after_demo: bool,
    ha: bool = False,
    nodes: int = 3,
    *,
    summary: StatusView,
    dr: bool = False,
    backend: str = "process",
) -> int:
    """`runnerhub up`; `summary` renders the live tables (the CLI's `status` view, passed in
    so that this tooling does not import the CLI that starts it)."""
    cluster = LocalCluster(
        state_dir,
        port=port,
        demo_jobs=demo_jobs,
        ha=ha,
        nodes=nodes if ha else 1,
        dr=dr,
        backend=backend,
    )
    signal.signal(signal.SIGTERM, lambda *_: cluster.stopping.set())
    # Ctrl-C, even when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cluster.start()
        ids = cluster.enqueue_demo()
        return cluster.watch(ids, exit_after_demo, summary)
    except KeyboardInterrupt:
        return 0
    except (
        RuntimeError,
        PostgresError,
        PatroniError,
        RedisError,
        EtcdError,
        HAProxyError,
        PodmanError,
        Timeout,
    ) as exc:
        cluster.console.print(f"[red]runnerhub up: {exc}[/red]")
        return 1
    finally:
        cluster.stop()
