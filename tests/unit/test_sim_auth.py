"""Credentials and the primary rate limit of the simulated GitHub."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runnerhub.dev.sim.auth import Auth, Identity
from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.errors import ApiError
from runnerhub.dev.sim.faults import Faults

APP_ID = 4242


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_auth(key: rsa.RSAPrivateKey, **overrides: Any) -> Auth:
    config = SimConfig(
        pats=["pat-one", "pat-two"],
        app_id=APP_ID,
        app_public_key_pem=public_pem(key),
        installation_id=77,
        **overrides,
    )
    return Auth(config, Faults())


def app_jwt(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iat": now - 60, "exp": now + 540, "iss": str(APP_ID), **claims}
    # Signed as raw JWS: PyJWT's encoder refuses the integer `iss` GitHub also accepts.
    return jwt.api_jws.encode(json.dumps(body).encode(), key, algorithm="RS256")


def status_of(call: Any) -> int:
    with pytest.raises(ApiError) as err:
        call()
    return err.value.status


def test_pats_with_either_scheme(app_key: rsa.RSAPrivateKey) -> None:
    auth = make_auth(app_key)
    assert auth.authenticate("Bearer pat-one", app=False) == Identity("pat", "pat-one", "user ID 1")
    assert auth.authenticate("token pat-two", app=False).subject == "user ID 2"
    for header in (None, "", "Bearer", "Basic pat-one", "Bearer nope"):
        assert status_of(lambda h=header: auth.authenticate(h, app=False)) == 401


def test_app_jwt_accepted_only_on_app_endpoints(app_key: rsa.RSAPrivateKey) -> None:
    auth = make_auth(app_key)
    token = app_jwt(app_key)
    assert auth.authenticate(f"Bearer {token}", app=True).kind == "app"
    assert auth.authenticate(f"Bearer {app_jwt(app_key, iss=APP_ID)}", app=True).kind == "app"
    assert status_of(lambda: auth.authenticate(f"Bearer {token}", app=False)) == 401
    assert status_of(lambda: auth.authenticate("Bearer pat-one", app=True)) == 401


@pytest.mark.parametrize(
    "claims",
    [
        # Seconds from when the test runs, not from collection: a long suite runs it later.
        {"exp": -120, "iat": -600},  # expired
        {"exp": 1200},  # lives longer than 10 minutes
        {"iss": "999"},  # another App
        {"iat": 600, "exp": 900},  # issued later
    ],
)
def test_bad_app_jwts(app_key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> None:
    auth = make_auth(app_key)
    now = int(time.time())
    token = app_jwt(
        app_key, **{k: now + v if k in ("iat", "exp") else v for k, v in claims.items()}
    )
    assert status_of(lambda: auth.authenticate(f"Bearer {token}", app=True)) == 401


def test_jwt_signed_by_another_key_is_refused(app_key: rsa.RSAPrivateKey) -> None:
    auth = make_auth(app_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = app_jwt(other)
    assert status_of(lambda: auth.authenticate(f"Bearer {token}", app=True)) == 401


def test_installation_tokens_expire(app_key: rsa.RSAPrivateKey) -> None:
    auth = make_auth(app_key, token_ttl_s=3600)
    token, expires_at = auth.issue_installation_token()
    assert token.startswith("ghs_") and expires_at > time.time() + 3000
    identity = auth.authenticate(f"token {token}", app=False)
    assert (identity.kind, identity.subject) == ("installation", "installation ID 77")
    auth.installation_tokens[token] = time.time() - 1
    assert status_of(lambda: auth.authenticate(f"token {token}", app=False)) == 401


def test_rate_limit_counts_per_token_and_refuses_when_exhausted(
    app_key: rsa.RSAPrivateKey,
) -> None:
    auth = make_auth(app_key, rate_limit=2)
    one = auth.authenticate("token pat-one", app=False)
    two = auth.authenticate("token pat-two", app=False)
    first = auth.consume(one)
    assert first["x-ratelimit-limit"] == "2"
    assert (first["x-ratelimit-remaining"], first["x-ratelimit-used"]) == ("1", "1")
    assert first["x-ratelimit-resource"] == "core"
    assert int(first["x-ratelimit-reset"]) > time.time() + 3500
    assert auth.consume(one)["x-ratelimit-remaining"] == "0"
    with pytest.raises(ApiError) as err:
        auth.consume(one)
    assert err.value.status == 403
    assert err.value.headers["x-ratelimit-remaining"] == "0"
    assert err.value.message.startswith("API rate limit exceeded for user ID 1.")
    assert auth.consume(two)["x-ratelimit-remaining"] == "1"  # its own budget


def test_remaining_fault_applies_to_existing_and_new_tokens(app_key: rsa.RSAPrivateKey) -> None:
    auth = make_auth(app_key)
    one = auth.authenticate("token pat-one", app=False)
    two = auth.authenticate("token pat-two", app=False)
    auth.consume(one)
    auth.faults.merge({"rate_limit_remaining": 1})
    auth.set_remaining(1, None)
    assert auth.consume(one)["x-ratelimit-remaining"] == "0"
    assert auth.consume(two)["x-ratelimit-remaining"] == "0"  # first seen after the fault
    assert status_of(lambda: auth.consume(two)) == 403
    auth.faults.clear()
    auth.reset_limits()
    assert auth.consume(two)["x-ratelimit-remaining"] == "4999"
