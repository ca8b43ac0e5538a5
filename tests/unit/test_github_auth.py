"""PAT and GitHub App authentication: JWT claims, installation-token caching, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime

import httpx
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import REGISTRY

from runnerhub.cache import NullCache
from runnerhub.config import GitHubSettings
from runnerhub.github import (
    AppAuth,
    AuthError,
    GitHubClient,
    GitHubError,
    HookTarget,
    PatAuth,
    Unavailable,
    auth_from_settings,
)

BASE = "https://api.github.test"
NOW = 1_700_000_000.0
APP_ID = 1234
INSTALLATION_ID = 5678
TOKEN_PATH = f"/app/installations/{INSTALLATION_ID}/access_tokens"
TOKEN_ENDPOINT = "/app/installations/{installation_id}/access_tokens"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


class TokenServer:
    """Hands out installation tokens ``ghs_1``, ``ghs_2``... valid for an hour."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.method == "POST" and request.url.path == TOKEN_PATH
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        expires = datetime.fromtimestamp(self.clock() + 3600, UTC)
        body = {
            "token": f"ghs_{len(self.requests)}",
            "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": {"administration": "write"},
        }
        return httpx.Response(201, json=body)


async def no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def app_auth(
    pem: str,
    handler: Handler,
    clock: Clock,
    sleep: Callable[[float], Awaitable[None]] = no_sleep,
) -> AppAuth:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock, sleep=sleep)


def bearer(headers: dict[str, str]) -> str:
    scheme, _, value = headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return value


# -- PAT ---------------------------------------------------------------------------------


async def test_pat_headers() -> None:
    auth = PatAuth("ghp_abc")
    assert await auth.headers() == {"Authorization": "Bearer ghp_abc"}
    auth.invalidate()
    assert await auth.headers() == {"Authorization": "Bearer ghp_abc"}
    assert repr(auth) == "PatAuth(token=<hidden>)"


async def test_pat_cannot_call_app_endpoints() -> None:
    with pytest.raises(AuthError, match="GitHub App"):
        await PatAuth("ghp_abc").app_headers()


def test_empty_pat_is_rejected() -> None:
    with pytest.raises(AuthError, match="empty"):
        PatAuth("  ")


# -- App JWT -----------------------------------------------------------------------------


async def test_app_jwt_claims_and_signature(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    auth = app_auth(pem, TokenServer(clock).handler, clock)
    token = bearer(await auth.app_headers())
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        rsa_key.public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {"iat": int(NOW) - 60, "exp": int(NOW) + 540, "iss": str(APP_ID)}
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.public_key(), algorithms=["RS256"], options={"verify_exp": False})


def test_bad_private_keys(pem: str) -> None:
    http = httpx.AsyncClient()
    garbage = "-----BEGIN RSA PRIVATE KEY-----\nTOPSECRETGARBAGE\n-----END RSA PRIVATE KEY-----\n"
    with pytest.raises(AuthError) as info:
        AppAuth(APP_ID, garbage, INSTALLATION_ID, BASE, http)
    assert "not a readable PEM private key" in str(info.value)
    assert "TOPSECRETGARBAGE" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(AuthError, match="not an RSA key"):
        AppAuth(APP_ID, ec_pem, INSTALLATION_ID, BASE, http)

    key = serialization.load_pem_private_key(pem.encode(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(AuthError, match="encrypted"):
        AppAuth(APP_ID, encrypted, INSTALLATION_ID, BASE, http)


# -- installation tokens -----------------------------------------------------------------


async def test_installation_token_request(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    server = TokenServer(clock)
    auth = app_auth(pem, server.handler, clock)
    assert await auth.headers() == {"Authorization": "Bearer ghs_1"}
    request = server.requests[0]
    assert str(request.url) == BASE + TOKEN_PATH
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(
        token, rsa_key.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["iss"] == str(APP_ID)


async def test_installation_token_cached_until_five_minutes_before_expiry(pem: str) -> None:
    clock = Clock()
    server = TokenServer(clock)
    auth = app_auth(pem, server.handler, clock)
    assert bearer(await auth.headers()) == "ghs_1"
    clock.now += 3600 - 300 - 1
    assert bearer(await auth.headers()) == "ghs_1"
    assert len(server.requests) == 1
    clock.now += 1
    assert bearer(await auth.headers()) == "ghs_2"
    assert len(server.requests) == 2


async def test_invalidate_forces_a_new_token(pem: str) -> None:
    clock = Clock()
    server = TokenServer(clock)
    auth = app_auth(pem, server.handler, clock)
    assert bearer(await auth.headers()) == "ghs_1"
    auth.invalidate()
    assert bearer(await auth.headers()) == "ghs_2"


class DictCache(NullCache):
    """The Cache interface over a dict (real Redis is in tests/integration)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        assert ttl_s > 0
        self.data[key] = value
        return True


async def test_nodes_share_one_installation_token_through_the_cache(pem: str) -> None:
    clock = Clock()
    server = TokenServer(clock)
    shared = DictCache()
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    one, two = (
        AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock, shared=shared) for _ in range(2)
    )
    assert bearer(await one.headers()) == "ghs_1"
    assert bearer(await two.headers()) == "ghs_1"  # from the cache: no second fetch
    assert len(server.requests) == 1
    assert b"ghs_1" not in next(iter(shared.data.values()))  # sealed: unreadable in Redis
    two.invalidate()  # GitHub refused it: the shared copy is not trusted either
    assert bearer(await two.headers()) == "ghs_2"
    assert (
        bearer(
            await AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock, shared=shared).headers()
        )
        == "ghs_2"
    )  # the fresh one replaced it


async def test_without_the_cache_each_node_fetches_its_own(pem: str) -> None:
    clock = Clock()
    server = TokenServer(clock)
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    one, two = (
        AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock, shared=NullCache())
        for _ in range(2)
    )
    assert bearer(await one.headers()) == "ghs_1"
    assert bearer(await two.headers()) == "ghs_2"


async def test_concurrent_callers_share_one_refresh(pem: str) -> None:
    clock = Clock()
    server = TokenServer(clock)
    server.gate = asyncio.Event()
    auth = app_auth(pem, server.handler, clock)
    tasks = [asyncio.create_task(auth.headers()) for _ in range(10)]
    await server.entered.wait()  # the first caller is inside the refresh; the rest queue
    server.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(server.requests) == 1
    assert {bearer(r) for r in results} == {"ghs_1"}


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, {"message": "A JSON web token could not be decoded"}, AuthError, "app_id 1234"),
        (404, {"message": "Not Found"}, AuthError, "installation 5678"),
        (503, {}, Unavailable, "503 Service Unavailable"),
    ],
)
async def test_installation_token_errors(
    pem: str, status: int, body: dict[str, str], error: type[GitHubError], text: str
) -> None:
    clock = Clock()
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(status, json=body)

    auth = app_auth(pem, handler, clock)
    with pytest.raises(error) as info:
        await auth.headers()
    assert text in str(info.value)
    assert info.value.endpoint == TOKEN_ENDPOINT
    assert len(requests) == 1  # a POST is not retried once it reached GitHub


async def test_installation_token_retried_on_connect_error(pem: str) -> None:
    clock = Clock()
    server = TokenServer(clock)
    failures = [httpx.ConnectError("refused")]
    sleeps: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop()
        return await server.handler(request)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    before = REGISTRY.get_sample_value(
        "runnerhub_github_api_calls_total",
        {"endpoint": TOKEN_ENDPOINT, "method": "POST", "status": "0"},
    )
    auth = app_auth(pem, handler, clock, sleep=sleep)
    assert bearer(await auth.headers()) == "ghs_1"
    assert len(sleeps) == 1
    after = REGISTRY.get_sample_value(
        "runnerhub_github_api_calls_total",
        {"endpoint": TOKEN_ENDPOINT, "method": "POST", "status": "0"},
    )
    assert (after or 0) == (before or 0) + 1


async def test_installation_token_read_timeout_not_retried(pem: str) -> None:
    clock = Clock()
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadTimeout("slow")

    auth = app_auth(pem, handler, clock)
    with pytest.raises(Unavailable, match="no response"):
        await auth.headers()
    assert len(calls) == 1


# -- with the client ---------------------------------------------------------------------


async def test_client_refreshes_token_once_on_401(pem: str) -> None:
    clock = Clock()
    server = TokenServer(clock)
    api_calls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            return await server.handler(request)
        api_calls.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer ghs_1":  # revoked early
            return httpx.Response(401, json={"message": "Bad credentials"})
        return httpx.Response(200, json=[])

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock)
    client = GitHubClient(BASE, auth, http=http)
    assert await client.list_org_repos("acme") == []
    assert api_calls == ["Bearer ghs_1", "Bearer ghs_2"]


async def test_client_app_endpoint_uses_jwt(pem: str, rsa_key: rsa.RSAPrivateKey) -> None:
    clock = Clock()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/app/hook/deliveries"
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json=[])

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock)
    assert await GitHubClient(BASE, auth, http=http).list_deliveries(HookTarget.app()) == []
    token = seen[0].removeprefix("Bearer ")
    claims = jwt.decode(
        token, rsa_key.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["iss"] == str(APP_ID)


# -- settings and secrecy ----------------------------------------------------------------


async def test_auth_from_settings(pem: str) -> None:
    http = httpx.AsyncClient()
    pat = auth_from_settings(GitHubSettings.model_validate({"auth": {"token": "ghp_x"}}), http)
    assert isinstance(pat, PatAuth)
    app_settings = GitHubSettings.model_validate(
        {
            "api_url": "https://ghe.example/api/v3",
            "auth": {
                "app": {"app_id": APP_ID, "installation_id": INSTALLATION_ID, "private_key": pem}
            },
        }
    )
    app = auth_from_settings(app_settings, http)
    assert isinstance(app, AppAuth)
    assert app.app_id == APP_ID and app.installation_id == INSTALLATION_ID
    await http.aclose()


async def test_no_secret_in_reprs_errors_or_logs(
    pem: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    server = TokenServer(clock)
    jwts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN_PATH:
            jwts.append(request.headers["authorization"].removeprefix("Bearer "))
            return await server.handler(request)
        return httpx.Response(401, json={"message": "Bad credentials"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    auth = AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock)
    client = GitHubClient(BASE, auth, http=http)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as info:
        await client.list_org_repos("acme")
    texts = [str(info.value), repr(info.value), repr(auth), repr(client), caplog.text]
    texts += [repr(entry) for entry in logs]
    assert any(entry["event"] == "github.installation_token.refreshed" for entry in logs)
    secrets = ["ghs_1", "ghs_2", *jwts, pem.splitlines()[1]]
    for text in texts:
        for secret in secrets:
            assert secret not in text


async def test_a_token_written_into_the_cache_by_someone_else_is_not_used(
    pem: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Whoever can write Redis but holds not the App's key: a plain token, a sealed value
    moved from another key, or one altered in a byte is refused, and a fresh token fetched."""
    clock = Clock()
    server = TokenServer(clock)
    shared = DictCache()
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    first = AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock, shared=shared)
    assert bearer(await first.headers()) == "ghs_1"
    [(key, sealed)] = shared.data.items()
    other_key = key.replace(str(INSTALLATION_ID), "999")
    planted = json.dumps({"token": "ghs_attacker", "expires_at": clock() + 3600}).encode()
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    other_app = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from runnerhub.github.sealed import Seal

    foreign = Seal(other_app, key).seal(planted)
    moved = Seal(rsa_key, other_key).seal(planted)
    for value in (planted, altered, foreign, moved):
        shared.data[key] = value
        fresh = AppAuth(APP_ID, pem, INSTALLATION_ID, BASE, http, clock, shared=shared)
        assert bearer(await fresh.headers()) not in ("ghs_attacker", "ghs_1")
    assert len(server.requests) == 5
