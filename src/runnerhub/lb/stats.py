"""HAProxy's stats page as CSV (`<stats uri>;csv`): each backend server's state, for the
health check and the dashboard. Parsing is pure (tests/unit/test_lb_stats.py)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

# HAProxy's words for a server's state, first word only ("UP 1/3" is rising, still up).
STATES = {"UP": "up", "DOWN": "down", "DRAIN": "drain", "MAINT": "maint", "NOLB": "nolb"}
SUMMARY_ROWS = ("FRONTEND", "BACKEND")


@dataclass(frozen=True)
class ServerState:
    backend: str
    server: str
    status: str  # up, down, drain, maint, nolb or unchecked
    status_text: str  # HAProxy's own words ("DOWN 1/2", "MAINT (resolution)")
    addr: str | None  # "ip:port", when HAProxy says


def stats_rows(text: str) -> list[dict[str, str]]:
    """The CSV's rows as dicts (its header line starts with '# ')."""
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def backends_down(text: str) -> list[str]:
    """Backends with no server able to take traffic (HAProxy's BACKEND row is DOWN). One
    server down is often by design (the PostgreSQL backend's replicas), a whole backend not."""
    return [
        r.get("pxname", "")
        for r in stats_rows(text)
        if r.get("svname") == "BACKEND" and (r.get("status") or "").startswith("DOWN")
    ]


def servers(text: str) -> list[ServerState]:
    """Each backend server's state. A `server-template` slot nobody holds (in maintenance at
    address 0.0.0.0; the address is in the CSV with `stats show-legends`) is not a server
    yet and is left out."""
    out = []
    for row in stats_rows(text):
        name = row.get("svname", "")
        if not name or name in SUMMARY_ROWS:
            continue
        words = (row.get("status") or "").strip()
        first = words.split(" ", 1)[0].split("(", 1)[0]
        status = STATES.get(first, "unchecked" if words.startswith("no check") else "unknown")
        addr = row.get("addr") or None
        if status == "maint" and addr is not None and addr.startswith("0.0.0.0"):
            continue
        out.append(ServerState(row.get("pxname", ""), name, status, words, addr))
    return out
