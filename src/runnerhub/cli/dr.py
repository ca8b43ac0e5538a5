"""`runnerhub dr restore`: point-in-time recovery of the local cluster into a new cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from runnerhub import logs
from runnerhub.backup.pitr import Target, TargetError
from runnerhub.config import Settings, load_settings
from runnerhub.dev.cluster.asking import RequestFailed, ask_up
from runnerhub.dev.cluster.dr import restore_local
from runnerhub.dev.cluster.drill import DrillError, request_failback, run_drill
from runnerhub.dev.cluster.patroni import PatroniError
from runnerhub.dev.cluster.region import activate_local_node
from runnerhub.dev.waiting import Timeout
from runnerhub.dr.promote import PromotionRefused
from runnerhub.dr.promote import promote as dr_promote
from runnerhub.store import events
from runnerhub.store.db import connect


def _event_time(state_dir: Path, event_id: int) -> datetime:
    dsn = json.loads((state_dir / "cluster.json").read_text())["database_dsn"]

    async def read() -> datetime | None:
        async with await connect(dsn) as conn:
            return await events.at_of(conn, event_id)

    at = asyncio.run(read())
    if at is None:
        raise TargetError(f"no event {event_id}")
    return at - timedelta(microseconds=1)  # as it was just before


def _target(
    state_dir: Path, to: str | None, to_lsn: str | None, before_event: int | None
) -> Target:
    if before_event is not None:
        return Target(time=_event_time(state_dir, before_event))
    if to is not None:
        try:
            return Target(time=datetime.fromisoformat(to))
        except ValueError:
            raise TargetError(f"{to!r} is not a time (like 2026-11-30T19:00:00+00:00)") from None
    return Target(lsn=to_lsn)


def restore_in_place(
    state_dir: Path,
    to: str | None,
    to_lsn: str | None,
    before_event: int | None,
    repo: int,
    yes: bool,
) -> int:
    """`runnerhub dr restore --in-place --yes`: the running `up --ha` replaces its database."""
    console = Console()
    try:
        target = _target(state_dir, to, to_lsn, before_event)
    except (TargetError, OSError, KeyError, ValueError, psycopg.Error) as exc:
        console.print(f"[red]runnerhub dr restore: {exc}[/red]")
        return 1
    if not yes:
        console.print(
            f"[yellow]--in-place replaces the running cluster's database by its state at "
            f"{target.describe()} (repo{repo}): what was written since is gone from it "
            "(GitHub gives back the jobs queued since; the rest of that history is lost). "
            "Each member's data as it is now is kept aside. Add --yes to do it.[/yellow]"
        )
        return 2
    params = {"time": target.time.isoformat() if target.time else None, "lsn": target.lsn}
    try:
        with console.status(f"restoring in place to {target.describe()}…"):
            done = ask_up(
                state_dir, "restore_in_place", "restore in place", 900, repo=repo, **params
            )
    except (RequestFailed, Timeout, OSError) as exc:
        console.print(f"[red]runnerhub dr restore: {exc}[/red]")
        return 1
    console.print(
        f"[green]✓[/green] restored in place to {target.describe()} from {done['base']} "
        f"(repo{repo}) in {done['seconds']} s; the DSN is unchanged.\n"
        f"  The data as it was is kept in: {', '.join(done['kept'])} (delete it when done)."
    )
    if not done.get("archived"):
        console.print(
            "[yellow]the newest WAL could not be archived first: the restore reached what "
            "the archive held[/yellow]"
        )
    return 0


def restore(
    state_dir: Path,
    to: str | None,
    to_lsn: str | None,
    before_event: int | None,
    repo: int,
    members: int,
) -> int:
    console = Console()
    try:
        target = _target(state_dir, to, to_lsn, before_event)
        with console.status(f"restoring repo{repo} to {target.describe()}…"):
            cluster, base = restore_local(state_dir, target, repo, members)
    except (TargetError, PatroniError, OSError, psycopg.Error) as exc:
        console.print(f"[red]runnerhub dr restore: {exc}[/red]")
        return 1
    console.print(
        f"[green]✓[/green] restored to {target.describe()} from {base.label} (repo{repo}) "
        f"into {cluster.base_dir}\n  DSN: {cluster.dsn('runnerhub')}\n"
        "  Point nodes at it (database.dsn) to serve from it; GitHub's sweep and redelivery "
        "bring back what happened after the target. Ctrl-C stops it (its data stays).",
        soft_wrap=True,  # the DSN on one line, to copy
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    cluster.stop()
    console.print(f"stopped; its data is in {cluster.base_dir}")
    return 0


def promote(settings: Settings, webhook_url: str | None, force: bool) -> int:
    """`runnerhub dr promote --config`: the product's promotion; the region's nodes are then
    run with `node.role: active` by whoever runs them (systemd, the orchestrator)."""
    console = Console()
    logs.setup("warning", "console")  # the console says what happened; the audit trail too
    try:
        with console.status("promoting…"):
            report = asyncio.run(dr_promote(settings, webhook_url, force))
    except (PromotionRefused, psycopg.Error, OSError) as exc:
        console.print(f"[red]runnerhub dr promote: {exc}[/red]")
        return 1
    console.print(
        f"[green]promoted[/green]: writable after {report.writable_after_s:.1f} s, era "
        f"{report.era} (the old region's newest epoch: {report.previous_epoch})"
    )
    for hook in report.hooks:
        if "error" in hook:
            console.print(f"[yellow]{hook['hook']}: not re-pointed: {hook['error']}[/yellow]")
        else:
            console.print(f"{hook['hook']} now delivers to {hook['url']}")
    console.print("next: run this region's nodes with node.role: active")
    return 1 if any("error" in h for h in report.hooks) else 0


def promote_local(state_dir: Path, webhook_url: str | None, force: bool) -> int:
    """`runnerhub dr promote` on `runnerhub up --ha --dr`: promote region B, then make its
    node active (its configuration rewritten; `up` starts it again)."""
    try:
        info = json.loads((state_dir / "cluster.json").read_text())
    except (OSError, ValueError) as exc:
        Console().print(f"[red]runnerhub dr promote: no local cluster in {state_dir}: {exc}[/red]")
        return 2
    region = info.get("region_b")
    if not region:
        Console().print("[red]runnerhub dr promote: this cluster has no region B (up --dr)[/red]")
        return 2
    name, url = next(iter(region["node_urls"].items()))
    path = Path(info["config_files"][name])
    code = promote(load_settings(path), webhook_url or f"{url}/webhooks/github", force)
    if code == 0:
        activate_local_node(path, int(info["pids"].get(name) or 0), region.get("backup"))
    return code


def drill(state_dir: Path, rate: float, before_s: float, after_s: float, failback: bool) -> int:
    """`runnerhub dr drill`: with `failback`, it ends where it began (region A active)."""
    console = Console()
    logs.setup("warning", "console")
    try:
        report = run_drill(
            state_dir,
            rate,
            before_s,
            after_s,
            log=console.print,
            failback=(lambda: request_failback(state_dir)) if failback else None,
            switch_back=lambda: request_failback(state_dir, "switch_back"),
        )
    except (DrillError, PromotionRefused, Timeout, OSError, psycopg.Error) as exc:
        console.print(f"[red]runnerhub dr drill: {exc}[/red]")
        return 1
    console.print(report.markdown())
    console.print(f"report: {state_dir / 'drills'}")
    return 0 if report.jobs_lost == 0 and not report.ran_twice else 1


def _get(url: str, token: str, path: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=3)
        return dict(r.json()) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, TypeError):
        return None


def _region_row(name: str, url: str | None, token: str) -> list[str]:
    """region, its API, role, leader (epoch), database, lag."""
    view = _get(url, token, "/api/v1/cluster") if url else None
    if view is None:
        return [name, url or "-", "[red]no answer[/red]", "-", "-", "-"]
    region = view.get("region") or {}
    standby = region.get("standby") or {}
    db = view.get("database") or {}
    lag = standby.get("replay_lag_s")
    if standby:
        how = "streaming" if standby.get("streaming") else "archive only"
        where = f"{standby.get('server')} ({how})"
    else:
        where = f"{db.get('server', '-')} timeline {db.get('timeline', '-')}"
    return [
        name,
        url or "-",
        str(region.get("role", "active")),
        f"{view.get('leader') or '-'} ({view.get('epoch')})",
        where,
        "-" if lag is None else f"{lag:.1f} s",
    ]


def status(state_dir: Path, url_a: str | None, url_b: str | None, token: str | None) -> int:
    """`runnerhub dr status`: both regions, the standby's lag, the newest backups of each
    repository, the last drill."""
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((state_dir / "cluster.json").read_text())
    token = token or info.get("read_token")
    if not token:
        Console().print("[red]runnerhub dr status: no token (--token, or a local cluster)[/red]")
        return 2
    # Region A's balancer, or else any of its nodes (the balancer may be what was lost).
    url_a = url_a or next(
        (
            u
            for u in [info.get("api_url"), *(info.get("node_urls") or {}).values()]
            if u and _get(u, token, "/api/v1/cluster") is not None
        ),
        info.get("api_url"),
    )
    url_b = url_b or next(iter((info.get("region_b") or {}).get("node_urls", {}).values()), None)
    regions = Table(title="Regions")
    for col in ("region", "API", "role", "leader (epoch)", "database", "lag"):
        regions.add_column(col)
    regions.add_row(*_region_row("A", url_a, token))
    regions.add_row(*_region_row("B", url_b, token))
    out: list[Any] = [regions]
    for url in (u for u in (url_a, url_b) if u):
        backups = _get(url, token, "/api/v1/backups/status")
        if backups and backups.get("enabled"):
            table = Table(title=f"Backups (as {url} reports them)")
            for col in ("repo", "full", "diff", "incr", "verify", "restore test", "overdue"):
                table.add_column(col)
            for repo in backups["repos"]:
                last = repo.get("last", {})
                table.add_row(
                    f"{repo['repo']} {repo['name']}",
                    *(str(last.get(k, "-"))[:19] for k in ("full", "diff", "incr")),
                    *(str(last.get(k, "-"))[:19] for k in ("verify", "restore_test")),
                    ", ".join(repo.get("overdue", [])) or "-",
                )
            out.append(table)
            break
    drills = sorted((state_dir / "drills").glob("drill-*.md"))
    out.append(drills[-1].read_text() if drills else "no drill yet (`runnerhub dr drill`)")
    Console().print(*out)
    return 0


def failback(state_dir: Path, switch_back: bool) -> int:
    console = Console()
    try:
        with console.status("region A rejoins as region B's standby…"):
            request_failback(state_dir)
        if switch_back:
            with console.status("the active role moves back to region A…"):
                request_failback(state_dir, "switch_back")
    except (DrillError, Timeout, OSError) as exc:
        console.print(f"[red]runnerhub dr failback: {exc}[/red]")
        return 1
    console.print(
        "region A is active again, region B its standby (`runnerhub dr status`)"
        if switch_back
        else "region A stands by for region B (`runnerhub dr status`)"
    )
    return 0
