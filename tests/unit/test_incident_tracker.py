"""Observations become incidents: opened on the first "down" after an "up" (begun after that
"up", noticed now), closed by the next "up", one per outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runnerhub.incidents.tracker import OutageTracker, incident_key

T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_outage_opens_once_and_closes_with_its_times() -> None:
    t = OutageTracker()
    assert t.observe("postgres", True, at(0)) is None
    assert t.observe("postgres", True, at(1)) is None
    change, opened = t.observe("postgres", False, at(1.8)) or (None, None)
    assert change == "opened" and opened is not None
    assert (opened.started_at, opened.detected_at) == (at(1), at(1.8))
    assert opened.key == incident_key("postgres", at(1)) == f"postgres:{int(at(1).timestamp())}"
    assert t.observe("postgres", False, at(3)) is None  # still the same outage
    change, closed = t.observe("postgres", True, at(21)) or (None, None)
    assert change == "closed" and closed is not None
    assert closed.key == opened.key and closed.recovered_at == at(21)
    assert t.open("postgres") is None


def test_components_are_tracked_apart_and_a_never_seen_one_opens_nothing() -> None:
    t = OutageTracker()
    assert t.observe("redis", False, at(0)) is None  # starting up, never up: not an outage
    t.observe("etcd", True, at(0))
    assert t.observe("etcd", False, at(1), kind="outage", detail={"up": 1}) is not None
    assert t.open("redis") is None
    incident = t.open("etcd")
    assert incident is not None and incident.detail == {"up": 1}
