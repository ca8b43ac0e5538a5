"""Webhook signature check: HMAC-SHA256 over the exact bytes received, in constant time.

`Verifier` computes it while the body streams in (one pass, no second walk over up to
5 MiB); `verify` does the same over a body at hand."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secrets: Sequence[bytes], body: bytes, header: str | None) -> bool:
    """True when `header` is a valid `X-Hub-Signature-256` for `body` under any secret."""
    verifier = Verifier(secrets)
    verifier.update(body)
    return verifier.matches(header)


class Verifier:
    """The HMACs of a body under every secret, fed chunk by chunk as it arrives."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        self._macs = [hmac.new(secret, digestmod=hashlib.sha256) for secret in secrets]

    def update(self, chunk: bytes) -> None:
        for mac in self._macs:
            mac.update(chunk)

    def matches(self, header: str | None) -> bool:
        """True when `header` is a valid `X-Hub-Signature-256` under any secret. Every
        secret is tried, even after a match, so the time taken does not tell which secret
        (or how many) matched; `hmac.compare_digest` keeps each comparison constant-time."""
        if not header or not header.startswith(PREFIX):
            return False
        given = header.encode("ascii", errors="replace")
        ok = False
        for mac in self._macs:
            ok |= hmac.compare_digest((PREFIX + mac.hexdigest()).encode("ascii"), given)
        return ok
