"""Whether the recorded leader still leads, from its heartbeat (domain/vacancy.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runnerhub.domain.vacancy import still_leading

SINCE = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
BEFORE, AFTER = SINCE - timedelta(seconds=1), SINCE + timedelta(seconds=1)


def test_a_heartbeat_saying_leader_leads() -> None:
    assert still_leading(SINCE, "leader", AFTER, 0.5, 3.0)


def test_a_follower_heartbeat_from_before_taking_office_is_not_a_step_down() -> None:
    assert still_leading(SINCE, "follower", BEFORE, 0.5, 3.0)


def test_a_follower_heartbeat_after_taking_office_is_a_step_down() -> None:
    assert not still_leading(SINCE, "follower", AFTER, 0.5, 3.0)


def test_a_silent_or_unknown_leader_does_not_lead() -> None:
    assert not still_leading(SINCE, "leader", AFTER, 3.0, 3.0)
    assert not still_leading(SINCE, None, None, None, 3.0)
