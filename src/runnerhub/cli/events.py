"""`runnerhub events`: the latest events, or (with --follow) the live stream, one per line.

Following reconnects by itself when the stream breaks (a node restarted, HAProxy picked
another), sending the last id seen so that nothing is missed in between."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from runnerhub.cli.status import endpoint

RECONNECT_S = 1.0
Params = list[tuple[str, str | int | float | bool | None]]


def format_event(event: dict[str, Any]) -> str:
    """One line: time, node, kind, subject and the detail as key=value."""
    detail = event.get("detail") or {}
    pairs = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in detail.items())
    at = str(event.get("at", ""))[:23].replace("T", " ")
    subject = event.get("subject") or "-"
    return f"{at}  {event.get('node', '?'):<10} {event.get('kind', '?'):<22} {subject}  {pairs}"


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The `data:` of each Server-Sent Event (comments and other fields skipped)."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            try:
                event = json.loads("\n".join(data))
            except ValueError:
                event = None
            data = []
            if isinstance(event, dict):
                yield event


def show_events(
    state_dir: Path, url: str | None, token: str | None, kinds: list[str], follow: bool, limit: int
) -> int:
    base, tok = endpoint(state_dir, url, token)
    console = Console(highlight=False)
    headers = {"Authorization": f"Bearer {tok}"}
    params: Params = [("kind", k) for k in kinds]
    last: int | None = None
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
            r = client.get("/api/v1/events", params=[*params, ("limit", limit)])
            if r.status_code in (401, 403):
                console.print(f"[red]runnerhub: {r.status_code}: {r.json().get('detail')}[/red]")
                return 1
            r.raise_for_status()
            for event in reversed(r.json()["items"]):
                console.print(escape(format_event(event)))
                last = event["id"] if last is None else max(last, event["id"])
    except httpx.HTTPError as exc:
        console.print(f"[red]runnerhub: cannot reach {base}: {exc}[/red]")
        return 1
    if not follow:
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        _follow(console, base, headers, params, last)
    return 0


def _follow(
    console: Console,
    base: str,
    headers: dict[str, str],
    params: Params,
    last: int | None,
) -> None:
    while True:
        query = [*params, ("after", last)] if last is not None else params
        try:
            with httpx.stream(
                "GET",
                f"{base}/api/v1/events/stream",
                params=query,
                headers=headers,
                timeout=httpx.Timeout(5, read=15),
            ) as r:
                if r.status_code == 200:
                    for event in parse_sse(r.iter_lines()):
                        console.print(escape(format_event(event)))
                        last = event["id"] if last is None else max(last, event["id"])
        except httpx.HTTPError as exc:
            console.print(f"[yellow]stream interrupted ({type(exc).__name__}); reconnecting[/]")
        time.sleep(RECONNECT_S)  # pace reconnects to a node that is down
