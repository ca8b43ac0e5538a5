"""Bearer tokens with roles: `read` may look, `admin` may also act.

Tokens come from the configuration (static) or from PostgreSQL (`runnerhub token create`,
kept hashed: `store.tokens`); either may expire. A source that keeps presenting unknown
tokens is answered 429 for a while (`FailedAuthLimit`).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from fastapi import HTTPException

from runnerhub.config import ApiToken

Role = Literal["read", "admin"]
_RANK = {"read": 0, "admin": 1}
_BEARER = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


@dataclass(frozen=True)
class Found:
    """What a token store knows of a token it holds."""

    principal: Principal
    expires_at: datetime | None


# The stored tokens' lookup (PostgreSQL in a node): None when the token is not there.
# Static tokens are compared first; a lookup is only asked about what they do not know.
Lookup = Callable[[str], Awaitable[Found | None]]


class FailedAuthLimit:
    """At most `per_minute` failed authentications per source in each minute; then the
    source is refused (429) until its minute is over. Fixed windows, in memory, per node:
    enough to make guessing slow, and nothing to store or share."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 10_000,
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._max_sources = max_sources
        self._windows: dict[str, tuple[float, int]] = {}  # source -> (window start, failures)

    def retry_after(self, source: str) -> float | None:
        """Seconds until `source` may try again, or None when it may now."""
        start, failures = self._windows.get(source, (0.0, 0))
        left = start + 60 - self._clock()
        if failures >= self.per_minute > 0 and left > 0:
            return left
        return None

    def failed(self, source: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._clock()
        start, failures = self._windows.pop(source, (now, 0))
        if now - start >= 60:
            start, failures = now, 0
        self._windows[source] = (start, failures + 1)  # re-inserted: the newest last
        if len(self._windows) > self._max_sources:  # bounded: drop over windows, then oldest
            for key in [k for k, (s, _) in self._windows.items() if now - s >= 60]:
                del self._windows[key]
            while len(self._windows) > self._max_sources:
                del self._windows[next(iter(self._windows))]


def request_source(
    peer: str | None,
    forwarded_for: str | None,
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """Who sent a request: its peer's address, or, when the peer is a trusted proxy, the
    nearest address in X-Forwarded-For that is not one (what a client writes there itself
    is never believed: only what trusted proxies appended)."""
    source = peer or "unknown"
    if not forwarded_for or not trusted:
        return source
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    while _is_trusted(source, trusted) and hops:
        source = hops.pop()
    return source


def _is_trusted(
    address: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class TokenAuth:
    def __init__(
        self,
        tokens: Sequence[ApiToken],
        stored: Lookup | None = None,
        limit: FailedAuthLimit | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tokens = [
            (t.token.get_secret_value().encode(), Found(Principal(t.name, t.role), t.expires_at))
            for t in tokens
        ]
        self._stored = stored
        self._limit = limit or FailedAuthLimit(0)
        self._now = now

    async def identify(self, header: str | None, source: str = "unknown") -> Principal:
        wait = self._limit.retry_after(source)
        if wait is not None:
            raise HTTPException(
                429,
                "too many failed authentications from this address; try again later",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        if not header:
            raise HTTPException(
                401, "missing Authorization header (expected: Bearer <token>)", headers=_BEARER
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "Authorization must be 'Bearer <token>'", headers=_BEARER)
        found = self._static(token.encode())
        if found is None and self._stored is not None:
            found = await self._stored(token)
        if found is None:
            self._limit.failed(source)
            raise HTTPException(401, "unknown API token", headers=_BEARER)
        if found.expires_at is not None and found.expires_at <= self._now():
            self._limit.failed(source)
            raise HTTPException(
                401,
                f"API token {found.principal.name!r} expired at {found.expires_at.isoformat()}",
                headers=_BEARER,
            )
        return found.principal

    def _static(self, given: bytes) -> Found | None:
        found: Found | None = None
        for secret, entry in self._tokens:  # compare with all: no timing hint
            if hmac.compare_digest(secret, given):
                found = entry
        return found

    async def authorize(self, header: str | None, role: Role, source: str = "unknown") -> Principal:
        """The caller, if its token is known and live (401), its source not refused for
        guessing (429), and its role high enough (403)."""
        principal = await self.identify(header, source)
        if _RANK[principal.role] < _RANK[role]:
            raise HTTPException(
                403,
                f"token {principal.name!r} has role {principal.role!r}; this needs {role!r}",
            )
        return principal
