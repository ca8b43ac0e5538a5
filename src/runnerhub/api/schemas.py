"""The API's request and response models (pydantic): one place for the shapes the OpenAPI
description publishes. Rows from `store/` become these with `from_attributes`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStateParam = Literal["waiting", "queued", "in_progress", "completed"]
RunnerStateParam = Literal["requested", "registered", "running", "busy", "exited", "removed"]


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobOut(_FromRow):
    id: int
    run_id: int
    run_attempt: int
    repository: str
    name: str | None
    workflow_name: str | None
    labels: list[str]
    state: str
    conclusion: str | None
    pool: str | None
    hosted: bool
    runner_name: str | None
    waiting_reason: str | None
    github_created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    first_seen_at: datetime
    queued_at: datetime | None
    updated_at: datetime
    last_source: str


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class RetryOut(BaseModel):
    """A retry asked for: the leader's scheduler provisions these runners again at once."""

    status: str = "retry requested"
    job_id: int
    runners: list[str]


class DeliveryOut(_FromRow):
    """A webhook delivery about a job (its payload is not shown)."""

    id: int
    delivery_guid: str
    event: str
    action: str | None
    received_at: datetime
    received_by: str
    outcome: str
    detail: str | None


class RunnerOut(_FromRow):
    name: str
    pool: str
    scope: str
    labels: list[str]
    state: str
    job_id: int | None
    provisioned_for: int | None
    backend: str
    backend_ref: str | None
    github_runner_id: int | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    started_at: datetime | None
    busy_at: datetime | None
    exited_at: datetime | None


class RunnerPage(BaseModel):
    items: list[RunnerOut]
    next_cursor: str | None


class PoolOut(BaseModel):
    name: str
    labels: list[str]
    backend: str
    min_idle: int
    max_runners: int
    queued_jobs: int
    current_runners: int
    desired_runners: int


class SummaryOut(BaseModel):
    jobs: dict[str, int]
    runners: dict[str, int]
    oldest_queued_age_s: float


class NodeOut(BaseModel):
    id: str
    url: str | None
    pid: int | None
    role: str
    healthy: bool
    draining: bool
    last_seen: datetime
    started_at: datetime


class EventOut(_FromRow):
    id: int
    at: datetime
    node: str
    kind: str
    subject: str | None
    detail: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class IncidentOut(_FromRow):
    id: int
    component: str
    kind: str
    summary: str
    node: str
    started_at: datetime | None
    detected_at: datetime
    recovered_at: datetime | None
    detection_s: float | None
    recovery_s: float | None
    action: str | None
    detail: dict[str, Any]
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    next_cursor: str | None


class HandoffIn(BaseModel):
    to: str | None = None


class ReplicaOut(BaseModel):
    name: str
    address: str | None
    state: str
    sync_state: str
    write_lag_s: float | None
    flush_lag_s: float | None
    replay_lag_s: float | None
    replay_lag_bytes: int
    lagging: bool


class DatabaseOut(BaseModel):
    """PostgreSQL as this node last read it from the primary (pg_stat_replication)."""

    server: str
    in_recovery: bool
    timeline: int | None
    replicas: list[ReplicaOut]
    synchronous: list[str]
    lagging: list[str]


class CacheOut(BaseModel):
    """Redis (optional, may be lost): the primary Sentinel names, and its replicas' lag."""

    configured: bool
    available: bool
    primary: str | None
    consecutive_failures: int
    replicas: list[dict[str, Any]]


class StandbyOut(BaseModel):
    """A standby region's database: its lag behind the active region, and its source."""

    server: str
    replay_lag_s: float | None
    streaming: bool
    receive_lsn: str | None
    replay_lsn: str | None


class RegionOut(BaseModel):
    role: str  # active, or standby (this node stands by for another region)
    standby: StandbyOut | None = None


class ClusterOut(BaseModel):
    nodes: list[NodeOut]
    # The node leading now (None while the office is vacant), and the last one recorded in
    # PostgreSQL with its epoch and since when (kept after it died or stepped down).
    leader: str | None
    last_leader: str | None = None
    epoch: int | None
    leader_since: datetime | None
    database: DatabaseOut | None = None
    cache: CacheOut | None = None
    region: RegionOut | None = None


class BackupOut(_FromRow):
    id: int
    repo: int
    kind: str
    label: str | None
    ok: bool
    error: str | None
    started_at: datetime
    finished_at: datetime
    duration_s: float
    size_bytes: int | None
    repo_bytes: int | None
    wal_start: str | None
    wal_stop: str | None
    lsn_start: str | None
    lsn_stop: str | None
    node: str
    epoch: int | None


class BackupPage(BaseModel):
    items: list[BackupOut]
    next_cursor: str | None


class BackupCheckOut(_FromRow):
    repo: int
    kind: str
    label: str | None
    ok: bool
    error: str | None
    finished_at: datetime
    duration_s: float
    detail: dict[str, Any]


class RepoStatusOut(BaseModel):
    repo: int
    name: str
    last: dict[str, datetime]  # newest good full, diff, incr, verify, restore_test
    overdue: list[str]
    checks: list[BackupCheckOut]  # the newest verify and restore test, good or not


class BackupRequestIn(BaseModel):
    repo: int = Field(ge=1, le=256)
    what: Literal["full", "diff", "incr", "verify", "restore_test"]


class BackupRequestOut(_FromRow):
    id: int
    repo: int
    what: str
    requested_by: str
    requested_at: datetime
    started_at: datetime | None  # by the leader
    finished_at: datetime | None
    ok: bool | None  # None until finished
    error: str | None
    node: str | None  # the leader that ran it


class BackupStatusOut(BaseModel):
    enabled: bool
    repos: list[RepoStatusOut]


class DrillOut(_FromRow):
    """A DR drill: RTO (fault → the first delivery, the first runner, in region B) and RPO
    (deliveries region A acknowledged that region B lacks; jobs lost or run twice)."""

    id: int
    started_at: datetime
    recorded_at: datetime
    jobs_lost: int
    ran_twice: int
    rto_webhook_s: float | None
    rto_runner_s: float | None
    acknowledged_missing: int
    report: dict[str, Any] = Field(description="everything the drill measured")


class DrillPage(BaseModel):
    items: list[DrillOut]


class TokenIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    role: Literal["read", "admin"]
    # Seconds from now until the token is refused; unset: no expiry.
    expires_in_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)


class TokenOut(BaseModel):
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewTokenOut(TokenOut):
    token: str  # shown this once: only its hash is kept


class JobHistoryOut(BaseModel):
    """A job with everything that happened to it, each list oldest first: the deliveries
    about it, its runners (one per provisioning attempt, and any other that served it),
    and the audit events of the job and of those runners (each naming the node that
    acted)."""

    job: JobOut
    deliveries: list[DeliveryOut]
    runners: list[RunnerOut]
    events: list[EventOut]


class MinuteOut(_FromRow):
    minute: datetime
    deliveries: int = Field(description="webhook deliveries taken in (duplicates not counted)")
    queued: int
    started: int
    wait_p50_s: float | None
    wait_p99_s: float | None
    replica_lag_s: float | None = Field(
        description="the most any PostgreSQL replica was behind the primary (seconds)"
    )


class ActivityOut(BaseModel):
    """Per minute: deliveries taken in, jobs queued and started, the queue wait of those
    that started, and replication lag."""

    minutes: list[MinuteOut]
