"""Webhook signatures: HMAC-SHA256 of the exact bytes, any configured secret."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from runnerhub.intake.signature import Verifier, sign, verify

SECRETS = [b"new-secret", b"old-secret"]


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@given(st.binary(max_size=2048))
def test_github_signatures_verify_under_either_secret(body: bytes) -> None:
    assert verify(SECRETS, body, github_signature(b"new-secret", body))
    assert verify(SECRETS, body, github_signature(b"old-secret", body))
    assert not verify(SECRETS, body, github_signature(b"other", body))


@given(st.binary(min_size=1, max_size=512), st.integers(0, 511))
def test_one_changed_byte_fails(body: bytes, where: int) -> None:
    header = sign(b"new-secret", body)
    i = where % len(body)
    tampered = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    assert not verify(SECRETS, tampered, header)


def test_missing_malformed_or_sha1_headers_fail() -> None:
    body = b"{}"
    sha1 = "sha1=" + hmac.new(b"new-secret", body, hashlib.sha1).hexdigest()
    for header in (None, "", "sha256=", sha1, "sha256=zz", "sha256=\u00e9\u00e9"):
        assert not verify(SECRETS, body, header)


@given(st.binary(max_size=4096), st.lists(st.integers(1, 512), max_size=8))
def test_a_body_verified_as_it_streams_in_is_verified_alike(body: bytes, cuts: list[int]) -> None:
    verifier = Verifier(SECRETS)
    at = 0
    for size in cuts:  # chunks as the network happens to cut them, then the rest
        verifier.update(body[at : at + size])
        at += size
    verifier.update(body[at:])
    assert verifier.matches(github_signature(b"old-secret", body))
    assert not Verifier(SECRETS).matches(github_signature(b"old-secret", body + b"x"))
