"""Forecasting a failure from a trend: a believable trend is extrapolated to the limit,
noise and a spike that recedes are not, and a prediction needs confirmations to stand."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from runnerhub.predict.forecast import Detector, ForecastPolicy, fit, time_to_limit

POLICY = ForecastPolicy(limit=100.0, horizon_s=600, window_s=120, min_span_s=30, min_samples=10)


def test_fit_recovers_a_line_and_a_perfect_line_has_infinite_t() -> None:
    trend = fit([(t, 5 + 2 * t) for t in range(10)])
    assert trend is not None
    assert trend.slope == pytest.approx(2) and trend.intercept == pytest.approx(5)
    assert math.isinf(trend.t_stat) and trend.span_s == 9 and trend.samples == 10
    assert fit([(0, 1), (1, 2)]) is None and fit([(1, 1), (1, 2), (1, 3)]) is None


def test_a_steady_rise_is_extrapolated_to_the_limit() -> None:
    rng = random.Random(1)
    samples = [(float(t), 10 + 0.5 * t + rng.uniform(-1, 1)) for t in range(60)]
    trend = fit(samples)
    assert trend is not None
    eta = time_to_limit(trend, 59, POLICY)
    assert eta is not None and eta == pytest.approx((100 - 39.5) / 0.5, rel=0.05)


def test_noise_a_fall_too_little_history_or_a_far_crossing_predict_nothing() -> None:
    rng = random.Random(2)
    noise = fit([(float(t), 50 + rng.uniform(-5, 5)) for t in range(60)])
    falling = fit([(float(t), 90 - 0.5 * t) for t in range(60)])
    short = fit([(float(t), 10 + t) for t in range(5)])
    slow = fit([(float(t), 10 + 0.01 * t) for t in range(60)])  # 9,000 s away
    for trend in (noise, falling, short, slow):
        assert trend is not None
        assert time_to_limit(trend, 59, POLICY) is None
    at_limit = fit([(float(t), 100.0 + t) for t in range(3)])
    assert at_limit is not None and time_to_limit(at_limit, 2, POLICY) == 0.0


def test_free_space_fails_by_falling_to_its_limit() -> None:
    policy = ForecastPolicy(limit=0.0, rising=False, min_span_s=30, min_samples=10)
    trend = fit([(float(t), 1000 - 5 * t) for t in range(60)])
    assert trend is not None
    assert time_to_limit(trend, 59, policy) == pytest.approx(705 / 5)


def test_a_detector_raises_after_confirmations_and_clears_when_the_trend_goes() -> None:
    d = Detector("disk", ForecastPolicy(limit=100.0, min_span_s=10, min_samples=5, confirmations=3))
    etas = [d.observe(float(t), 20 + 0.5 * t) for t in range(20)]
    first = next(i for i, e in enumerate(etas) if e is not None)
    assert first == 12  # 10 s of history (t=10), then three agreeing evaluations
    assert d.eta_s == pytest.approx((100 - 29.5) / 0.5)
    for t in range(20, 200):  # it levels off: the prediction is withdrawn
        d.observe(float(t), 30.0)
    assert d.eta_s is None


def test_a_burst_that_holds_is_a_jump_not_a_trend() -> None:
    rng = random.Random(3)
    step = [(float(t), (20.0 if t < 30 else 45.0) + rng.uniform(-1, 1)) for t in range(60)]
    ramp = [(float(t), 20 + 0.5 * t + rng.uniform(-1, 1)) for t in range(60)]
    jump, trend = fit(step), fit(ramp)
    assert jump is not None and trend is not None
    assert jump.slope > 0 and jump.t_stat > POLICY.min_t  # a line alone would extrapolate it
    assert jump.is_step and time_to_limit(jump, 59, POLICY) is None
    assert not trend.is_step and time_to_limit(trend, 59, POLICY) is not None


def test_a_climb_from_a_flat_level_waits_until_it_has_lasted() -> None:
    rng = random.Random(4)

    def stick(t: int, start: int) -> float:  # flat at 0, then 0.7 per second
        return max(0.0, 0.7 * (t - start)) + rng.uniform(-0.5, 0.5)

    span = POLICY.min_span_s  # the early stretch: from 30 s to 15 s ago
    young = fit([(float(t), stick(t, 50)) for t in range(65)], span)  # climbing for 15 s
    assert young is not None
    assert young.early_t < POLICY.min_early_t and time_to_limit(young, 64, POLICY) is None
    old = fit([(float(t), stick(t, 20)) for t in range(65)], span)  # climbing for 45 s
    assert old is not None and old.early_t >= POLICY.min_early_t
    assert time_to_limit(old, 64, POLICY) is not None
    # The early test on its own: the same believable trend, with a flat early stretch.
    assert time_to_limit(replace(old, early_t=1.0), 64, POLICY) is None


def test_a_prediction_is_withdrawn_only_after_three_doubtful_evaluations() -> None:
    policy = ForecastPolicy(limit=100.0, min_span_s=10, min_samples=5, confirmations=3)
    d = Detector("disk", policy)
    for t in range(20):
        d.observe(float(t), 20 + 0.5 * t)
    assert d.eta_s == pytest.approx(141.0)
    # The signal drops: no believable trend any more. The prediction is held, counting
    # down with the clock, for two evaluations, and withdrawn at the third.
    assert [d.observe(float(t), 0.0) for t in (20, 21, 22)] == [140.0, 139.0, None]
    assert d.eta_s is None
