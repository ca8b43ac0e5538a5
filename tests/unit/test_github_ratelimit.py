"""Rate limits: header parsing, throttle classification, and the client's behaviour."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from runnerhub.github import GitHubClient, PatAuth, RateLimited
from runnerhub.github.budget import write_wait
from runnerhub.github.ratelimit import (
    SECONDARY_DEFAULT_WAIT_S,
    RateLimit,
    RateLimitTracker,
    classify_throttle,
    may_retry_exception,
    may_retry_status,
    parse_rate_limit,
    parse_retry_after,
    server_time,
)

NOW = 1_700_000_000.0
BASE = "https://api.github.test"


def limit_headers(
    remaining: int, reset: float, resource: str = "core", limit: int = 5000
) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-used": str(limit - remaining),
        "x-ratelimit-reset": str(int(reset)),
        "x-ratelimit-resource": resource,
    }


# -- pure parsing ------------------------------------------------------------------------


def test_parse_rate_limit() -> None:
    parsed = parse_rate_limit(limit_headers(42, NOW + 60, "actions_runner_registration"))
    assert parsed == RateLimit(
        resource="actions_runner_registration",
        limit=5000,
        remaining=42,
        reset=NOW + 60,
        used=4958,
    )
    assert parsed.reset_at == datetime.fromtimestamp(NOW + 60, UTC)
    assert parse_rate_limit({}) is None
    assert parse_rate_limit({**limit_headers(1, NOW), "x-ratelimit-remaining": "x"}) is None
    without_resource = limit_headers(1, NOW)
    del without_resource["x-ratelimit-resource"]
    parsed = parse_rate_limit(without_resource)
    assert parsed is not None and parsed.resource == "core"


def test_parse_retry_after() -> None:
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("30", NOW) == 30.0
    assert parse_retry_after("-5", NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("inf", NOW) is None
    http_date = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert parse_retry_after(http_date, NOW) == 90.0


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == seconds


def test_server_time_prefers_date_header() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW, UTC), usegmt=True)
    assert server_time({"date": date}, fallback=0.0) == NOW
    assert server_time({}, fallback=5.0) == 5.0
    assert server_time({"date": "garbage"}, fallback=5.0) == 5.0


def test_classify_primary() -> None:
    throttle = classify_throttle(403, limit_headers(0, NOW + 120), "API rate limit exceeded", NOW)
    assert throttle is not None
    assert throttle.secondary is False
    assert throttle.wait_s == 120
    assert throttle.reset == NOW + 120


def test_classify_secondary_retry_after() -> None:
    headers = {**limit_headers(10, NOW + 999), "retry-after": "30"}
    throttle = classify_throttle(429, headers, "", NOW)
    assert throttle is not None
    assert (throttle.secondary, throttle.wait_s, throttle.reset) == (True, 30, None)


def test_classify_secondary_message_without_retry_after() -> None:
    message = "You have exceeded a secondary rate limit. Please wait a few minutes."
    throttle = classify_throttle(403, limit_headers(10, NOW + 999), message, NOW)
    assert throttle is not None
    assert (throttle.secondary, throttle.wait_s) == (True, SECONDARY_DEFAULT_WAIT_S)


def test_classify_other_answers() -> None:
    assert classify_throttle(403, limit_headers(10, NOW), "Resource not accessible", NOW) is None
    assert classify_throttle(500, {"retry-after": "5"}, "", NOW) is None
    plain_429 = classify_throttle(429, {}, "", NOW)
    assert plain_429 is not None and plain_429.wait_s == SECONDARY_DEFAULT_WAIT_S


@given(st.integers(min_value=100, max_value=599).filter(lambda s: s not in (403, 429)))
def test_only_403_and_429_throttle(status: int) -> None:
    assert classify_throttle(status, limit_headers(0, NOW + 60), "rate limit", NOW) is None


@pytest.mark.parametrize(
    ("method", "exc", "expected"),
    [
        ("GET", httpx.ConnectError("x"), True),
        ("GET", httpx.ReadTimeout("x"), True),
        ("DELETE", httpx.ReadError("x"), True),
        ("POST", httpx.ConnectError("x"), True),
        ("POST", httpx.ConnectTimeout("x"), True),
        ("POST", httpx.PoolTimeout("x"), True),
        ("POST", httpx.ReadTimeout("x"), False),
        ("POST", httpx.WriteError("x"), False),
        ("POST", httpx.RemoteProtocolError("x"), False),
    ],
)
def test_may_retry_exception(method: str, exc: Exception, expected: bool) -> None:
    assert may_retry_exception(method, exc) is expected


def test_may_retry_status() -> None:
    assert may_retry_status("GET", 503) and may_retry_status("DELETE", 500)
    assert not may_retry_status("POST", 503)
    assert not may_retry_status("GET", 501)
    assert not may_retry_status("GET", 404)


def test_tracker() -> None:
    tracker = RateLimitTracker()
    tracker.record("/a", "core", RateLimit("core", 5000, 0, NOW + 60), now_mono=10, now_wall=NOW)
    assert tracker.bucket_for("/a", "x") == "core"
    assert tracker.bucket_for("/b", "x") == "x"
    exhausted = tracker.exhausted("core", now_mono=69.9)
    assert exhausted is not None and exhausted[1] == 70
    assert tracker.exhausted("core", now_mono=70) is None
    tracker.record("/a", "core", RateLimit("core", 5000, 1, NOW + 60), now_mono=10, now_wall=NOW)
    assert tracker.exhausted("core", now_mono=11) is None


# -- the client --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.mono = 500.0
        self.wall = NOW
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.mono

    def wall_clock(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


Handler = Callable[[httpx.Request], httpx.Response]


def make(handler: Handler, clock: Clock) -> GitHubClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return GitHubClient(
        BASE,
        PatAuth("ghp_x"),
        http=http,
        sleep=clock.sleep,
        clock=clock.clock,
        wall_clock=clock.wall_clock,
    )


def gauge(name: str, resource: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"resource": resource})


async def test_limits_recorded_and_exported() -> None:
    clock = Clock()
    headers = limit_headers(4321, NOW + 600, "core")
    client = make(lambda r: httpx.Response(200, json=[], headers=headers), clock)
    await client.list_org_repos("acme")
    assert client.rate_limit["core"].remaining == 4321
    assert gauge("runnerhub_github_rate_limit_remaining", "core") == 4321
    assert gauge("runnerhub_github_rate_limit_reset_timestamp_seconds", "core") == NOW + 600


async def test_primary_limit_refuses_until_reset() -> None:
    clock = Clock()
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        remaining = 0 if len(requests) == 1 else 4999
        return httpx.Response(200, json=[], headers=limit_headers(remaining, NOW + 60))

    client = make(handler, clock)
    await client.list_org_repos("acme")  # succeeds, but spends the last request
    with pytest.raises(RateLimited) as info:
        await client.list_org_repos("acme")
    assert len(requests) == 1  # refused without calling GitHub
    err = info.value
    assert err.retry_at == clock.mono + 60
    assert err.reset_at == datetime.fromtimestamp(NOW + 60, UTC)
    assert err.status is None
    assert "not calling GitHub" in str(err)
    clock.advance(59)
    with pytest.raises(RateLimited):
        await client.get_job("acme/a", 1)  # another endpoint, same core bucket
    clock.advance(1)
    await client.list_org_repos("acme")
    assert len(requests) == 2


async def test_primary_403_raises_and_then_refuses() -> None:
    clock = Clock()
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(
            403,
            json={"message": "API rate limit exceeded for installation ID 1."},
            headers=limit_headers(0, NOW + 1800),
        )

    client = make(handler, clock)
    with pytest.raises(RateLimited) as info:
        await client.list_runners("repo:o/r")
    err = info.value
    assert err.secondary is False
    assert err.status == 403
    assert err.retry_at == clock.mono + 1800
    assert err.reset_at == datetime.fromtimestamp(NOW + 1800, UTC)
    assert clock.sleeps == []
    with pytest.raises(RateLimited):
        await client.list_runners("repo:o/r")
    assert len(requests) == 1


async def test_exhausted_bucket_does_not_block_other_buckets() -> None:
    clock = Clock()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("generate-jitconfig"):
            headers = limit_headers(0, NOW + 60, "actions_runner_registration")
            return httpx.Response(403, json={"message": "rate limit"}, headers=headers)
        return httpx.Response(200, json=[], headers=limit_headers(4000, NOW + 60, "core"))

    client = make(handler, clock)
    with pytest.raises(RateLimited):
        await client.generate_jitconfig("org:acme", "rh-1", ["x"])
    assert await client.list_org_repos("acme") == []
    with pytest.raises(RateLimited, match="not calling GitHub"):
        await client.generate_jitconfig("org:acme", "rh-1", ["x"])
    assert set(client.rate_limit) == {"actions_runner_registration", "core"}


async def test_reset_is_read_on_githubs_clock() -> None:
    # Our wall clock is an hour fast; the Date header tells how far the reset really is.
    clock = Clock()
    clock.wall = NOW + 3600
    date = format_datetime(datetime.fromtimestamp(NOW, UTC), usegmt=True)
    headers = {**limit_headers(0, NOW + 60), "date": date}
    client = make(
        lambda r: httpx.Response(403, json={"message": "rate limit"}, headers=headers), clock
    )
    with pytest.raises(RateLimited) as info:
        await client.list_org_repos("acme")
    assert info.value.retry_at == clock.mono + 60


async def test_short_retry_after_is_waited_and_retried_once() -> None:
    clock = Clock()
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(
                429, json={"message": "secondary rate limit"}, headers={"retry-after": "1"}
            )
        return httpx.Response(200, json=[{"full_name": "acme/a"}])

    client = make(handler, clock)
    assert await client.list_org_repos("acme") == ["acme/a"]
    assert clock.sleeps == [1.0]
    assert len(requests) == 2


async def test_short_retry_after_twice_raises() -> None:
    clock = Clock()
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(403, json={"message": "x"}, headers={"retry-after": "1"})

    client = make(handler, clock)
    with pytest.raises(RateLimited):
        await client.list_org_repos("acme")
    assert len(requests) == 2
    assert clock.sleeps == [1.0]


async def test_long_retry_after_raises_at_once() -> None:
    clock = Clock()
    message = "You have exceeded a secondary rate limit."
    client = make(
        lambda r: httpx.Response(403, json={"message": message}, headers={"retry-after": "30"}),
        clock,
    )
    with pytest.raises(RateLimited) as info:
        await client.list_org_repos("acme")
    err = info.value
    assert err.secondary is True
    assert err.retry_at == clock.mono + 30
    assert err.reset_at is None
    assert clock.sleeps == []
    assert str(err) == (f"GitHub GET /orgs/{{org}}/repos: 403 Forbidden: {message}; retry in 30 s")


async def test_post_is_not_retried_on_short_retry_after() -> None:
    clock = Clock()
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(429, headers={"retry-after": "1"})

    client = make(handler, clock)
    with pytest.raises(RateLimited):
        await client.generate_jitconfig("org:acme", "rh-1", ["x"])
    assert len(requests) == 1
    assert clock.sleeps == []


async def test_secondary_without_retry_after_waits_a_minute() -> None:
    clock = Clock()
    body: dict[str, Any] = {"message": "You have exceeded a secondary rate limit."}
    client = make(lambda r: httpx.Response(403, json=body), clock)
    with pytest.raises(RateLimited) as info:
        await client.list_org_repos("acme")
    assert info.value.retry_at == clock.mono + SECONDARY_DEFAULT_WAIT_S


def test_the_write_budget_waits_for_the_next_minute_only_when_exceeded() -> None:
    assert write_wait(80, 80, now_wall=600.0) is None
    assert write_wait(81, 80, now_wall=610.0) == 50.0
    assert write_wait(81, 80, now_wall=659.5) == 0.5
