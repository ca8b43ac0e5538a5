"""Credentials (PATs, App JWTs, installation tokens) and the primary rate limit."""

from __future__ import annotations

import hmac
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.errors import RATE_DOCS, ApiError
from runnerhub.dev.sim.faults import Faults

JWT_SKEW_S = 60  # GitHub tolerates this much clock drift
JWT_MAX_LIFETIME_S = 600
_TOKEN_ALPHABET = string.ascii_letters + string.digits

INSTALLATION_PERMISSIONS = {
    "actions": "write",
    "administration": "write",
    "metadata": "read",
    "organization_self_hosted_runners": "write",
}


@dataclass(frozen=True)
class Identity:
    kind: Literal["pat", "installation", "app"]
    key: str  # what the rate limit counts against
    subject: str  # how GitHub names it in a rate-limit message


@dataclass
class _Bucket:
    reset: int
    used: int = 0


def _credential(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token") or not value.strip():
        return None
    return value.strip()


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class Auth:
    def __init__(self, config: SimConfig, faults: Faults) -> None:
        self.config = config
        self.faults = faults
        self.installation_tokens: dict[str, float] = {}  # token -> expires_at (epoch)
        self._buckets: dict[str, _Bucket] = {}
        self._public_key: Any = None
        if config.app_public_key_pem:
            self._public_key = load_pem_public_key(config.app_public_key_pem.encode())

    # -- authentication -------------------------------------------------------------

    def authenticate(self, header: str | None, *, app: bool) -> Identity:
        """Who is calling; `app` endpoints take only the App's JWT, the others never do."""
        token = _credential(header)
        if token is None:
            if app:
                raise ApiError(401, "A JSON web token could not be decoded")
            raise ApiError(401, "Requires authentication")
        if app:
            return self._verify_jwt(token)
        if _looks_like_jwt(token):
            raise ApiError(401)
        for index, pat in enumerate(self.config.pats, start=1):
            if hmac.compare_digest(pat.encode(), token.encode()):
                return Identity("pat", token, f"user ID {index}")
        expires = self.installation_tokens.get(token)
        if expires is not None and time.time() < expires:
            return Identity("installation", token, f"installation ID {self.config.installation_id}")
        raise ApiError(401)

    def _verify_jwt(self, token: str) -> Identity:
        if self._public_key is None or self.config.app_id is None or not _looks_like_jwt(token):
            raise ApiError(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                leeway=JWT_SKEW_S,
                options={"require": ["exp", "iat", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ApiError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires",
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, "A JSON web token could not be decoded") from exc
        exp, iat = claims["exp"], claims["iat"]
        now = time.time()
        if (
            exp - iat > JWT_MAX_LIFETIME_S + JWT_SKEW_S
            or exp > now + JWT_MAX_LIFETIME_S + JWT_SKEW_S
        ):
            raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future")
        if str(claims["iss"]) != str(self.config.app_id):
            raise ApiError(401, "'Issuer' claim ('iss') must be an Integer")
        return Identity("app", f"app:{self.config.app_id}", f"app ID {self.config.app_id}")

    def issue_installation_token(self) -> tuple[str, float]:
        token = "ghs_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
        expires_at = time.time() + self.config.token_ttl_s
        self.installation_tokens[token] = expires_at
        # Forget long-expired tokens so a long run does not grow without bound.
        now = time.time()
        for old in [t for t, exp in self.installation_tokens.items() if exp < now - 3600]:
            del self.installation_tokens[old]
        return token, expires_at

    # -- primary rate limit ---------------------------------------------------------

    def _bucket(self, key: str) -> _Bucket:
        now = int(time.time())
        bucket = self._buckets.get(key)
        if bucket is None or now >= bucket.reset:
            bucket = _Bucket(reset=now + 3600)
            remaining = self.faults.rate_limit_remaining
            if remaining is not None and self.faults.rate_limit_token in (None, key):
                bucket.used = max(self.config.rate_limit - remaining, 0)
            self._buckets[key] = bucket
        return bucket

    def _headers(self, bucket: _Bucket) -> dict[str, str]:
        limit = self.config.rate_limit
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(limit - bucket.used, 0)),
            "x-ratelimit-reset": str(bucket.reset),
            "x-ratelimit-used": str(min(bucket.used, limit)),
            "x-ratelimit-resource": "core",
        }

    def consume(self, identity: Identity) -> dict[str, str]:
        """Count one request; the rate-limit headers to send, or 403 when exhausted."""
        bucket = self._bucket(identity.key)
        if bucket.used >= self.config.rate_limit:
            raise ApiError(
                403,
                f"API rate limit exceeded for {identity.subject}. If you reach out to GitHub "
                "Support for help, please include the request ID "
                f"{secrets.token_hex(8).upper()}.",
                headers=self._headers(bucket),
                documentation_url=RATE_DOCS,
            )
        bucket.used += 1
        return self._headers(bucket)

    def peek(self, identity: Identity) -> dict[str, str]:
        """The rate-limit headers without counting a request (`GET /rate_limit` is free)."""
        return self._headers(self._bucket(identity.key))

    def set_remaining(self, remaining: int, token: str | None) -> None:
        """Apply the `rate_limit_remaining` fault to the buckets that exist now."""
        for key, bucket in self._buckets.items():
            if token is None or key == token:
                bucket.used = max(self.config.rate_limit - remaining, 0)

    def reset_limits(self) -> None:
        self._buckets.clear()
