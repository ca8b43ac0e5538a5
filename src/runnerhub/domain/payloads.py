"""Parsing GitHub webhook payloads into domain facts: pure, no I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runnerhub.domain.jobs import JobFacts, JobState

_ACTION_STATE = {
    "queued": JobState.QUEUED,
    "waiting": JobState.WAITING,
    "in_progress": JobState.IN_PROGRESS,
    "completed": JobState.COMPLETED,
}
_STATUS_STATE = {**_ACTION_STATE, "pending": JobState.QUEUED, "requested": JobState.QUEUED}


class PayloadError(ValueError):
    """The payload is JSON but not a workflow_job event we can understand."""


def _int(obj: dict[str, Any], key: str, where: str, required: bool = True) -> int | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{where}.{key} must be an integer")
    if not 0 <= value < 2**63:  # GitHub's ids are; PostgreSQL's bigint holds no more
        raise PayloadError(f"{where}.{key} is out of range")
    return value


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _time(obj: dict[str, Any], key: str) -> datetime | None:
    value = obj.get(key)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def job_from_api(job: dict[str, Any], repository: str, state: JobState | None = None) -> JobFacts:
    """Build facts from a `workflow_job` object (webhook or REST: the shapes are the same)."""
    if not isinstance(job, dict):
        raise PayloadError("workflow_job must be an object")
    if state is None:
        status = job.get("status")
        if not isinstance(status, str) or status not in _STATUS_STATE:
            raise PayloadError(f"workflow_job.status {status!r} is not a known job status")
        state = _STATUS_STATE[status]
    labels = job.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise PayloadError("workflow_job.labels must be a list of strings")
    job_id = _int(job, "id", "workflow_job")
    run_id = _int(job, "run_id", "workflow_job")
    # run_attempt is missing from some older payloads: it is then the first attempt.
    run_attempt = _int(job, "run_attempt", "workflow_job", required=False) or 1
    assert job_id is not None and run_id is not None
    return JobFacts(
        job_id=job_id,
        run_id=run_id,
        run_attempt=run_attempt,
        repository=repository,
        labels=tuple(labels),
        state=state,
        name=_str(job, "name"),
        workflow_name=_str(job, "workflow_name"),
        conclusion=_str(job, "conclusion") if state is JobState.COMPLETED else None,
        runner_name=_str(job, "runner_name"),
        runner_id=_int(job, "runner_id", "workflow_job", required=False),
        created_at=_time(job, "created_at"),
        started_at=_time(job, "started_at"),
        completed_at=_time(job, "completed_at"),
    )


def repository_of(payload: dict[str, Any]) -> str:
    repo = payload.get("repository")
    name = repo.get("full_name") if isinstance(repo, dict) else None
    if not isinstance(name, str) or "/" not in name:
        raise PayloadError("repository.full_name is missing")
    return name


def parse_workflow_job(payload: Any) -> JobFacts | None:
    """A `workflow_job` delivery's facts, or None for `workflow_job: null` (seen in the wild).

    The action decides the state: GitHub has sent `action: queued` with `status: waiting`.
    """
    if not isinstance(payload, dict):
        raise PayloadError("the payload must be a JSON object")
    action = payload.get("action")
    if not isinstance(action, str) or action not in _ACTION_STATE:
        raise PayloadError(f"action {action!r} is not a workflow_job action")
    job = payload.get("workflow_job")
    if job is None:
        return None
    return job_from_api(job, repository_of(payload), _ACTION_STATE[action])
