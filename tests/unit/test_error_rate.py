"""Error rates as forecast signals (domain.rates): the failed share over a sliding window,
nothing from too few calls, and the same from cumulative counters such as a pool's."""

from __future__ import annotations

from runnerhub.domain.rates import CounterErrorRate, ErrorRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_failed_share_over_the_window() -> None:
    clock = Clock()
    rate = ErrorRate(window_s=60, min_calls=10, clock=clock)
    for i in range(40):
        rate.record(ok=i % 4 != 0)  # one in four fails
        clock.now += 0.5
    assert rate.rate() == 0.25


def test_too_few_calls_say_nothing() -> None:
    clock = Clock()
    rate = ErrorRate(window_s=60, min_calls=10, clock=clock)
    for _ in range(9):
        rate.record(ok=False)
    assert rate.rate() is None
    rate.record(ok=True)
    assert rate.rate() == 0.9


def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    rate = ErrorRate(window_s=60, min_calls=5, clock=clock)
    rate.add(calls=100, errors=100)  # an outage...
    clock.now += 61
    rate.add(calls=20, errors=0)  # ...a minute ago
    assert rate.rate() == 0.0
    clock.now += 61
    assert rate.rate() is None  # and nothing since


def test_counters_add_what_changed_and_survive_a_reset() -> None:
    clock = Clock()
    readings = iter([(100, 0), (150, 10), (200, 30), (5, 5), (45, 5)])
    sampler = CounterErrorRate(lambda: next(readings), ErrorRate(min_calls=10, clock=clock))
    assert sampler.sample() is None  # the first reading is only a baseline
    assert sampler.sample() == 10 / 50
    assert sampler.sample() == 30 / 100
    assert sampler.sample() == 30 / 100  # counters reset (a new pool): skipped, re-based
    assert sampler.sample() == 30 / 140
