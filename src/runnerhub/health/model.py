"""Health results and how they add up: pure, no I/O.

A check ends `ok`, `degraded` (working, but something needs a look: a replica behind, one
etcd member down, the spool holding a backlog) or `failing` (that dependency does not
work). The node as a whole is `failing` when a critical check fails (it cannot do its job:
take deliveries, reach its database, have a leader), `degraded` when anything else is not
ok, else `ok`. A result older than its check's staleness limit counts as degraded: a check
that hangs past its own timeout is reported, never waited for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Status = Literal["ok", "degraded", "failing"]
STATUS_CODE: dict[Status, int] = {"ok": 0, "degraded": 1, "failing": 2}


@dataclass(frozen=True)
class Outcome:
    """What a check function returns: its verdict and what it saw."""

    status: Status
    detail: dict[str, Any] = field(default_factory=dict)
    message: str | None = None  # why, when not ok


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    critical: bool
    checked_at: float  # monotonic, when the check finished (or gave up)
    checked_at_wall: float  # Unix time, for people
    latency_ms: float | None  # None: no answer (timed out, still running)
    detail: dict[str, Any] = field(default_factory=dict)
    message: str | None = None

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.checked_at)

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "critical": self.critical,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "age_s": round(self.age_s(now), 3),
            "checked_at": self.checked_at_wall,
            "message": self.message,
            "detail": self.detail,
        }


def worse(a: Status, b: Status) -> Status:
    return a if STATUS_CODE[a] >= STATUS_CODE[b] else b


def aged(result: CheckResult, now: float, max_age_s: float) -> CheckResult:
    """The result as it stands at `now`: degraded once older than `max_age_s`."""
    age = result.age_s(now)
    if age <= max_age_s:
        return result
    message = f"not checked for {age:.1f} s (the check is stuck or the node overloaded)"
    if result.message:
        message += f"; last: {result.message}"
    return replace(result, status=worse(result.status, "degraded"), message=message)


def overall(results: list[CheckResult]) -> Status:
    status: Status = "ok"
    for r in results:
        if r.status == "failing" and r.critical:
            return "failing"
        if r.status != "ok":
            status = "degraded"
    return status
