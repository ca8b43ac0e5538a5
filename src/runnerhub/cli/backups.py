"""`runnerhub backups`: each repository at a glance, then the newest backups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from runnerhub.cli.status import endpoint, fetch


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value, units = float(n), ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.0f} B" if units[0] == "B" else f"{value:.1f} {units[0]}"


def _when(value: str | None) -> str:
    return "-" if not value else value[:19].replace("T", " ")


def render_status(status: dict[str, Any]) -> Table:
    table = Table(title="Backup repositories" + ("" if status["enabled"] else " (disabled)"))
    for column in ("repo", "full", "diff", "incr", "verify", "restore test"):
        table.add_column(column, no_wrap=True)
    table.add_column("overdue / failing", overflow="fold")
    for r in status["repos"]:
        last = r["last"]
        failing = [
            f"{c['kind'].replace('_', ' ')} failed: {c['error']}"
            for c in r["checks"]
            if not c["ok"]
        ]
        table.add_row(
            f"{r['repo']} {r['name']}",
            *(_when(last.get(k)) for k in ("full", "diff", "incr", "verify", "restore_test")),
            "[red]" + "; ".join(r["overdue"] + failing) + "[/red]"
            if r["overdue"] or failing
            else "",
        )
    return table


def render_backups(items: list[dict[str, Any]]) -> Table:
    table = Table(title="Backups, newest first")
    for column in ("finished", "repo", "kind", "label", "took", "size", "WAL"):
        table.add_column(column, no_wrap=True)
    table.add_column("result", overflow="fold")
    for b in items:
        wal = f"{(b['wal_start'] or '')[-8:]}…{(b['wal_stop'] or '')[-8:]}" if b["ok"] else ""
        table.add_row(
            _when(b["finished_at"]),
            str(b["repo"]),
            b["kind"],
            b["label"] or "-",
            f"{b['duration_s']:.1f}s",
            _size(b["repo_bytes"]),
            wal,
            "[green]ok[/green]" if b["ok"] else f"[red]{b['error']}[/red]",
        )
    return table


def show_backups(state_dir: Path, url: str | None, token: str | None, limit: int) -> int:
    base, tok = endpoint(state_dir, url, token)
    console = Console()
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {tok}"}, timeout=5
        ) as client:
            console.print(render_status(fetch(client, "/api/v1/backups/status")))
            console.print(render_backups(fetch(client, f"/api/v1/backups?limit={limit}")["items"]))
    except httpx.HTTPError as exc:
        console.print(f"[red]runnerhub: cannot reach {base}: {exc}[/red]")
        return 1
    return 0
