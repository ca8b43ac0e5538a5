"""When will a metric reach its limit? Pure, no I/O.

Like Prometheus' `predict_linear`, a least-squares line through the recent samples is
extended to the limit. Unlike it, a trend must also be believable before it is reported,
because a forecast is only useful if it rarely cries wolf:

- enough history (`min_span_s` of samples, at least `min_samples`);
- a slope clearly above the noise: its t-statistic (slope / standard error) at least
  `min_t` — ordinary jitter and a short spike that recedes do not make a trend;
- not a jump: when one jump between two levels fits the window better than the line, the
  rise is a burst that holds (a batch of work, a cache warming), not a trend;
- not young: the climb must already show in the first half of the last `min_span_s` (that
  stretch's own slope has a t-statistic of at least `min_early_t`). A level that was flat
  until a moment ago and now climbs (a replica stalled for a few seconds, a short run of
  errors) has no history as a trend yet; one that keeps climbing is reported once it has
  climbed for more than half of `min_span_s`;
- the crossing within `horizon_s` (further out is not news yet).

`Detector` adds persistence: a prediction is raised only after `confirmations` evaluations
in a row agree, and withdrawn only after as many in a row do not (a noisy signal would
otherwise raise, withdraw and raise again, an incident each time).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Trend:
    slope: float  # units per second
    intercept: float  # value at t = 0
    t_stat: float  # slope / its standard error (±inf for a perfect line)
    span_s: float
    samples: int
    sse: float = 0.0  # the squared residuals of the line
    step_sse: float = math.inf  # those of the best two-level (one jump) fit
    early_t: float = math.inf  # the t-statistic of the early stretch's own slope

    @property
    def is_step(self) -> bool:
        """The data look more like one jump between two levels than like a slope: a burst
        that holds, not a trend (and a jump is no reason to extrapolate)."""
        return self.step_sse < self.sse

    def at(self, t: float) -> float:
        return self.intercept + self.slope * t


def fit(samples: Iterable[tuple[float, float]], established_s: float | None = None) -> Trend | None:
    """Least-squares line through (t, value) samples; None with fewer than 3. The early
    stretch is the first half of the last `established_s` (default: of all samples)."""
    pts = list(samples)
    trend = _line(pts)
    if trend is None:
        return None
    end = pts[-1][0]
    span = established_s if established_s is not None else end - pts[0][0]
    early = _line([(t, v) for t, v in pts if end - span <= t <= end - span / 2])
    early_t = early.t_stat if early is not None else math.inf
    return replace(trend, step_sse=_step_sse(pts), early_t=early_t)


def _line(pts: list[tuple[float, float]]) -> Trend | None:
    n = len(pts)
    if n < 3:
        return None
    mean_t = sum(t for t, _ in pts) / n
    mean_v = sum(v for _, v in pts) / n
    sxx = sum((t - mean_t) ** 2 for t, _ in pts)
    if sxx == 0:
        return None
    sxy = sum((t - mean_t) * (v - mean_v) for t, v in pts)
    slope = sxy / sxx
    intercept = mean_v - slope * mean_t
    residual = sum((v - (intercept + slope * t)) ** 2 for t, v in pts)
    stderr = math.sqrt(residual / (n - 2) / sxx) if n > 2 else math.inf
    # A perfect line is as sure as it gets, in the slope's direction.
    sure = math.copysign(math.inf, slope) if slope else 0.0
    t_stat = sure if stderr == 0 else slope / stderr
    return Trend(slope, intercept, t_stat, pts[-1][0] - pts[0][0], n, residual)


def _step_sse(pts: list[tuple[float, float]]) -> float:
    """The least squared error of two constant levels with one jump (at least 3 samples
    each side), by prefix sums: O(n)."""
    n = len(pts)
    if n < 6:
        return math.inf
    values = [v for _, v in pts]
    total, total_sq = sum(values), sum(v * v for v in values)
    best = math.inf
    left = left_sq = 0.0
    for k in range(1, n):
        left += values[k - 1]
        left_sq += values[k - 1] ** 2
        if k < 3 or n - k < 3:
            continue
        right, right_sq = total - left, total_sq - left_sq
        sse = (left_sq - left * left / k) + (right_sq - right * right / (n - k))
        best = min(best, sse)
    return best


@dataclass(frozen=True)
class ForecastPolicy:
    limit: float  # the value at which the thing fails
    horizon_s: float = 900.0  # report crossings this close, not further
    window_s: float = 300.0  # history used for the fit
    min_span_s: float = 60.0
    min_samples: int = 10
    min_t: float = 8.0
    min_early_t: float = 2.0  # the slope of the first half of the last min_span_s, alone
    confirmations: int = 3
    rising: bool = True  # fails by growing (False: by shrinking to the limit, e.g. free space)


def time_to_limit(trend: Trend, now: float, policy: ForecastPolicy) -> float | None:
    """Seconds from `now` until the trend reaches the limit, if it is believable and
    within the horizon; 0 when already there."""
    sign = 1.0 if policy.rising else -1.0
    current = trend.at(now)
    if sign * (current - policy.limit) >= 0:
        return 0.0
    if trend.samples < policy.min_samples or trend.span_s < policy.min_span_s:
        return None
    if sign * trend.slope <= 0 or sign * trend.t_stat < policy.min_t or trend.is_step:
        return None
    if sign * trend.early_t < policy.min_early_t:
        return None  # flat (or falling) until recently: not a trend yet
    eta = (policy.limit - current) / trend.slope
    return eta if 0 <= eta <= policy.horizon_s else None


class Detector:
    """One signal's history and its standing prediction."""

    def __init__(self, name: str, policy: ForecastPolicy) -> None:
        self.name = name
        self.policy = policy
        self._samples: deque[tuple[float, float]] = deque()
        self._agreeing = 0
        self._doubting = 0  # evaluations in a row without a forecast, while one stands
        self._eta_at = 0.0  # when the standing forecast was last made
        self.eta_s: float | None = None  # the raised prediction, None when none stands

    def observe(self, t: float, value: float) -> float | None:
        """Add a sample; the standing prediction's time to failure (None: none)."""
        self._samples.append((t, value))
        while self._samples and self._samples[0][0] < t - self.policy.window_s:
            self._samples.popleft()
        trend = fit(self._samples, self.policy.min_span_s)
        eta = None if trend is None else time_to_limit(trend, t, self.policy)
        if eta is None:
            self._agreeing = 0
            if self.eta_s is not None:
                self._doubting += 1
                if self._doubting < self.policy.confirmations:  # held, counting down
                    return max(0.0, self.eta_s - (t - self._eta_at))
            self.eta_s = None
            return None
        self._doubting = 0
        self._agreeing += 1
        if self._agreeing >= self.policy.confirmations or self.eta_s is not None:
            self.eta_s, self._eta_at = eta, t
        return self.eta_s
