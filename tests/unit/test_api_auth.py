"""Token checks without a server: expiry, the failed-auth limit, who a request is from."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import HTTPException

from runnerhub.api.auth import FailedAuthLimit, Found, Principal, TokenAuth, request_source
from runnerhub.cli.main import parse_duration
from runnerhub.config import ApiToken

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
BAD = "Bearer not-a-token-at-all"


def token(name: str, value: str, expires_at: datetime | None = None) -> ApiToken:
    return ApiToken.model_validate(
        {"name": name, "token": value, "role": "read", "expires_at": expires_at}
    )


async def test_an_expired_static_token_is_refused_and_says_so() -> None:
    auth = TokenAuth(
        [
            token("old", "old-token-0123456789", NOW - timedelta(seconds=1)),
            token("new", "new-token-0123456789", NOW + timedelta(days=1)),
        ],
        now=lambda: NOW,
    )
    assert (await auth.identify("Bearer new-token-0123456789")).name == "new"
    with pytest.raises(HTTPException) as info:
        await auth.identify("Bearer old-token-0123456789")
    assert info.value.status_code == 401
    assert "'old' expired at 2026-12-04T11:59:59+00:00" in str(info.value.detail)


async def test_the_store_is_asked_only_what_static_tokens_do_not_know() -> None:
    asked: list[str] = []

    async def lookup(value: str) -> Found | None:
        asked.append(value)
        return Found(Principal("ci", "admin"), None) if value == "rht_x" else None

    auth = TokenAuth([token("static", "static-token-0123456789")], stored=lookup)
    assert (await auth.identify("Bearer static-token-0123456789")).name == "static"
    assert (await auth.authorize("Bearer rht_x", "admin")).name == "ci"
    with pytest.raises(HTTPException):
        await auth.identify("Bearer rht_y")
    assert asked == ["rht_x", "rht_y"]


async def test_a_source_that_keeps_guessing_gets_429_until_its_minute_is_over() -> None:
    clock = [100.0]
    auth = TokenAuth(
        [token("t", "good-token-0123456789")],
        limit=FailedAuthLimit(3, clock=lambda: clock[0]),
    )
    for _ in range(3):
        with pytest.raises(HTTPException) as info:
            await auth.identify(BAD, source="10.0.0.9")
        assert info.value.status_code == 401
    with pytest.raises(HTTPException) as info:  # even the right token, from there
        await auth.identify("Bearer good-token-0123456789", source="10.0.0.9")
    assert info.value.status_code == 429
    assert info.value.headers == {"Retry-After": "60"}
    # Another source is not held up by it.
    assert (await auth.identify("Bearer good-token-0123456789", source="10.0.0.8")).name == "t"
    clock[0] += 60
    assert (await auth.identify("Bearer good-token-0123456789", source="10.0.0.9")).name == "t"


def test_the_limit_forgets_sources_beyond_its_bound() -> None:
    limit = FailedAuthLimit(1, clock=lambda: 0.0, max_sources=100)
    for i in range(1000):
        limit.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limit._windows) == 100
    assert limit.retry_after("10.0.3.231") is not None  # the newest are kept
    assert limit.retry_after("10.0.0.0") is None


async def test_a_missing_header_is_not_a_guess_and_a_zero_limit_is_none() -> None:
    auth = TokenAuth([], limit=FailedAuthLimit(1, clock=lambda: 0.0))
    for _ in range(3):
        with pytest.raises(HTTPException) as info:
            await auth.identify(None, source="a")
        assert info.value.status_code == 401
    off = FailedAuthLimit(0)
    off.failed("a")
    assert off.retry_after("a") is None


TRUSTED = [ipaddress.ip_network("10.1.0.0/24")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "source"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a trusted proxy: ignored
        ("10.1.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.1.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # what the client wrote: no
        ("10.1.0.2", "198.51.100.1, 10.1.0.3", "198.51.100.1"),  # two proxies deep
        ("10.1.0.2", None, "10.1.0.2"),
    ],
)
def test_a_request_is_from_the_address_trusted_proxies_saw(
    peer: str, forwarded: str | None, source: str
) -> None:
    assert request_source(peer, forwarded, TRUSTED) == source


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "45m", "12h", "30d")] == [
        90,
        90,
        2700,
        43200,
        2592000,
    ]
    for bad in ("", "d", "-1h", "1w", "0"):
        with pytest.raises(ValueError):
            parse_duration(bad)
