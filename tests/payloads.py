"""Builders for GitHub-shaped webhook payloads and signed requests, shared by the tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from runnerhub.intake.signature import sign

SECRET = "s3cret-current"


def workflow_job(
    job_id: int,
    action: str = "queued",
    labels: list[str] | None = None,
    repository: str = "acme/app",
    run_id: int | None = None,
    run_attempt: int | None = 1,
    runner_name: str | None = None,
    conclusion: str | None = None,
) -> dict[str, Any]:
    owner, name = repository.split("/")
    job: dict[str, Any] = {
        "id": job_id,
        "run_id": run_id or job_id // 10,
        "status": action if action != "waiting" else "waiting",
        "conclusion": conclusion if action == "completed" else None,
        "name": f"build-{job_id}",
        "workflow_name": "ci",
        "labels": labels if labels is not None else ["self-hosted", "linux", "x64"],
        "runner_name": runner_name,
        "runner_id": 7 if runner_name else None,
        "created_at": "2026-11-27T04:00:00Z",
        "started_at": "2026-11-27T04:00:05Z",
        "completed_at": "2026-11-27T04:01:00Z" if action == "completed" else None,
    }
    if run_attempt is not None:
        job["run_attempt"] = run_attempt
    return {
        "action": action,
        "workflow_job": job,
        "repository": {"id": 1, "name": name, "full_name": repository, "owner": {"login": owner}},
        "sender": {"login": "octocat", "type": "User"},
    }


def signed(
    payload: Any,
    event: str = "workflow_job",
    guid: str | None = None,
    secret: str = SECRET,
    raw: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret.encode(), body),
        "X-GitHub-Hook-ID": "1",
        "Content-Type": "application/json",
    }
    return body, headers
