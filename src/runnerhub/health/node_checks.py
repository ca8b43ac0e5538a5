"""The checks one node runs, and how often: what `/health` reports (built by the node)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from runnerhub.backends.base import RunnerBackend
from runnerhub.backup.pgbackrest import repo_names, repo_space, schedules
from runnerhub.breakers import CircuitBreaker
from runnerhub.cache import Cache
from runnerhub.config import Settings
from runnerhub.domain.backups import Archiver
from runnerhub.domain.replicas import ReplicationStatus, StandbyStatus
from runnerhub.github.client import GitHubClient
from runnerhub.ha.dcs import LeaderStore
from runnerhub.health import checks
from runnerhub.health.monitor import CheckFn, CheckSpec, HealthMonitor
from runnerhub.intake.spool import Spool
from runnerhub.store.db import Pool


class Leading(Protocol):
    """This node's part in the election (`ha.elector.Elector`, or a sole node)."""

    @property
    def is_leader(self) -> bool: ...

    def may_act(self) -> bool: ...


@dataclass(frozen=True)
class Subjects:
    """What a node's checks look at."""

    db: Pool
    spool: Spool
    leadership: Leading
    leader_store: LeaderStore | None  # None without an election
    loops: Sequence[checks.LoopStatus]
    github: GitHubClient
    breakers: Mapping[str, CircuitBreaker]
    backends: Mapping[str, RunnerBackend]
    cache: Cache
    replication: Callable[[], ReplicationStatus | None]  # as the node last read it
    archiver: Callable[[], Archiver | None]  # the primary's WAL archiving, as last read
    # Per repository: WAL segments its archive trails the primary's (the leader's reading).
    archive_behind: Callable[[], Mapping[int, int]]
    standby: Callable[[], StandbyStatus | None]  # a standby region's lag, as last read
    predictions: Callable[[], Mapping[str, float]]  # standing forecasts
    http: httpx.AsyncClient  # for etcd's and Patroni's HTTP APIs
    # etcd's members read over gRPC (when etcd has TLS or users); None: its HTTP gateway.
    etcd_status: checks.MemberStatus | None = None


def node_checks(s: Settings, monitor: HealthMonitor, on: Subjects) -> list[CheckSpec]:
    """Every check this node's configuration calls for; `monitor` is the one they report to
    (the replication check reads the patroni check's latest result from it)."""
    h = s.health

    def spec(name: str, fn: CheckFn, critical: bool = False, every: float = 0) -> CheckSpec:
        return CheckSpec(name, fn, every or h.interval_s, h.timeout_s, critical)

    def patroni_members() -> list[dict[str, Any]] | None:
        r = monitor.result("patroni")  # read when the check runs, from memory
        return r.detail.get("members") if r is not None else None

    lead = on.leadership
    specs = [
        spec("database", checks.database(on.db, h.timeout_s, s.node.standby), critical=True),
        spec("replication", checks.replication(on.replication, patroni_members)),
        spec("spool", checks.spool(on.spool)),
        spec(
            "leader",
            checks.leader(on.leader_store, s.node.id, lambda: lead.is_leader, lead.may_act),
            critical=True,
        ),
        spec("control_loops", checks.loops(on.loops, lambda: lead.is_leader)),
        spec("github", checks.github(on.github), every=h.github_interval_s),
        spec("circuit_breakers", checks.breakers(on.breakers)),
        spec("predictions", checks.predictions(on.predictions)),
    ]
    if on.backends:
        specs.append(spec("backends", checks.backends(on.backends)))
    if s.ha.enabled:
        specs.append(spec("etcd", checks.etcd(s.ha.etcd_endpoints, on.http, on.etcd_status)))
    if s.redis.enabled:
        specs.append(spec("redis", checks.redis(on.cache)))
    if h.patroni_urls:
        specs.append(spec("patroni", checks.patroni(h.patroni_urls, on.http)))
    if h.haproxy_stats_urls:
        specs.append(spec("load_balancers", checks.load_balancers(h.haproxy_stats_urls, on.http)))
    if s.node.standby:
        lag = checks.standby_region(on.standby, s.database.standby_lag_alert_s)
        specs.append(spec("standby_region", lag))
    if s.backup.enabled:
        b = s.backup
        backups = checks.backups(
            on.db,
            schedules(b),
            repo_names(b),
            b.overdue_grace_s,
            on.archiver,
            behind=on.archive_behind,
            space=lambda: repo_space(b),
            low_space=b.repo_low_space,
        )
        specs.append(spec("backups", backups, every=min(b.interval_s, 10.0)))
    return specs
