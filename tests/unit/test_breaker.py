"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest

from runnerhub.domain.breaker import Breaker, BreakerState


def test_opens_after_the_threshold_of_failures_in_a_row() -> None:
    b = Breaker(failure_threshold=3, open_s=10)
    assert b.allow(0) and not b.failed(0, "503")
    b.succeeded()  # a success resets the count
    for t in (1, 2):
        assert b.allow(t) and not b.failed(t, "503")
    assert b.state is BreakerState.CLOSED
    assert b.allow(3) and b.failed(3, "connect timeout")  # the third in a row opens it
    assert b.state is BreakerState.OPEN and b.last_error == "connect timeout"
    assert not b.allow(5) and b.retry_in(5) == 8


def test_half_open_lets_one_trial_through_then_closes_on_success() -> None:
    b = Breaker(failure_threshold=1, open_s=10)
    b.allow(0)
    b.failed(0, "503")
    assert b.allow(10)  # the trial
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow(10.5)  # only one trial at a time
    assert b.succeeded() is BreakerState.HALF_OPEN
    assert b.state is BreakerState.CLOSED and b.allow(11) and b.failures == 0


def test_a_failed_trial_opens_it_again_for_the_full_period() -> None:
    b = Breaker(failure_threshold=1, open_s=10)
    b.allow(0)
    b.failed(0, "503")
    assert b.allow(12)
    assert not b.failed(12, "503 again")  # reopened, but it was not closed: no new opening
    assert b.state is BreakerState.OPEN and not b.allow(21) and b.allow(22)


@pytest.mark.parametrize(("threshold", "open_s"), [(0, 1.0), (1, 0.0)])
def test_bad_settings_are_refused(threshold: int, open_s: float) -> None:
    with pytest.raises(ValueError):
        Breaker(failure_threshold=threshold, open_s=open_s)
