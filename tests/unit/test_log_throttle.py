"""The throttle on log lines outsiders can trigger: a few per window, the rest counted."""

from __future__ import annotations

from runnerhub.logs import Throttle


def test_past_the_limit_lines_are_counted_and_the_count_rides_on_the_next_one() -> None:
    t = Throttle(limit=3, window_s=10)
    assert [t.admit(0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert t.admit(9.9) is None  # still the same window
    assert t.admit(10.0) == 3  # a new window: let through, with the three held back
    assert [t.admit(10.5) for _ in range(3)] == [0, 0, None]
