"""`runnerhub dr restore`: point-in-time recovery of the local cluster into a new cluster."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from rich.console import Console

from runnerhub.backup.pitr import Target, TargetError
from runnerhub.config import Settings, load_settings
from runnerhub.dev.cluster.dr import restore_local
from runnerhub.dev.cluster.patroni import PatroniError
from runnerhub.dev.cluster.region import activate_local_node
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
        if before_event is not None:
            target = Target(time=_event_time(state_dir, before_event))
        elif to is not None:
            try:
                target = Target(time=datetime.fromisoformat(to))
            except ValueError:
                raise TargetError(
                    f"{to!r} is not a time (like 2026-11-30T19:00:00+00:00)"
                ) from None
        else:
            target = Target(lsn=to_lsn)
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
    try:
        with console.status("promoting…"):
            report = asyncio.run(dr_promote(settings, webhook_url, force))
    except PromotionRefused as exc:
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
    info = json.loads((state_dir / "cluster.json").read_text())
    region = info.get("region_b")
    if not region:
        Console().print("[red]runnerhub dr promote: this cluster has no region B (up --dr)[/red]")
        return 2
    name, url = next(iter(region["node_urls"].items()))
    path = Path(info["config_files"][name])
    code = promote(load_settings(path), webhook_url or f"{url}/webhooks/github", force)
    if code == 0:
        activate_local_node(path, int(info["pids"].get(name) or 0))
    return code
