"""Every Prometheus metric RunnerHub exports, in one place (names after Prometheus conventions).

Gauges that describe the database (jobs by state, oldest queued job) are refreshed by the
/metrics handler just before it renders; counters and histograms are updated where things
happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from runnerhub.domain.backups import Archiver
    from runnerhub.domain.replicas import ReplicationStatus, StandbyStatus

WEBHOOK_DELIVERIES = Counter(
    "runnerhub_webhook_deliveries_total",
    "Webhook deliveries received, by outcome.",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "runnerhub_webhook_intake_seconds",
    "Time from request to answer for webhook deliveries.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_DB_WAITS = Counter(
    "runnerhub_webhook_db_wait_exceeded_total",
    "Deliveries PostgreSQL did not record within webhook.db_wait_s (answered from the spool).",
)
WEBHOOK_DB_BYPASSED = Gauge(
    "runnerhub_webhook_database_bypassed",
    "1 while deliveries go straight to the spool: from one PostgreSQL did not record until "
    "the spool's drainer records again.",
)
JOBS = Gauge("runnerhub_jobs", "Jobs known to RunnerHub, by state.", ["state"])
OLDEST_QUEUED = Gauge(
    "runnerhub_oldest_queued_job_age_seconds",
    "Age of the oldest queued job that a pool serves (0 when none is queued).",
)
RUNNERS = Gauge("runnerhub_runners", "Runners by pool and state.", ["pool", "state"])
POOL_DESIRED = Gauge("runnerhub_pool_desired_runners", "Desired runners per pool.", ["pool"])
PROVISION_LATENCY = Histogram(
    "runnerhub_provisioning_seconds",
    "From the job being queued to its runner being started by the backend.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
RETENTION_DELETED = Counter(
    "runnerhub_retention_deleted_total",
    "Rows deleted for being older than their retention, by table.",
    ["table"],
)
PROVISION_FAILURES = Counter(
    "runnerhub_provisioning_failures_total",
    "Runner provisioning attempts that failed, by stage.",
    ["stage"],
)
# Exported at 0 from the start: a series that appears at 1 hides its first failure from
# RunnerHubProvisioningFailing (which counts the rise within its window).
for _stage in ("github", "backend"):  # the scheduler's stages
    PROVISION_FAILURES.labels(_stage)
GITHUB_CALLS = Counter(
    "runnerhub_github_api_calls_total",
    "GitHub API calls, by endpoint template, method and status (0: no response).",
    ["endpoint", "method", "status"],
)
GITHUB_RATE_REMAINING = Gauge(
    "runnerhub_github_rate_limit_remaining",
    "Requests left in GitHub's current rate-limit window (last seen).",
    ["resource"],
)
GITHUB_RATE_RESET = Gauge(
    "runnerhub_github_rate_limit_reset_timestamp_seconds",
    "When GitHub's current rate-limit window resets (Unix time, last seen).",
    ["resource"],
)
GITHUB_REFUSED = Counter(
    "runnerhub_github_calls_refused_total",
    "GitHub API calls RunnerHub did not make, by reason: exhausted (this node saw the "
    "window used up), shared_pause (another node did, or hit a secondary limit), "
    "write_budget (the cluster's content-creating requests per minute were used up).",
    ["reason"],
)
LOOP_RUNS = Counter(
    "runnerhub_control_loop_runs_total",
    "Control-loop cycles, by loop and result.",
    ["loop", "result"],
)
RECONCILER_REPAIRS = Counter(
    "runnerhub_reconciler_repairs_total",
    "What the reconciler repaired, by kind (job_inserted, job_caught_up, redelivered, ...).",
    ["kind"],
)

IS_LEADER = Gauge("runnerhub_leader", "1 while this node is the leader and may act.")
LEADER_EPOCH = Gauge("runnerhub_leader_epoch", "The epoch (fencing token) of this node's term.")
ELECTIONS = Counter("runnerhub_elections_won_total", "Times this node became the leader.")
STEP_DOWNS = Counter(
    "runnerhub_leader_step_downs_total",
    "Times this node stopped leading, by reason.",
    ["reason"],
)
FENCED_WRITES = Counter(
    "runnerhub_fenced_writes_total",
    "Control-loop writes refused: lease not renewed in time (lease) or a newer epoch (epoch).",
    ["check"],
)
TAKEOVER = Histogram(
    "runnerhub_leader_takeover_seconds",
    "From seeing the leader key free to being ready to act (epoch recorded, runners adopted).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)

# The spool (intake's journal while PostgreSQL is unreachable). The gauges read the node's
# spool when scraped (bound when it opens).
SPOOL_ENTRIES = Gauge("runnerhub_spool_entries", "Spooled deliveries not yet replayed.")
SPOOL_BYTES = Gauge("runnerhub_spool_bytes", "Bytes of spooled deliveries not yet replayed.")
SPOOL_OLDEST_AGE = Gauge(
    "runnerhub_spool_oldest_entry_age_seconds",
    "Age of the oldest spooled delivery not yet replayed (0 when the spool is empty).",
)
SPOOL_APPENDED = Counter(
    "runnerhub_spool_appended_total", "Deliveries written and fsync'd to the spool."
)
SPOOL_WRITE = Histogram(
    "runnerhub_spool_write_seconds",
    "Writing and fsyncing one group of spooled deliveries: what a spooled delivery's answer "
    "waits for after webhook.db_wait_s.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SPOOL_DRAINED = Counter(
    "runnerhub_spool_drained_total", "Spooled deliveries replayed into PostgreSQL."
)
SPOOL_DRAIN_PAUSED = Counter(
    "runnerhub_spool_drain_paused_total",
    "Replays of spooled deliveries PostgreSQL did not take (tried again each drain interval).",
)
SPOOL_REJECTED = Counter(
    "runnerhub_spool_rejected_total", "Deliveries refused (503) because the spool was full."
)
SPOOL_QUARANTINED = Counter(
    "runnerhub_spool_quarantined_total",
    "Spooled deliveries PostgreSQL would not take, moved to the spool's quarantine directory.",
)
SPOOL_UNREADABLE = Counter(
    "runnerhub_spool_unreadable_total",
    "Spool records skipped: a torn tail left by a crash (never acknowledged) or a bad checksum.",
)

# PostgreSQL replication, as the primary reports it (refreshed every
# database.replication_check_s by each node; a replica that is gone loses its series).
PG_REPLICA_LAG = Gauge(
    "runnerhub_postgres_replica_lag_seconds",
    "How far each replica is behind the primary, by stage (write, flush, replay).",
    ["replica", "stage"],
)
PG_REPLICA_LAG_BYTES = Gauge(
    "runnerhub_postgres_replica_lag_bytes", "WAL bytes each replica has yet to replay.", ["replica"]
)
PG_REPLICA_SYNC = Gauge(
    "runnerhub_postgres_replica_synchronous",
    "1 when the replica is a synchronous standby (commits wait for it).",
    ["replica"],
)
PG_REPLICA_LAGGING = Gauge(
    "runnerhub_postgres_replica_lagging",
    "1 when the replica is behind by more than database.replica_lag_alert_s, or not streaming.",
    ["replica"],
)
PG_REPLICAS = Gauge("runnerhub_postgres_replicas", "Replicas connected to the primary.")
PG_TIMELINE = Gauge("runnerhub_postgres_timeline", "The primary's timeline (+1 per failover).")


def record_replication(status: ReplicationStatus) -> None:
    for gauge in (PG_REPLICA_LAG, PG_REPLICA_LAG_BYTES, PG_REPLICA_SYNC, PG_REPLICA_LAGGING):
        gauge.clear()  # replicas that left must not keep their last value
    for r in status.replicas:
        for stage, value in (
            ("write", r.write_lag_s),
            ("flush", r.flush_lag_s),
            ("replay", r.replay_lag_s),
        ):
            if value is not None:
                PG_REPLICA_LAG.labels(r.name, stage).set(value)
        PG_REPLICA_LAG_BYTES.labels(r.name).set(r.replay_lag_bytes)
        PG_REPLICA_SYNC.labels(r.name).set(r.sync_state in ("sync", "quorum"))
        PG_REPLICA_LAGGING.labels(r.name).set(r.lagging)
    PG_REPLICAS.set(len(status.replicas))
    if status.timeline is not None:
        PG_TIMELINE.set(status.timeline)


WAL_ARCHIVED_AT = Gauge(
    "runnerhub_postgres_wal_archived_timestamp_seconds",
    "When the primary last archived a WAL segment (pg_stat_archiver; absent: archiving off).",
)
WAL_ARCHIVE_FAILED_AT = Gauge(
    "runnerhub_postgres_wal_archive_failed_timestamp_seconds",
    "When archiving a WAL segment last failed (0: never since the server started).",
)
WAL_ARCHIVE_FAILURES = Gauge(
    "runnerhub_postgres_wal_archive_failures",
    "Failed attempts to archive a WAL segment since the primary started (pg_stat_archiver).",
)
WAL_ARCHIVE_FAILING = Gauge(
    "runnerhub_postgres_wal_archive_failing",
    "1 while the newest attempt to archive a WAL segment failed.",
)


def record_archiver(a: Archiver | None) -> None:
    if a is None:
        for g in (
            WAL_ARCHIVED_AT,
            WAL_ARCHIVE_FAILED_AT,
            WAL_ARCHIVE_FAILURES,
            WAL_ARCHIVE_FAILING,
        ):
            g.set(0)
        return
    WAL_ARCHIVED_AT.set(a.last_archived_at or 0)
    WAL_ARCHIVE_FAILED_AT.set(a.last_failed_at or 0)
    WAL_ARCHIVE_FAILURES.set(a.failed_count)
    WAL_ARCHIVE_FAILING.set(1 if a.failing else 0)


class MeasuredGauge(Collector):
    """A gauge absent until measured, and again once there is nothing to measure. A plain
    Gauge exports 0 from the start, which an alert rule reads as a value: every node of a
    cluster without a standby region reported its standby "not streaming" (found by the
    real Prometheus in tests/chaos)."""

    def __init__(self, name: str, documentation: str) -> None:
        self._name, self._doc = name, documentation
        self._value: float | None = None
        REGISTRY.register(self)

    @property
    def name(self) -> str:
        return self._name

    def set(self, value: float) -> None:
        self._value = float(value)

    def clear(self) -> None:
        self._value = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._doc)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._value is not None:
            yield GaugeMetricFamily(self._name, self._doc, value=self._value)


STANDBY_LAG = MeasuredGauge(
    "runnerhub_standby_replay_lag_seconds",
    "A standby region's database: time since the newest transaction it replayed was "
    "committed in the active region (read by the standby region's nodes).",
)
STANDBY_STREAMING = MeasuredGauge(
    "runnerhub_standby_streaming",
    "1 while a standby region's database streams WAL from the active region, 0 while it "
    "only replays the archive.",
)


# Exported only while measured (a scrape may not show them).
# Absent on a node without Redis configured (a plain Gauge's 0 would page "works without
# Redis" for every such node), then 1 or 0 from its first operation.
CACHE_AVAILABLE = MeasuredGauge(
    "runnerhub_cache_available",
    "1 while the shared cache (Redis) answered its last operation, else 0.",
)

MEASURED = (STANDBY_LAG, STANDBY_STREAMING, CACHE_AVAILABLE)


def record_standby(s: StandbyStatus | None) -> None:
    """None: this node's region is not a standby (never was, or was promoted)."""
    if s is None:
        STANDBY_LAG.clear()
        STANDBY_STREAMING.clear()
        return
    if s.replay_lag_s is None:
        STANDBY_LAG.clear()
    else:
        STANDBY_LAG.set(max(0.0, s.replay_lag_s))
    STANDBY_STREAMING.set(1 if s.streaming else 0)
