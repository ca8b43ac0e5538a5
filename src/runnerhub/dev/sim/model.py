"""The simulator's records. Plain dataclasses of JSON-friendly fields, so a snapshot is
`vars(record)` and a restore is `Cls(**fields)`. Times are epoch seconds (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field

JOB_CONCLUSIONS = frozenset(
    {"success", "failure", "cancelled", "skipped", "neutral", "timed_out", "action_required"}
)


@dataclass
class Repo:
    id: int
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Run:
    id: int
    repository: str
    workflow_name: str
    run_number: int
    head_sha: str
    head_branch: str
    created_at: float
    job_ids: list[int]
    run_attempt: int = 1
    event: str = "push"


@dataclass
class Job:
    id: int
    run_id: int
    repository: str
    name: str
    workflow_name: str
    labels: list[str]
    duration_s: float
    planned_conclusion: str  # what the runner will report when it finishes
    head_sha: str
    head_branch: str
    created_at: float
    updated_at: float
    run_attempt: int = 1
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    runner_group_id: int | None = None
    runner_group_name: str | None = None
    executions: list[str] = field(default_factory=list)  # every runner handed this job


@dataclass
class Runner:
    id: int
    name: str
    scope: str  # "repo:owner/name" or "org:owner"
    labels: list[str]
    runner_group_id: int
    work_folder: str
    token: str
    created_at: float
    status: str = "offline"
    busy: bool = False
    job_id: int | None = None
    session: bool = False
    deleted: bool = False
    deleted_at: float | None = None
    # Monotonic clock; meaningless after a restart, so a restore resets it to "now".
    last_contact: float = 0.0
    polling: int = 0  # acquire calls in progress: a polling runner is in contact

    def serves(self, repository: str) -> bool:
        kind, _, target = self.scope.partition(":")
        if kind == "repo":
            return target.lower() == repository.lower()
        return repository.split("/", 1)[0].lower() == target.lower()

    def fits(self, labels: list[str]) -> bool:
        own = {label.lower() for label in self.labels}
        return all(label.lower() in own for label in labels)


@dataclass
class Delivery:
    id: int
    guid: str
    event: str
    action: str | None
    repository: str | None
    repository_id: int | None
    installation_id: int | None
    redelivery: bool
    delivered_at: float
    duration: float
    status: str
    status_code: int
    url: str
    request_headers: dict[str, str]
    body: str  # the exact bytes sent (UTF-8), so a redelivery re-sends them unchanged
    response_headers: dict[str, str]
    response_body: str | None

    @property
    def ok(self) -> bool:
        return self.status == "OK"
