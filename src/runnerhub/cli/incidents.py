"""`runnerhub incidents`: failovers and incidents as a Rich table, newest first."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from rich.console import Console
from rich.table import Table

from runnerhub.cli.status import endpoint, fetch


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def render(items: list[dict[str, Any]]) -> Table:
    table = Table(title="Incidents", show_lines=False)
    for column in ("detected", "component", "kind", "detection", "down for"):
        table.add_column(column, no_wrap=True)
    for column in ("summary", "action"):
        table.add_column(column, overflow="fold")
    for i in items:
        down = _s(i["recovery_s"]) if i["recovered_at"] else "[red]ongoing[/red]"
        table.add_row(
            str(i["detected_at"])[:19].replace("T", " "),
            i["component"],
            i["kind"],
            _s(i["detection_s"]),
            down,
            i["summary"],
            i["action"] or "",
        )
    return table


def show_incidents(
    state_dir: Path,
    url: str | None,
    token: str | None,
    component: str | None,
    open_only: bool,
    limit: int,
) -> int:
    base, tok = endpoint(state_dir, url, token)
    console = Console()
    params: dict[str, str | int] = {"limit": limit}
    if open_only:
        params["open"] = "true"
    if component:
        params["component"] = component
    query = f"/api/v1/incidents?{urlencode(params)}"
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {tok}"}, timeout=5
        ) as client:
            console.print(render(fetch(client, query)["items"]))
    except httpx.HTTPError as exc:
        console.print(f"[red]runnerhub: cannot reach {base}: {exc}[/red]")
        return 1
    return 0
