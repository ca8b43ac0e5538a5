"""Settings: one YAML file plus ``RUNNERHUB_*`` environment overrides.

pydantic-settings does the validation and the environment merging (nested fields use
``__``: ``RUNNERHUB_DATABASE__DSN``). Environment variables win over the file, so a
secret can stay out of the file. Every error names the file, the field and the problem.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "RUNNERHUB_"
MAX_WEBHOOK_BODY = 5 * 1024 * 1024
MiB = 1024 * 1024
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


class ConfigError(Exception):
    """A configuration problem, worded for the operator (no stack trace needed)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSettings(_Strict):
    id: str = Field(default_factory=socket.gethostname, min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    state_dir: Path = Path("/var/lib/runnerhub")
    # Where the process backend keeps its runner records (default: <state_dir>/process).
    # Nodes on one host share it, so whichever of them leads adopts every runner.
    runner_state_dir: Path | None = None
    # `standby`: a node of a standby region (docs/dr.md). It answers /health and the API
    # read-only from the standby region's database, takes no webhooks, runs no control
    # loops and takes no part in any election, until `runnerhub dr promote`.
    role: Literal["active", "standby"] = "active"
    # Connections and requests served at once; past it uvicorn answers 503 at once, so a
    # flood of slow clients cannot exhaust memory and file descriptors.
    max_connections: int = Field(default=1000, ge=10)
    # HAProxy's agent check: on this port (on `host`) the node tells HAProxy what share of
    # the deliveries to send it, 1% while it leads and 100% otherwise (lb/agent.py). Off by
    # default; deploy/haproxy.cfg asks every node on 8081.
    lb_agent_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _agent_port(self) -> NodeSettings:
        if self.lb_agent_port is not None and self.lb_agent_port == self.port:
            raise ValueError("lb_agent_port must differ from port (the API's)")
        return self

    @property
    def standby(self) -> bool:
        return self.role == "standby"

    @property
    def url(self) -> str:
        """How other nodes and operators reach this one."""
        return self.public_url or f"http://{self.host}:{self.port}"


class DatabaseSettings(_Strict):
    # libpq connection string or URI; several hosts are allowed (libpq multi-host).
    dsn: SecretStr
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    statement_timeout_ms: int = Field(default=5000, ge=0)
    # A session that sits inside a transaction this long is cut off by PostgreSQL. Nothing
    # here keeps a transaction open while it waits for something else, so only a frozen or
    # partitioned node hits it, and its locks (the epoch check's FOR SHARE) must not make a
    # new leader wait for longer than this.
    idle_in_transaction_timeout_ms: int = Field(default=2000, ge=0)
    # A standby region's database this far behind the active region is degraded.
    standby_lag_alert_s: float = Field(default=60.0, gt=0)
    # How often a node reads the primary's replication state (pg_stat_replication), and
    # from what replay lag a replica is flagged as behind.
    replication_check_s: float = Field(default=5.0, gt=0)
    replica_lag_alert_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _sizes(self) -> DatabaseSettings:
        if self.pool_max_size < self.pool_min_size:
            raise ValueError("pool_max_size must be at least pool_min_size")
        return self


class WebhookSettings(_Strict):
    # Several secrets make rotation possible: add the new one, switch GitHub, drop the old.
    secrets: list[SecretStr] = Field(min_length=1)
    max_body_bytes: int = Field(default=MAX_WEBHOOK_BODY, ge=1024, le=MAX_WEBHOOK_BODY)
    # Group commit: deliveries arriving together share a transaction. Fewer writers make
    # bigger batches (less CPU per delivery); more overlap round trips.
    batch_writers: int = Field(default=1, ge=1, le=32)
    max_batch: int = Field(default=100, ge=1, le=1000)
    # How long a delivery waits for PostgreSQL before it is answered from the spool instead
    # (503 without a spool). A hung primary, a frozen host or a lost synchronous standby then
    # costs a delivery this much, not GitHub's 10 s timeout; a slow commit that lands after
    # all is a duplicate of the spooled copy, recognised by its GUID when it is replayed.
    db_wait_s: float = Field(default=0.1, gt=0, le=10)
    # A body not received whole by then is refused (408): slow uploads hold nothing for long.
    body_timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("secrets")
    @classmethod
    def _non_empty(cls, v: list[SecretStr]) -> list[SecretStr]:
        if any(not s.get_secret_value() for s in v):
            raise ValueError("a webhook secret must not be empty")
        return v


class SpoolSettings(_Strict):
    """The node's local journal of verified deliveries, written (and fsync'd) while
    PostgreSQL is unreachable and replayed into it when it is back."""

    enabled: bool = True
    dir: Path | None = None  # default: <node.state_dir>/spool
    # Past this much undrained data the endpoint answers 503 rather than accept more.
    max_bytes: int = Field(default=256 * MiB, ge=MiB)
    segment_bytes: int = Field(default=16 * MiB, ge=64 * 1024)  # capped at max_bytes
    drain_interval_s: float = Field(default=1.0, gt=0)


class AppAuth(_Strict):
    app_id: int = Field(gt=0)
    installation_id: int = Field(gt=0)
    private_key: SecretStr | None = None
    private_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_key(self) -> AppAuth:
        if (self.private_key is None) == (self.private_key_file is None):
            raise ValueError("give exactly one of private_key and private_key_file")
        return self

    def key_pem(self) -> str:
        if self.private_key is not None:
            return self.private_key.get_secret_value()
        assert self.private_key_file is not None
        try:
            return self.private_key_file.read_text()
        except OSError as exc:
            raise ConfigError(
                f"github.auth.app.private_key_file: cannot read {self.private_key_file}: "
                f"{exc.strerror}"
            ) from exc


class GitHubAuth(_Strict):
    token: SecretStr | None = None
    app: AppAuth | None = None

    @model_validator(mode="after")
    def _one_method(self) -> GitHubAuth:
        if (self.token is None) == (self.app is None):
            raise ValueError("give exactly one of token (a PAT) and app (a GitHub App)")
        return self


class HookRef(_Strict):
    """A webhook whose deliveries the reconciler checks (repository or organization hook)."""

    repository: str | None = None
    organization: str | None = None
    hook_id: int = Field(gt=0)

    @model_validator(mode="after")
    def _one_owner(self) -> HookRef:
        if (self.repository is None) == (self.organization is None):
            raise ValueError("give exactly one of repository and organization")
        return self


class GitHubSettings(_Strict):
    api_url: str = "https://api.github.com"
    auth: GitHubAuth
    repositories: list[str] = Field(default_factory=list)
    organizations: list[str] = Field(default_factory=list)
    # Where failed deliveries are looked up: the GitHub App's hook and/or repo/org hooks.
    app_hook_deliveries: bool = False
    hooks: list[HookRef] = Field(default_factory=list)
    timeout_s: float = Field(default=10.0, gt=0)
    # Content-creating requests (POST, PATCH, PUT, DELETE) the whole cluster makes per
    # minute, at most; GitHub's secondary limits allow 80. None: not paced.
    writes_per_minute: int | None = Field(default=None, ge=1)

    @field_validator("repositories")
    @classmethod
    def _repos(cls, v: list[str]) -> list[str]:
        for repo in v:
            if not _REPO_RE.match(repo):
                raise ValueError(f"{repo!r} is not of the form owner/name")
        return v

    @field_validator("api_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class ProcessBackendSettings(_Strict):
    # The runner command. The JIT config reaches it in the environment variable
    # ACTIONS_RUNNER_INPUT_JITCONFIG (which the Actions runner reads as --jitconfig), so it
    # never shows in `ps`; "{jitconfig}" in an argument is substituted if you insist.
    command: list[str] = Field(min_length=1)
    # The runner's whole environment besides PATH, HOME, USER, LOGNAME, LANG, LC_*, TZ and
    # the JIT config: nothing of RunnerHub's own environment reaches a runner.
    env: dict[str, str] = Field(default_factory=dict)
    stop_grace_s: float = Field(default=10.0, ge=0)
    # Run runners as this user (a name or a uid), with its groups; RunnerHub must run as
    # root to do so. Unset: as RunnerHub's own user, which gives a job everything RunnerHub
    # has (its memory, its files): use it only where every job is trusted.
    user: str | None = None
    # The runner's working directory and HOME; default: the user's home directory.
    work_dir: Path | None = None

    @field_validator("user")
    @classmethod
    def _user_exists(cls, user: str | None) -> str | None:
        if user is None:
            return None
        try:
            uid = (
                pwd.getpwuid(int(user)).pw_uid
                if user.isascii() and user.isdigit()
                else pwd.getpwnam(user).pw_uid
            )
        except KeyError:
            raise ValueError(f"no user {user!r} on this host") from None
        if os.geteuid() not in (0, uid):
            raise ValueError(
                f"running runners as {user!r} needs RunnerHub to run as root "
                f"(it runs as uid {os.geteuid()})"
            )
        return user


ENGINE_ENDPOINT = r"^(unix|tcp|ssh)://.+"


class EngineAccess(_Strict):
    """How to reach a container engine besides its endpoint: TLS client certificates for a
    tcp:// endpoint, an SSH key and known hosts for an ssh:// one."""

    # Client certificates for tcp://host:port: (ca, cert, key) file paths, all three.
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # For ssh://[user@]host[:port][/path/to/engine.sock] (default /var/run/docker.sock): the
    # key to log in with and the file of the hosts' keys (default: ssh's own, ~/.ssh). A
    # host whose key is not known is refused, never trusted on first use.
    ssh_identity: Path | None = None
    ssh_known_hosts: Path | None = None

    def _check_access(self, endpoint: str) -> None:
        given = [x is not None for x in (self.tls_ca, self.tls_cert, self.tls_key)]
        if any(given) and not all(given):
            raise ValueError("tls_ca, tls_cert and tls_key go together")
        if all(given) and not endpoint.startswith("tcp://"):
            raise ValueError("TLS client certificates are for a tcp:// endpoint")
        ssh = self.ssh_identity is not None or self.ssh_known_hosts is not None
        if ssh and not endpoint.startswith("ssh://"):
            raise ValueError("ssh_identity and ssh_known_hosts are for an ssh:// endpoint")
        if endpoint.startswith("ssh://"):
            ssh_target(endpoint)  # raises with what is wrong

    def access(self) -> dict[str, Path | None]:
        return {
            "tls_ca": self.tls_ca,
            "tls_cert": self.tls_cert,
            "tls_key": self.tls_key,
            "ssh_identity": self.ssh_identity,
            "ssh_known_hosts": self.ssh_known_hosts,
        }


@dataclass(frozen=True)
class SshTarget:
    """An ssh:// endpoint's parts: who logs in where, and the engine's socket there."""

    host: str
    port: int | None
    user: str | None
    socket: str


def ssh_target(endpoint: str) -> SshTarget:
    """ssh://[user@]host[:port][/path/to/engine.sock] in parts (ValueError if malformed)."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{endpoint!r}: the port is not a number") from None
    if not parts.hostname or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"{endpoint!r}: an ssh endpoint is ssh://[user@]host[:port][/socket]")
    return SshTarget(parts.hostname, port, parts.username, parts.path or "/var/run/docker.sock")


class EngineHostSettings(EngineAccess):
    """One runner host: a container engine's API, and how many runners it takes."""

    # unix:///path/to/docker.sock; tcp://host:port (with the TLS client certificates);
    # ssh://[user@]host[:port][/path/to/engine.sock] (the socket forwarded by OpenSSH).
    endpoint: str = Field(pattern=ENGINE_ENDPOINT)
    max_runners: int | None = Field(default=None, ge=1)  # unset: the pool's limit only

    @model_validator(mode="after")
    def _access_fits(self) -> EngineHostSettings:
        self._check_access(self.endpoint)
        return self


class ContainerBackendSettings(EngineAccess):
    """One ephemeral container per runner, through the Docker Engine API (Docker, or
    Podman's `podman system service`): docs/backends.md."""

    image: str = Field(min_length=1)
    # The engine, as for a host (below) with the access settings above.
    endpoint: str = Field(default="unix:///var/run/docker.sock", pattern=ENGINE_ENDPOINT)
    # Several runner hosts (instead of `endpoint`): each runner goes to the one with the
    # most room; one that stops answering is left alone until it answers again.
    hosts: list[EngineHostSettings] = Field(default_factory=list)
    # The runner command (default: the image's). The JIT config reaches it in the
    # environment (ACTIONS_RUNNER_INPUT_JITCONFIG), never in the command or the labels.
    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    user: str | None = None  # in the container; default: the image's
    cpus: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, ge=6)
    pids_limit: int | None = Field(default=1024, ge=1)  # a fork bomb stays in its box
    network: str = "bridge"  # the network mode: bridge, host, none, or a network's name
    read_only: bool = False  # a read-only root file system (with a tmpfs /tmp)
    # Extra bind mounts, "source:target[:ro]": none by default (each is a way out).
    mounts: list[str] = Field(default_factory=list)
    # The engine's socket inside the runner: a job could then start containers on the
    # host, as root — only for trusted jobs that build images (docs/backends.md).
    engine_socket: bool = False
    stop_timeout_s: float = Field(default=10.0, ge=0)

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, v: list[str]) -> list[str]:
        for m in v:
            parts = m.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
                raise ValueError(f"{m!r}: a mount is source:/target[:ro]")
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"{m!r}: the mode is ro or rw")
        return v

    @model_validator(mode="after")
    def _hosts(self) -> ContainerBackendSettings:
        if self.hosts and any(v is not None for v in self.access().values()):
            raise ValueError("with hosts, each host's tls_* and ssh_* settings are its own")
        engines = self.engines()  # the single endpoint's access settings are checked there
        if self.engine_socket and any(e.endpoint.startswith("tcp://") for e in engines):
            raise ValueError("engine_socket: a tcp:// engine's socket is not on its host's path")
        endpoints = [h.endpoint for h in self.hosts]
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("each runner host's endpoint once")
        return self

    def engines(self) -> list[EngineHostSettings]:
        """The runner hosts: `hosts`, or the one `endpoint`."""
        if self.hosts:
            return list(self.hosts)
        return [EngineHostSettings(endpoint=self.endpoint, **self.access())]


class PoolSettings(_Strict):
    # It names spare runners, log files and runner records: letters, digits, . _ - only.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
    labels: list[str] = Field(min_length=1)
    min_idle: int = Field(default=0, ge=0)
    max_runners: int = Field(default=10, ge=1)
    backend: Literal["process", "container"] = "process"
    process: ProcessBackendSettings | None = None
    container: ContainerBackendSettings | None = None
    runner_group_id: int = Field(default=1, ge=1)
    # Where spare (min_idle) runners register; job runners register where their job lives.
    organization: str | None = None
    repository: str | None = None

    @property
    def spare_scope(self) -> str | None:
        """Where spare runners register: "org:<name>", "repo:<owner/name>" or nowhere."""
        if self.organization:
            return f"org:{self.organization}"
        return f"repo:{self.repository}" if self.repository else None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be lowercase letters, digits and '-', at most 31 characters")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str]) -> list[str]:
        if any(not label.strip() for label in v):
            raise ValueError("labels must not be empty")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PoolSettings:
        if self.min_idle > self.max_runners:
            raise ValueError("min_idle must not exceed max_runners")
        if self.backend == "process" and self.process is None:
            raise ValueError("backend 'process' needs a 'process' section with a command")
        if self.backend == "container" and self.container is None:
            raise ValueError("backend 'container' needs a 'container' section with an image")
        if self.min_idle and not (self.organization or self.repository):
            raise ValueError("min_idle > 0 needs organization or repository to register spares")
        return self


class ApiToken(_Strict):
    name: str
    token: SecretStr
    role: Literal["read", "admin"]
    # After this instant the token is refused (401, saying it expired). Unset: no expiry.
    expires_at: AwareDatetime | None = None

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("an API token must be at least 16 characters")
        return v


class SchedulerSettings(_Strict):
    tick_s: float = Field(default=5.0, gt=0)
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    max_parallel_provisions: int = Field(default=8, ge=1)
    runner_name_prefix: str = Field(default="rh", pattern=r"^[a-z0-9-]{1,10}$")


class ReconcilerSettings(_Strict):
    interval_s: float = Field(default=60.0, gt=0)
    redeliver: bool = True
    delivery_lookback_s: float = Field(default=3 * 24 * 3600.0, gt=0)


class JanitorSettings(_Strict):
    interval_s: float = Field(default=10.0, gt=0)
    # A runner that started but never took its job is replaced after this long.
    idle_spare_ttl_s: float = Field(default=300.0, gt=0)


class RetentionSettings(_Strict):
    """How long deliveries and events are kept; the leader deletes older ones, in batches,
    every `interval_s`. None: kept for ever. A replayed body older than the deliveries'
    retention is no longer known by its hash; its job is (jobs are kept), and a completed
    job never goes back to queued."""

    deliveries_days: float | None = Field(default=30.0, gt=0)
    events_days: float | None = Field(default=90.0, gt=0)
    interval_s: float = Field(default=3600.0, gt=0)
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    # At most this many batches per table and cycle: a backlog is worked off over cycles.
    max_batches: int = Field(default=100, ge=1)


def _host_ports(v: list[str]) -> list[str]:
    for e in v:
        host, _, port = e.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()):
            raise ValueError(f"{e!r} is not host:port")
    return v


HostPorts = Annotated[list[str], AfterValidator(_host_ports)]


class RedisSettings(_Strict):
    """Redis through Sentinel, for what may be lost: cached installation tokens, the shared
    rate-limit budget, live events. No sentinels: no shared cache (everything still works)."""

    sentinels: HostPorts = Field(default_factory=list)  # host:port of each Sentinel
    master_name: str = "runnerhub"
    password: SecretStr | None = None  # the data nodes' requirepass, or `username`'s
    sentinel_password: SecretStr | None = None  # the Sentinels' own, if they have one
    # An ACL user on the data nodes (Redis 6+), e.g. one that may use only `runnerhub:*`
    # keys and channels and no admin command (docs/security.md). None: the default user.
    username: str | None = None
    # TLS to the Sentinels and the data nodes: with a CA file the client checks their
    # certificates; with a certificate and key it shows its own (`tls-auth-clients yes`).
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Short on purpose: a dead Redis must make things slower, never stuck (I7).
    socket_timeout_s: float = Field(default=0.25, gt=0, le=5)
    check_s: float = Field(default=5.0, gt=0)  # how often a node reads its replication

    @property
    def enabled(self) -> bool:
        return bool(self.sentinels)

    @model_validator(mode="after")
    def _tls(self) -> RedisSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("cert_file needs ca_file (TLS)")
        return self


class HASettings(_Strict):
    """Leader election. No etcd endpoints: a single node that is always the leader."""

    etcd_endpoints: HostPorts = Field(default_factory=list)
    key_prefix: str = Field(default="/runnerhub", pattern=r"^/[A-Za-z0-9_./-]*$")
    # etcd rounds lease TTLs to whole seconds and will not go below ~2 s by default.
    lease_ttl_s: float = Field(default=2.0, ge=1.0)
    renewals_per_ttl: int = Field(default=4, ge=2, le=20)
    safety_margin_s: float = Field(default=0.5, gt=0)
    etcd_timeout_s: float = Field(default=0.5, gt=0)
    heartbeat_s: float = Field(default=1.0, gt=0)
    # etcd's authentication: a user whose role may read and write under key_prefix
    # (docs/security.md). Without it, anyone who reaches etcd can take the leader key.
    etcd_username: str | None = None
    etcd_password: SecretStr | None = None
    # TLS to etcd: with a CA file the client checks etcd's certificate; with a certificate
    # and key it shows its own (etcd's --client-cert-auth).
    etcd_ca_file: Path | None = None
    etcd_cert_file: Path | None = None
    etcd_key_file: Path | None = None

    @model_validator(mode="after")
    def _margin(self) -> HASettings:
        if self.safety_margin_s >= self.lease_ttl_s:
            raise ValueError("safety_margin_s must be smaller than lease_ttl_s")
        if (self.etcd_username is None) != (self.etcd_password is None):
            raise ValueError("etcd_username and etcd_password go together")
        if (self.etcd_cert_file is None) != (self.etcd_key_file is None):
            raise ValueError("etcd_cert_file and etcd_key_file go together")
        if self.etcd_cert_file is not None and self.etcd_ca_file is None:
            raise ValueError("etcd_cert_file needs etcd_ca_file (TLS)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.etcd_endpoints)


class RemediationSettings(_Strict):
    """The leader's automatic fixes of common failures, each rate-limited, recorded in the
    events table and switchable off (see docs/operations.md). A runner stuck without its
    job is replaced after `janitor.idle_spare_ttl_s`."""

    enabled: bool = True
    interval_s: float = Field(default=10.0, gt=0)
    max_actions_per_hour: int = Field(default=30, ge=1)  # per action
    replace_stuck_runners: bool = True
    stop_zombie_runners: bool = True
    zombie_grace_s: float = Field(default=120.0, ge=0)  # alive this long after its job ended
    prune_logs: bool = True
    prune_below_free_fraction: float = Field(default=0.05, ge=0, lt=1)
    # A leader that cannot reach the database this long hands over to a follower that can.
    step_down_when_degraded: bool = True
    step_down_after_s: float = Field(default=10.0, gt=0)
    # A PostgreSQL replica that runs without streaming this long is rebuilt by Patroni
    # (needs health.patroni_urls).
    reinit_stalled_replicas: bool = True
    reinit_after_s: float = Field(default=120.0, gt=0)


class CircuitBreakerSettings(_Strict):
    """Breakers around the GitHub API and each runner backend: this many failures in a row
    (no answer, or a 5xx) open one; it stays open `open_s`, then lets one trial call go."""

    failure_threshold: int = Field(default=5, ge=1, le=1000)
    open_s: float = Field(default=30.0, gt=0, le=3600)


class PredictSettings(_Strict):
    """Failure forecasts from short metric histories (see docs/operations.md)."""

    enabled: bool = True
    interval_s: float = Field(default=5.0, gt=0, le=300)  # sample every signal this often
    window_s: float = Field(default=600.0, gt=0)  # the history each trend is fitted on
    min_span_s: float = Field(default=120.0, gt=0)  # no forecast from less history than this
    horizon_s: float = Field(default=3600.0, gt=0)  # forecast failures this close, not further
    min_t: float = Field(default=8.0, gt=0)  # how clearly a trend must stand above the noise
    disk_reserve_fraction: float = Field(default=0.02, ge=0, lt=1)  # "full": less free than this
    replica_lag_limit_s: float = Field(default=60.0, gt=0)
    # The share of failing GitHub calls / database connection requests that counts as down.
    error_rate_limit: float = Field(default=0.5, gt=0, le=1)
    memory_limit_bytes: int | None = Field(default=None, gt=0)  # None: cgroup limit or RAM

    @model_validator(mode="after")
    def _span(self) -> PredictSettings:
        if self.min_span_s > self.window_s:
            raise ValueError("min_span_s must not exceed window_s")
        return self


class ApiSettings(_Strict):
    """Who may read what without a token, and how long an answer may take."""

    # /docs, /redoc and /openapi.json for anyone; otherwise /openapi.json needs a read token
    # and the browsable pages are off (a map of every operation helps an attacker too).
    public_docs: bool = False
    # An API request whose answer has not started by then gets a 503 (a hung database must
    # not hold clients); a stream, once started, runs on.
    answer_within_s: float = Field(default=1.0, gt=0, le=60)
    # A source (address) whose requests carried this many unknown or expired tokens within
    # a minute gets 429 for the rest of that minute: a token cannot be guessed at speed.
    # 0: no limit.
    auth_failures_per_minute: int = Field(default=20, ge=0)
    # Load balancers whose X-Forwarded-For is believed (HAProxy's `option forwardfor`):
    # behind them, a request's source is the address they saw. Others' is never believed.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)


class BackupRepoSettings(_Strict):
    """One pgBackRest repository (`repoN` in pgbackrest.conf) and its schedule. Unset
    intervals: never. Retention is pgBackRest's own (`repoN-retention-*`)."""

    index: int = Field(ge=1, le=256)
    name: str = Field(default="", max_length=40)  # for people: "region-a", "s3-eu-west"
    full_every_s: float = Field(default=7 * 86400.0, gt=0)
    diff_every_s: float | None = Field(default=86400.0, gt=0)
    incr_every_s: float | None = Field(default=3600.0, gt=0)
    verify_every_s: float | None = Field(default=86400.0, gt=0)
    restore_test_every_s: float | None = Field(default=7 * 86400.0, gt=0)
    # A file holding this repository's cipher pass (repoN-cipher-pass): read when pgBackRest
    # runs and handed to it in its environment only; never logged, shown or copied.
    cipher_pass_file: Path | None = None
    # A posix repository's path, where this node sees it: its free space is watched (a
    # metric, /health) and no backup is started into a full one. Unset: not watched.
    path: Path | None = None


class BackupSettings(_Strict):
    """Backups with pgBackRest, run by the leader (docs/dr.md). pgbackrest.conf says where
    the database and the repositories are; RunnerHub says when."""

    enabled: bool = False
    stanza: str = Field(default="runnerhub", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    pgbackrest: str = "pgbackrest"  # the binary
    # pgBackRest's --config-path: pgbackrest.conf and conf.d/*.conf (keep cipher passes in
    # an include file there, readable by `user` only). Unset: pgBackRest's default.
    config_path: Path | None = None
    # libpq's password file for pgBackRest's connections to the members (PGPASSFILE).
    pgpass_file: Path | None = None
    # Run pgBackRest (and the restore test's PostgreSQL) as this user: it must read the
    # database files and own the repositories. RunnerHub must run as root to switch.
    user: str | None = None
    repos: list[BackupRepoSettings] = Field(
        default_factory=lambda: [BackupRepoSettings(index=1)], min_length=1
    )
    interval_s: float = Field(default=30.0, gt=0)  # how often the leader looks at what is due
    # How often the leader compares each repository's newest WAL with the primary's.
    archive_check_s: float = Field(default=60.0, gt=0)
    retry_s: float = Field(default=300.0, gt=0)  # after a failure, per repository
    timeout_s: float = Field(default=6 * 3600.0, gt=0)  # one backup, verify or restore test
    # What is due for longer than this is reported (/health degraded, an incident, alerts).
    overdue_grace_s: float = Field(default=3600.0, ge=0)
    # A watched repository (`repos[].path`) with less than this share of its file system
    # free is reported; with less than one WAL segment free it is full.
    repo_low_space: float = Field(default=0.1, ge=0, lt=1)
    # Restore tests: a scratch directory (default <state_dir>/restore-test) and PostgreSQL's
    # server binaries (default: the newest Debian install).
    restore_test_dir: Path | None = None
    pg_bin_dir: Path | None = None

    @model_validator(mode="after")
    def _repos(self) -> BackupSettings:
        indexes = [r.index for r in self.repos]
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"backup repository indexes must be unique: {indexes}")
        return self


class HealthSettings(_Strict):
    """The background health checks behind /health and /readyz (I8)."""

    interval_s: float = Field(default=1.0, gt=0, le=60)  # each check, this often
    # A check with no answer by then is failing; under the endpoints' 1 s budget.
    timeout_s: float = Field(default=0.5, gt=0, le=10)
    github_interval_s: float = Field(default=5.0, gt=0)  # GET /rate_limit costs no budget
    # Patroni REST APIs (http://host:8008), to report every PostgreSQL member.
    patroni_urls: list[str] = Field(default_factory=list)
    # HAProxy stats pages (http://host:8404/stats, with `stats show-legends`), to report the
    # load balancers' backends and servers; the nodes must be able to reach them.
    haproxy_stats_urls: list[str] = Field(default_factory=list)
    # Patroni's restapi.authentication, when it has one: only remediation's requests to
    # reinitialise a replica need it (reading the cluster does not).
    patroni_username: str | None = None
    patroni_password: SecretStr | None = None

    @field_validator("patroni_urls", "haproxy_stats_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must start with http:// or https://")
        return [u.rstrip("/") for u in v]

    @model_validator(mode="after")
    def _patroni_auth(self) -> HealthSettings:
        if (self.patroni_username is None) != (self.patroni_password is None):
            raise ValueError("patroni_username and patroni_password go together")
        return self


class LogSettings(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    node: NodeSettings = Field(default_factory=NodeSettings)
    database: DatabaseSettings
    webhook: WebhookSettings
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    github: GitHubSettings
    pools: list[PoolSettings] = Field(default_factory=list)
    api_tokens: list[ApiToken] = Field(default_factory=list)
    api: ApiSettings = Field(default_factory=ApiSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    reconciler: ReconcilerSettings = Field(default_factory=ReconcilerSettings)
    janitor: JanitorSettings = Field(default_factory=JanitorSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    ha: HASettings = Field(default_factory=HASettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    predict: PredictSettings = Field(default_factory=PredictSettings)
    remediation: RemediationSettings = Field(default_factory=RemediationSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must override it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(dupes)}")
        tokens = [t.token.get_secret_value() for t in self.api_tokens]
        if len(set(tokens)) != len(tokens):
            raise ValueError("api_tokens: two tokens have the same value")
        return self

    def pool(self, name: str) -> PoolSettings | None:
        return next((p for p in self.pools if p.name == name), None)


def describe_validation(
    path: Path, exc: ValidationError, example: str = "examples/runnerhub.yaml"
) -> str:
    """A pydantic error as an operator reads it: the file, then each field and its problem."""
    lines = [f"{path}: invalid configuration ({exc.error_count()} problem(s))"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown field (check the spelling against {example})"
        env_name = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
        hint = f" (or environment variable {env_name})" if env_name in os.environ else ""
        lines.append(f"  - {loc}{hint}: {msg}")
    return "\n".join(lines)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; ConfigError naming the file and line otherwise."""
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_settings(path: str | Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Read, merge with the environment and validate; raise ConfigError on any problem."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if overrides:
        data = {**data, **overrides}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation(path, exc)) from None
