"""GitHub's JSON shapes for the simulator's records, and GitHub-style pagination."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from starlette.datastructures import URL

from runnerhub.dev.sim.model import Delivery, Job, Repo, Run, Runner

T = TypeVar("T")

# The labels GitHub assigns itself (OS, architecture, "self-hosted"): type "read-only".
READ_ONLY_LABELS = frozenset({"self-hosted", "linux", "windows", "macos", "x64", "arm", "arm64"})
DEFAULT_GROUP_NAME = "Default"
SENDER = {"login": "octo-sim", "id": 1, "type": "User"}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def group_name(group_id: int) -> str:
    return DEFAULT_GROUP_NAME if group_id == 1 else f"group-{group_id}"


def owner_json(login: str, org_id: int | None) -> dict[str, Any]:
    if org_id is not None:
        return {"login": login, "id": org_id, "type": "Organization"}
    return {"login": login, "id": 1, "type": "User"}


def repo_json(repo: Repo, org_id: int | None) -> dict[str, Any]:
    return {
        "id": repo.id,
        "node_id": f"R_sim{repo.id}",
        "name": repo.name,
        "full_name": repo.full_name,
        "private": True,
        "owner": owner_json(repo.owner, org_id),
        "html_url": f"https://github.com/{repo.full_name}",
        "default_branch": "main",
    }


def runner_json(runner: Runner, label_id: Callable[[str], int]) -> dict[str, Any]:
    labels = [
        {
            "id": label_id(name),
            "name": name,
            "type": "read-only" if name.lower() in READ_ONLY_LABELS else "custom",
        }
        for name in runner.labels
    ]
    return {
        "id": runner.id,
        "name": runner.name,
        "os": "linux",
        "status": runner.status,
        "busy": runner.busy,
        "ephemeral": True,
        "runner_group_id": runner.runner_group_id,
        "labels": labels,
    }


def job_json(job: Job, api: str) -> dict[str, Any]:
    repo_api = f"{api}/repos/{job.repository}"
    return {
        "id": job.id,
        "run_id": job.run_id,
        "run_attempt": job.run_attempt,
        "node_id": f"CR_sim{job.id}",
        "head_sha": job.head_sha,
        "head_branch": job.head_branch,
        "url": f"{repo_api}/actions/jobs/{job.id}",
        "html_url": f"https://github.com/{job.repository}/actions/runs/{job.run_id}/job/{job.id}",
        "run_url": f"{repo_api}/actions/runs/{job.run_id}",
        "check_run_url": f"{repo_api}/check-runs/{job.id}",
        "status": job.status,
        "conclusion": job.conclusion,
        "created_at": iso(job.created_at),
        # GitHub fills started_at from the queue time until a runner starts the job.
        "started_at": iso(job.started_at or job.created_at),
        "completed_at": iso(job.completed_at),
        "name": job.name,
        "workflow_name": job.workflow_name,
        "steps": [],
        "labels": list(job.labels),
        "runner_id": job.runner_id,
        "runner_name": job.runner_name,
        "runner_group_id": job.runner_group_id,
        "runner_group_name": job.runner_group_name,
    }


def run_status(jobs: Sequence[Job]) -> tuple[str, str | None]:
    """A run's (status, conclusion), derived from its jobs."""
    if jobs and all(job.status == "completed" for job in jobs):
        conclusions = {job.conclusion for job in jobs}
        for worst in ("failure", "timed_out", "cancelled", "action_required"):
            if worst in conclusions:
                return "completed", worst
        return "completed", "success"
    if all(job.status == "queued" for job in jobs):
        return "queued", None
    return "in_progress", None


def run_json(run: Run, jobs: Sequence[Job], repo: dict[str, Any], api: str) -> dict[str, Any]:
    status, conclusion = run_status(jobs)
    updated = max([run.created_at, *(job.updated_at for job in jobs)])
    repo_api = f"{api}/repos/{run.repository}"
    return {
        "id": run.id,
        "name": run.workflow_name,
        "display_title": run.workflow_name,
        "node_id": f"WFR_sim{run.id}",
        "run_number": run.run_number,
        "run_attempt": run.run_attempt,
        "event": run.event,
        "status": status,
        "conclusion": conclusion,
        "head_branch": run.head_branch,
        "head_sha": run.head_sha,
        "path": f".github/workflows/{run.workflow_name}.yml",
        "created_at": iso(run.created_at),
        "updated_at": iso(updated),
        "run_started_at": iso(run.created_at),
        "url": f"{repo_api}/actions/runs/{run.id}",
        "html_url": f"https://github.com/{run.repository}/actions/runs/{run.id}",
        "jobs_url": f"{repo_api}/actions/runs/{run.id}/jobs",
        "repository": repo,
    }


def delivery_item(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "guid": delivery.guid,
        "delivered_at": iso(delivery.delivered_at),
        "redelivery": delivery.redelivery,
        "duration": delivery.duration,
        "status": delivery.status,
        "status_code": delivery.status_code,
        "event": delivery.event,
        "action": delivery.action,
        "installation_id": delivery.installation_id,
        "repository_id": delivery.repository_id,
        "throttled_at": None,
    }


def delivery_full(delivery: Delivery) -> dict[str, Any]:
    return {
        **delivery_item(delivery),
        "url": delivery.url,
        "request": {"headers": delivery.request_headers, "payload": json.loads(delivery.body)},
        "response": {"headers": delivery.response_headers, "payload": delivery.response_body},
    }


def page_params(query: dict[str, str], default: int = 30) -> tuple[int, int]:
    """GitHub's `per_page` (1..100, default 30) and `page` (from 1); junk falls back."""

    def number(key: str, fallback: int) -> int:
        try:
            return int(query.get(key, fallback))
        except ValueError:
            return fallback

    per_page = min(max(number("per_page", default), 1), 100)
    return per_page, max(number("page", 1), 1)


def paginate(items: Sequence[T], url: URL, per_page: int, page: int) -> tuple[list[T], str | None]:
    """One page of `items` and its `Link` header (rel next/last, then prev/first)."""
    last = max(math.ceil(len(items) / per_page), 1)
    chunk = list(items[(page - 1) * per_page : page * per_page])

    def link(number: int, rel: str) -> str:
        return f'<{url.include_query_params(per_page=per_page, page=number)}>; rel="{rel}"'

    links = []
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links += [link(min(page - 1, last), "prev"), link(1, "first")]
    return chunk, ", ".join(links) or None
