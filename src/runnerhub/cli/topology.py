"""`runnerhub cluster status`: the whole topology in one Rich view — RunnerHub nodes and the
leader, PostgreSQL members with roles and lag, Redis and its Sentinels' primary, etcd.

RunnerHub's own view comes from `GET /api/v1/cluster` (any node, through HAProxy); with a
local cluster's state directory it also asks Patroni and etcd directly, so that a member
RunnerHub cannot see (a dead primary, a lagging replica) still shows.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.table import Table

from runnerhub.cli.status import endpoint, fetch

OK, BAD, WARN = "[green]●[/green]", "[red]●[/red]", "[yellow]●[/yellow]"


def gather(state_dir: Path, url: str | None, token: str | None) -> dict[str, Any]:
    """Everything the view shows, as plain data (so rendering is testable without I/O)."""
    base, tok = endpoint(state_dir, url, token)
    out: dict[str, Any] = {"api_url": base}
    try:
        with httpx.Client(
            base_url=base, timeout=3, headers={"Authorization": f"Bearer {tok}"}
        ) as client:
            out["cluster"] = fetch(client, "/api/v1/cluster")
    except httpx.HTTPError as exc:
        out["cluster_error"] = f"{base}: {exc}"
    try:
        info = json.loads((state_dir / "cluster.json").read_text()) if not url else {}
    except (OSError, ValueError):
        info = {}
    out["patroni"] = _patroni(info.get("patroni") or {})
    out["etcd"] = _etcd(info.get("etcd_endpoints") or [], info.get("etcd_ca_file"))
    return out


def _patroni(members: dict[str, Any]) -> list[dict[str, Any]] | None:
    if not members:
        return None
    for m in members.values():
        try:
            body = httpx.get(f"{m['api_url']}/cluster", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            continue
        seen = {x["name"]: x for x in body.get("members", [])}
        return [seen.get(name, {"name": name, "state": "unreachable"}) for name in members]
    return [{"name": name, "state": "unreachable"} for name in members]


def _etcd(endpoints: list[str], ca: str | None) -> list[dict[str, Any]] | None:
    """Each member's /health (over TLS, checked against `ca`, when etcd has it)."""
    if not endpoints:
        return None
    verify = ssl.create_default_context(cafile=ca) if ca else True
    rows = []
    for i, e in enumerate(endpoints, start=1):
        try:
            r = httpx.get(f"{'https' if ca else 'http'}://{e}/health", timeout=1, verify=verify)
            healthy = r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            healthy = False
        rows.append({"name": f"etcd-{i}", "endpoint": e, "healthy": healthy})
    return rows


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(data: dict[str, Any]) -> Group:
    parts: list[Any] = []
    cluster = data.get("cluster")
    if cluster is None:
        parts.append(f"[red]RunnerHub API unreachable: {data.get('cluster_error')}[/red]")
    else:
        nodes = Table(title="RunnerHub nodes", expand=False)
        for col in ("", "node", "role", "url", "last seen"):
            nodes.add_column(col)
        for n in cluster["nodes"]:
            dot = OK if n["healthy"] else (WARN if n["draining"] else BAD)
            role = "leader" if n["id"] == cluster["leader"] else n["role"] or "follower"
            role += " (draining)" if n["draining"] else ""
            nodes.add_row(dot, n["id"], role, n["url"] or "", str(n["last_seen"])[:19])
        nodes.caption = f"leader {cluster['leader'] or 'none'}, epoch {cluster['epoch']}"
        parts.append(nodes)

        db = cluster.get("database")
        pg = Table(title="PostgreSQL replication (as the primary reports it)", expand=False)
        for col in ("", "replica", "state", "sync", "write s", "flush s", "replay s", "bytes"):
            pg.add_column(
                col, justify="left" if col in ("", "replica", "state", "sync") else "right"
            )
        if db:
            for r in db["replicas"]:
                pg.add_row(
                    BAD if r["lagging"] else OK,
                    r["name"],
                    r["state"],
                    r["sync_state"],
                    _s(r["write_lag_s"]),
                    _s(r["flush_lag_s"]),
                    _s(r["replay_lag_s"]),
                    str(r["replay_lag_bytes"]),
                )
            pg.caption = f"primary {db['server']}, timeline {db['timeline']}"
        else:
            pg.caption = "[red]not read: the database is unreachable[/red]"
        parts.append(pg)

        cache = cluster.get("cache") or {}
        if cache.get("configured"):
            rd = Table(title="Redis (via Sentinel)", expand=False)
            for col in ("", "primary", "replicas (offset lag, bytes)", "failures"):
                rd.add_column(col)
            reps = ", ".join(
                f"{r['address']} {r['state']} ({r['lag_bytes']})" for r in cache["replicas"]
            )
            rd.add_row(
                OK if cache["available"] else BAD,
                cache["primary"] or "-",
                reps or "-",
                str(cache["consecutive_failures"]),
            )
            parts.append(rd)

    if data.get("patroni"):
        members = Table(title="Patroni members", expand=False)
        for col in ("", "member", "role", "state", "timeline", "lag (bytes)", "address"):
            members.add_column(col)
        for m in data["patroni"]:
            running = m.get("state") in ("running", "streaming")
            members.add_row(
                OK if running else BAD,
                m["name"],
                m.get("role", "-"),
                m.get("state", "-"),
                str(m.get("timeline", "-")),
                str(m.get("lag", "-")) if m.get("role") != "leader" else "",
                f"{m['host']}:{m['port']}" if "host" in m else "",
            )
        parts.append(members)
    if data.get("etcd"):
        etcd = Table(title="etcd", expand=False)
        for col in ("", "member", "endpoint"):
            etcd.add_column(col)
        for e in data["etcd"]:
            etcd.add_row(OK if e["healthy"] else BAD, e["name"], e["endpoint"])
        parts.append(etcd)
    return Group(*parts)


def show_topology(state_dir: Path, url: str | None, token: str | None) -> int:
    data = gather(state_dir, url, token)
    Console().print(render(data))
    return 0 if data.get("cluster") is not None else 1
