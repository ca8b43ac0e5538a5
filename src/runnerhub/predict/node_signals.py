"""What one node forecasts (built by the node): its disk, memory and connection pool, the
replicas' lag, the database's and GitHub's answer times (from the health checks) and their
error rates (GitHub calls without an answer or with a 5xx; failed requests for a database
connection)."""

from __future__ import annotations

from collections.abc import Callable

from runnerhub.config import PredictSettings, Settings
from runnerhub.domain.rates import CounterErrorRate, ErrorRate
from runnerhub.domain.replicas import ReplicationStatus
from runnerhub.health.monitor import HealthMonitor
from runnerhub.predict import signals
from runnerhub.predict.forecast import ForecastPolicy
from runnerhub.predict.watch import Signal
from runnerhub.store.db import Pool

Sample = Callable[[], float | None]


def node_signals(
    settings: Settings,
    db: Pool,
    replication: Callable[[], ReplicationStatus | None],
    health: HealthMonitor,
    github_errors: Sample,
) -> list[Signal]:
    p = settings.predict
    limit = p.error_rate_limit
    timeout_s = settings.health.timeout_s
    state = settings.node.state_dir
    disk_reserve = (signals.total_bytes(state) or 0.0) * p.disk_reserve_fraction
    memory = p.memory_limit_bytes or signals.memory_limit_bytes() or 0.0
    out = [
        Signal(
            f"disk:{state}",
            lambda: signals.free_bytes(state),
            _policy(p, disk_reserve, rising=False),
            f"the disk holding {state} fills up",
        ),
        Signal(
            "db_pool",
            _pool_use(db, settings.database.pool_max_size),
            _policy(p, 1.0),
            "the database connection pool runs out",
        ),
        Signal(
            "replica_lag",
            _max_replica_lag(replication),
            _policy(p, p.replica_lag_limit_s),
            f"a replica falls more than {p.replica_lag_limit_s:g} s behind",
        ),
        Signal(
            "database_latency",
            _latency(health, "database"),
            _policy(p, timeout_s),
            "the database answers slower than the health timeout",
        ),
        Signal(
            "github_latency",
            _latency(health, "github"),
            _policy(p, timeout_s),
            "GitHub answers slower than the health timeout",
        ),
        Signal(
            "github_errors",
            github_errors,
            _policy(p, limit),
            f"{limit:.0%} of GitHub API calls fail",
        ),
        Signal(
            "database_errors",
            CounterErrorRate(_pool_requests(db), ErrorRate()).sample,
            _policy(p, limit),
            f"{limit:.0%} of requests for a database connection fail",
        ),
    ]
    if memory:
        out.append(
            Signal(
                "memory",
                signals.rss_bytes,
                _policy(p, memory * 0.9),
                "this node's memory reaches 90 % of its limit",
            )
        )
    return out


def _policy(p: PredictSettings, limit: float, rising: bool = True) -> ForecastPolicy:
    return ForecastPolicy(
        limit=limit,
        horizon_s=p.horizon_s,
        window_s=p.window_s,
        min_span_s=p.min_span_s,
        min_t=p.min_t,
        rising=rising,
    )


def _pool_use(db: Pool, max_size: int) -> Callable[[], float]:
    def read() -> float:
        s = db.get_stats()
        busy = s.get("pool_size", 0) - s.get("pool_available", 0)
        return (busy + s.get("requests_waiting", 0)) / max_size

    return read


def _pool_requests(db: Pool) -> Callable[[], tuple[int, int]]:
    def read() -> tuple[int, int]:
        s = db.get_stats()  # counters psycopg_pool keeps (absent until non-zero)
        return s.get("requests_num", 0), s.get("requests_errors", 0)

    return read


def _max_replica_lag(replication: Callable[[], ReplicationStatus | None]) -> Sample:
    def read() -> float | None:
        status = replication()
        lags = (
            [r.replay_lag_s for r in status.replicas if r.replay_lag_s is not None]
            if status
            else []
        )
        return max(lags) if lags else None

    return read


def _latency(health: HealthMonitor, check: str) -> Sample:
    def read() -> float | None:
        r = health.result(check)  # read at each tick, from memory
        return None if r is None or r.latency_ms is None else r.latency_ms / 1000

    return read
