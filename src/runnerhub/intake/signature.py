"""Webhook signature check: HMAC-SHA256 over the exact bytes received, in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secrets: Sequence[bytes], body: bytes, header: str | None) -> bool:
    """True when `header` is a valid `X-Hub-Signature-256` for `body` under any secret.

    Every secret is tried, even after a match, so the time taken does not tell which
    secret (or how many) matched; `hmac.compare_digest` keeps each comparison constant-time.
    """
    if not header or not header.startswith(PREFIX):
        return False
    given = header.encode("ascii", errors="replace")
    ok = False
    for secret in secrets:
        expected = sign(secret, body).encode("ascii")
        ok |= hmac.compare_digest(expected, given)
    return ok
