"""Authentication: a personal access token, or a GitHub App's installation token.

No token, JWT or key reaches a log line, an exception message or a repr. Headers are
handed over as ``httpx.Headers``, whose repr masks ``Authorization``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import jwt
import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runnerhub import __version__
from runnerhub.cache import Cache, NullCache
from runnerhub.config import GitHubSettings
from runnerhub.domain.backoff import retry_delay
from runnerhub.github.errors import AuthError, GitHubError, Unavailable, no_response
from runnerhub.github.models import parse_time
from runnerhub.github.ratelimit import NEVER_SENT
from runnerhub.github.sealed import Seal
from runnerhub.metrics import GITHUB_CALLS

log = structlog.get_logger("runnerhub.github")

API_VERSION = "2022-11-28"


def api_headers() -> dict[str, str]:
    """The headers every GitHub REST call carries, apart from Authorization."""
    return {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": f"runnerhub/{__version__}",
    }


class Auth(Protocol):
    async def headers(self) -> dict[str, str]:
        """The Authorization header for ordinary API calls."""
        ...

    async def app_headers(self) -> dict[str, str]:
        """The Authorization header for ``/app/...`` endpoints (an App JWT)."""
        ...

    def invalidate(self) -> None:
        """Forget a cached token (GitHub answered 401)."""
        ...

    @property
    def identity(self) -> str:
        """Who GitHub counts our calls against (rate limits are per identity), without
        any secret: keys in the shared cache are named after it."""
        ...


class PatAuth:
    """A personal access token (classic or fine-grained)."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise AuthError("the GitHub token is empty")
        self._token = token

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def app_headers(self) -> dict[str, str]:
        raise AuthError(
            "this call needs GitHub App authentication (an App JWT); "
            "a personal access token cannot call /app endpoints"
        )

    def invalidate(self) -> None:
        """Nothing is cached: a PAT cannot be refreshed."""

    @property
    def identity(self) -> str:
        # A digest, not the token: it names shared-cache keys, which anyone with Redis sees.
        return "pat:" + hashlib.sha256(self._token.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return "PatAuth(token=<hidden>)"


def _load_private_key(pem: str) -> rsa.RSAPrivateKey:
    # The parse errors are replaced (from None) so that nothing about the key travels on.
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise AuthError(
            "GitHub App private key is encrypted; give the unencrypted .pem file"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise AuthError(
            "GitHub App private key is not a readable PEM private key "
            "(expected the .pem file GitHub generated for the App)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthError("GitHub App private key is not an RSA key (GitHub Apps sign with RS256)")
    return key


class AppAuth:
    """A GitHub App: an RS256 JWT buys an installation token, cached until near expiry."""

    JWT_BACKDATE_S = 60  # tolerate our clock running ahead of GitHub's
    JWT_LIFETIME_S = 540  # GitHub accepts at most 10 minutes
    REFRESH_MARGIN_S = 300  # refresh 5 minutes before the token expires
    TOKEN_ENDPOINT = "/app/installations/{installation_id}/access_tokens"

    def __init__(
        self,
        app_id: int,
        private_key_pem: str,
        installation_id: int,
        base_url: str,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_attempts: int = 3,
        retry_base_s: float = 0.2,
        shared: Cache | None = None,
    ) -> None:
        self._key = _load_private_key(private_key_pem)
        # Shared by the nodes (Redis): one token per installation for the whole cluster,
        # not one per node; losing it only costs a fetch.
        self._shared: Cache = shared or NullCache()
        self._shared_key = f"runnerhub:github:installation-token:{app_id}:{installation_id}"
        self._seal = Seal(self._key, self._shared_key)  # Redis sees it only sealed
        self._bypass_shared = False
        self.app_id = app_id
        self.installation_id = installation_id
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._clock = clock
        self._sleep = sleep
        self._max_attempts = max(1, max_attempts)
        self._retry_base_s = retry_base_s
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AppAuth(app_id={self.app_id}, installation_id={self.installation_id})"

    @property
    def identity(self) -> str:
        return f"app:{self.app_id}:{self.installation_id}"

    def _jwt(self) -> str:
        now = int(self._clock())
        claims = {
            "iat": now - self.JWT_BACKDATE_S,
            "exp": now + self.JWT_LIFETIME_S,
            "iss": str(self.app_id),
        }
        return jwt.encode(claims, self._key, algorithm="RS256")

    async def app_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._jwt()}"}

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._installation_token()}"}

    def invalidate(self) -> None:
        self._token = None
        self._bypass_shared = True  # GitHub refused it: the shared copy is no better

    def _cached(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def _installation_token(self) -> str:
        token = self._cached()
        if token is not None:
            return token
        # One refresh at a time; whoever waited finds the fresh token in the cache.
        async with self._lock:
            token = self._cached()
            if token is not None:
                return token
            shared = None if self._bypass_shared else await self._from_shared()
            if shared is not None:
                token, expires_at = shared
            else:
                token, expires_at = await self._fetch_token()
                await self._shared.set(
                    self._shared_key,
                    self._seal.seal(
                        json.dumps({"token": token, "expires_at": expires_at}).encode()
                    ),
                    ttl_s=max(1.0, expires_at - self.REFRESH_MARGIN_S - self._clock()),
                )
                self._bypass_shared = False
            self._token = token
            self._refresh_at = expires_at - self.REFRESH_MARGIN_S
            log.debug(
                "github.installation_token.refreshed",
                installation_id=self.installation_id,
                expires_in_s=round(expires_at - self._clock()),
            )
            return token

    async def _from_shared(self) -> tuple[str, float] | None:
        sealed = await self._shared.get(self._shared_key)
        raw = self._seal.open(sealed) if sealed is not None else None
        if raw is None:
            return None  # none, or not sealed by a holder of the App's key: fetch our own
        try:
            data = json.loads(raw)
            token, expires_at = str(data["token"]), float(data["expires_at"])
        except (ValueError, KeyError, TypeError):
            return None  # not ours, or corrupt: fetch a fresh one
        if self._clock() >= expires_at - self.REFRESH_MARGIN_S:
            return None
        return token, expires_at

    async def _fetch_token(self) -> tuple[str, float]:
        endpoint = self.TOKEN_ENDPOINT
        url = f"{self._base_url}/app/installations/{self.installation_id}/access_tokens"
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self._http.post(
                    url,
                    headers=httpx.Headers({**api_headers(), **await self.app_headers()}),
                )
            except httpx.TransportError as exc:
                GITHUB_CALLS.labels(endpoint, "POST", "0").inc()
                # A POST is retried only when it never reached GitHub.
                if isinstance(exc, NEVER_SENT) and attempt < self._max_attempts:
                    delay = retry_delay(attempt, self._retry_base_s, 5.0)
                    log.warning(
                        "github.retry",
                        method="POST",
                        endpoint=endpoint,
                        reason=type(exc).__name__,
                        attempt=attempt,
                        delay_s=round(delay, 3),
                    )
                    await self._sleep(delay)
                    continue
                raise Unavailable(
                    no_response(exc),
                    method="POST",
                    endpoint=endpoint,
                    attempts=attempt,
                ) from None
            GITHUB_CALLS.labels(endpoint, "POST", str(resp.status_code)).inc()
            log.debug("github.call", method="POST", endpoint=endpoint, status=resp.status_code)
            if resp.is_success:
                return self._parse_token(resp, endpoint)
            raise self._token_error(resp, endpoint, attempt)

    def _parse_token(self, resp: httpx.Response, endpoint: str) -> tuple[str, float]:
        try:
            data: Any = resp.json()
            token = data["token"]
            expires_at = parse_time(str(data["expires_at"])).timestamp()
            if not isinstance(token, str) or not token:
                raise ValueError("token")
        except (KeyError, TypeError, ValueError):
            raise GitHubError(
                "unexpected response body for an installation token",
                status=resp.status_code,
                method="POST",
                endpoint=endpoint,
            ) from None
        return token, expires_at

    def _token_error(self, resp: httpx.Response, endpoint: str, attempt: int) -> GitHubError:
        message = _message_of(resp)
        where: dict[str, Any] = {
            "status": resp.status_code,
            "method": "POST",
            "endpoint": endpoint,
            "attempts": attempt,
        }
        if resp.status_code == 401:
            return AuthError(
                f"GitHub rejected the App JWT ({message or 'no reason given'}); check app_id "
                f"{self.app_id}, the private key, and this host's clock",
                **where,
            )
        if resp.status_code in (403, 404):
            hint = message or "check installation_id and that the App is installed"
            return AuthError(
                f"no installation token for installation {self.installation_id} of app "
                f"{self.app_id}: {hint}",
                **where,
            )
        if resp.status_code >= 500:
            return Unavailable(message, **where)
        return GitHubError(message, **where)


def _message_of(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return ""
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) else ""


def auth_from_settings(
    settings: GitHubSettings, http: httpx.AsyncClient, shared: Cache | None = None
) -> Auth:
    """A PatAuth or an AppAuth, as configured (the settings allow exactly one)."""
    configured = settings.auth
    if configured.token is not None:
        return PatAuth(configured.token.get_secret_value())
    if configured.app is None:
        raise AuthError("github.auth: give a token or an app")
    app = configured.app
    return AppAuth(
        app.app_id, app.key_pem(), app.installation_id, settings.api_url, http, shared=shared
    )
