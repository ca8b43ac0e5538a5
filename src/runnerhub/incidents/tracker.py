"""From observations to incidents: pure, no I/O, times passed in.

A component is observed up or down now and then (a health check, a heartbeat). The first
"down" after an "up" opens an incident: it began after the last "up" (`started_at`, a bound:
the fault happened between the two) and was noticed now (`detected_at`). The next "up"
closes it (`recovered_at`). Repeated observations in between change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

Change = Literal["opened", "closed"]


@dataclass(frozen=True)
class Incident:
    key: str
    component: str
    kind: str
    summary: str
    detected_at: datetime
    started_at: datetime | None = None
    recovered_at: datetime | None = None
    action: str | None = None  # what RunnerHub (or the component's own failover) did
    detail: dict[str, Any] = field(default_factory=dict)


def incident_key(component: str, began: datetime) -> str:
    """One name per incident, the same on every node that sees it begin at that second."""
    return f"{component}:{int(began.timestamp())}"


class OutageTracker:
    def __init__(self) -> None:
        self._last_up: dict[str, datetime] = {}
        self._open: dict[str, Incident] = {}

    def open(self, component: str) -> Incident | None:
        return self._open.get(component)

    def observe(
        self,
        component: str,
        up: bool,
        now: datetime,
        kind: str = "outage",
        summary: str | None = None,
        detail: dict[str, Any] | None = None,
        action: str | None = None,
    ) -> tuple[Change, Incident] | None:
        if up:
            self._last_up[component] = now
            incident = self._open.pop(component, None)
            if incident is None:
                return None
            return "closed", replace(incident, recovered_at=now)
        if component in self._open:
            return None
        started = self._last_up.get(component)
        if started is None:
            return None  # never seen up (still starting): not an incident of ours
        incident = Incident(
            key=incident_key(component, started),
            component=component,
            kind=kind,
            summary=summary or f"{component} unavailable",
            detected_at=now,
            started_at=started,
            action=action,
            detail=detail or {},
        )
        self._open[component] = incident
        return "opened", incident
