"""`runnerhub status`: pools, jobs and runners of a running node, as Rich tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.table import Table


def cluster_file(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


def endpoint(state_dir: Path, url: str | None, token: str | None) -> tuple[str, str]:
    if url and token:
        return url.rstrip("/"), token
    path = cluster_file(state_dir)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"runnerhub: no running local cluster found ({path}: {exc}); "
            "pass --url and --token for another node"
        ) from None
    return (url or info["api_url"]).rstrip("/"), token or info["admin_token"]


def fetch(client: httpx.Client, path: str) -> Any:
    r = client.get(path)
    if r.status_code in (401, 403):
        raise SystemExit(f"runnerhub: {r.status_code}: {r.json().get('detail')}")
    r.raise_for_status()
    return r.json()


def render(client: httpx.Client) -> Group:
    pools = Table(title="Pools", expand=False)
    for col in ("pool", "labels", "queued", "runners", "desired", "max"):
        pools.add_column(col, justify="right" if col not in ("pool", "labels") else "left")
    for p in fetch(client, "/api/v1/pools"):
        pools.add_row(
            p["name"],
            ",".join(p["labels"]),
            str(p["queued_jobs"]),
            str(p["current_runners"]),
            str(p["desired_runners"]),
            str(p["max_runners"]),
        )
    s = fetch(client, "/api/v1/summary")
    counts = Table(title="Jobs", expand=False)
    states = ["waiting", "queued", "in_progress", "completed"]
    for col in states:
        counts.add_column(col, justify="right")
    counts.add_row(*(str(s["jobs"].get(st, 0)) for st in states))
    counts.caption = f"oldest queued: {s['oldest_queued_age_s']:.1f} s"
    open_jobs = Table(title="Open jobs (newest 10)", expand=False)
    for col in ("job", "repository", "state", "pool", "runner / reason"):
        open_jobs.add_column(col)
    for state in ("queued", "in_progress"):
        for j in fetch(client, f"/api/v1/jobs?state={state}&limit=5")["items"]:
            open_jobs.add_row(
                str(j["id"]),
                j["repository"],
                j["state"],
                j["pool"] or "-",
                j["runner_name"] or j["waiting_reason"] or "",
            )
    runners = Table(title="Live runners (newest 10)", expand=False)
    for col in ("runner", "pool", "state", "job", "error"):
        runners.add_column(col)
    live = [
        r
        for r in fetch(client, "/api/v1/runners?limit=50")["items"]
        if r["state"] in ("requested", "registered", "running", "busy")
    ][:10]
    for r in live:
        runners.add_row(
            r["name"], r["pool"], r["state"], str(r["job_id"] or "-"), (r["last_error"] or "")[:60]
        )
    return Group(pools, counts, open_jobs, runners)


def show_status(state_dir: Path, url: str | None, token: str | None) -> int:
    base, tok = endpoint(state_dir, url, token)
    console = Console()
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {tok}"}, timeout=5
        ) as client:
            console.print(render(client))
    except httpx.HTTPError as exc:
        console.print(f"[red]runnerhub: cannot reach {base}: {exc}[/red]")
        return 1
    return 0
