"""Rate limits and retry policy: pure functions and a small memory, no I/O.

GitHub reports a primary limit per resource (``x-ratelimit-*`` headers on every answer)
and refuses with 403/429 when it is used up; secondary limits come as 403/429 with
``retry-after`` or a "secondary rate limit" message. Clocks are passed in: ``now_mono``
is the caller's monotonic clock, ``now_wall`` GitHub's (or our) Unix time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

# Without retry-after, GitHub asks for at least a minute's pause after a secondary limit.
SECONDARY_DEFAULT_WAIT_S = 60.0

IDEMPOTENT_METHODS = frozenset({"GET", "DELETE"})
RETRY_STATUSES = frozenset({500, 502, 503, 504})
# The request never left: safe to retry even a POST.
NEVER_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# The request may have reached GitHub: retry only what is idempotent.
TRANSIENT: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RateLimit:
    """One resource's window, as the last response described it."""

    resource: str
    limit: int
    remaining: int
    reset: float  # Unix time when the window resets
    used: int | None = None

    @property
    def reset_at(self) -> datetime:
        return datetime.fromtimestamp(self.reset, UTC)

    def as_json(self) -> dict[str, object]:
        return {
            "resource": self.resource,
            "limit": self.limit,
            "remaining": self.remaining,
            "reset": self.reset,
            "used": self.used,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object], resource: str | None = None) -> RateLimit:
        """From `as_json()` or a window of `GET /rate_limit`; KeyError, TypeError or
        ValueError when it is not one."""
        used = data.get("used")
        return cls(
            resource=resource or str(data["resource"]),
            limit=int(data["limit"]),  # type: ignore[call-overload]
            remaining=int(data["remaining"]),  # type: ignore[call-overload]
            reset=float(data["reset"]),  # type: ignore[arg-type]
            used=None if used is None else int(used),  # type: ignore[call-overload]
        )


@dataclass(frozen=True)
class Throttle:
    """What a rate-limit refusal asks of us."""

    secondary: bool
    wait_s: float
    reset: float | None  # Unix time, for a primary limit


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    try:
        limit = int(headers["x-ratelimit-limit"])
        remaining = int(headers["x-ratelimit-remaining"])
        reset = float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    used_raw = headers.get("x-ratelimit-used")
    used = int(used_raw) if used_raw is not None and used_raw.isdigit() else None
    resource = headers.get("x-ratelimit-resource") or "core"
    return RateLimit(resource=resource, limit=limit, remaining=remaining, reset=reset, used=used)


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait: ``retry-after`` is a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_wall)


def server_time(headers: Mapping[str, str], fallback: float) -> float:
    """GitHub's clock from the ``Date`` header: reset times are on that clock, not ours."""
    value = headers.get("date")
    if not value:
        return fallback
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return fallback
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def classify_throttle(
    status: int, headers: Mapping[str, str], message: str, now_wall: float
) -> Throttle | None:
    """A rate-limit refusal (primary or secondary), or None for any other answer."""
    if status not in (403, 429):
        return None
    retry_after = parse_retry_after(headers.get("retry-after"), now_wall)
    limit = parse_rate_limit(headers)
    exhausted = limit is not None and limit.remaining == 0
    reset = limit.reset if limit is not None and exhausted else None
    if retry_after is not None:
        return Throttle(secondary=not exhausted, wait_s=retry_after, reset=reset)
    if reset is not None:
        return Throttle(secondary=False, wait_s=max(0.0, reset - now_wall), reset=reset)
    if status == 429 or "rate limit" in message.lower():
        return Throttle(secondary=True, wait_s=SECONDARY_DEFAULT_WAIT_S, reset=None)
    return None


def may_retry_exception(method: str, exc: Exception) -> bool:
    """A POST only when it certainly never reached GitHub: a JIT config may exist."""
    if isinstance(exc, NEVER_SENT):
        return True
    return method in IDEMPOTENT_METHODS and isinstance(exc, TRANSIENT)


def may_retry_status(method: str, status: int) -> bool:
    return method in IDEMPOTENT_METHODS and status in RETRY_STATUSES


class RateLimitTracker:
    """Remembers the last window per bucket, and which bucket each endpoint draws on.

    A bucket is GitHub's resource name (``core``, ``actions_runner_registration``...),
    prefixed by the caller when another identity's windows must be kept apart.
    """

    def __init__(self) -> None:
        self._limits: dict[str, RateLimit] = {}
        self._deadlines: dict[str, float] = {}
        self._bucket_of: dict[str, str] = {}

    def record(
        self, endpoint: str, bucket: str, limit: RateLimit, *, now_mono: float, now_wall: float
    ) -> None:
        self._limits[bucket] = limit
        self._bucket_of[endpoint] = bucket
        self._deadlines[bucket] = now_mono + max(0.0, limit.reset - now_wall)

    def bucket_for(self, endpoint: str, default: str) -> str:
        return self._bucket_of.get(endpoint, default)

    def exhausted(self, bucket: str, now_mono: float) -> tuple[RateLimit, float] | None:
        """The window and its monotonic reset time, while it is used up; else None."""
        limit = self._limits.get(bucket)
        if limit is None or limit.remaining > 0:
            return None
        deadline = self._deadlines[bucket]
        return (limit, deadline) if deadline > now_mono else None

    def snapshot(self) -> dict[str, RateLimit]:
        return dict(self._limits)
