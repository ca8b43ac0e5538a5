"""Whether the leadership PostgreSQL records is still held.

The `leadership` row names the last node that took office; it stays when that node dies or
steps down, so read alone it shows a leader while nobody leads. The node's own heartbeat
says whether it still does."""

from __future__ import annotations

from datetime import datetime


def still_leading(
    since: datetime,
    role: str | None,
    last_seen: datetime | None,
    silent_s: float | None,
    stale_after_s: float,
) -> bool:
    """`role`, `last_seen` and `silent_s` are the recorded leader's heartbeat (None: it has
    none). A leader takes office before its next heartbeat says so, so a "follower" heard
    before `since` is not a step-down."""
    if role is None or last_seen is None or silent_s is None:
        return False
    if silent_s >= stale_after_s:
        return False  # killed, frozen or cut off
    return role == "leader" or last_seen <= since
