"""The installation token as the nodes share it through Redis: encrypted and authenticated
(AES-256-GCM), under a key derived from the GitHub App's private key (HKDF-SHA256).

Only a holder of the App's key, that is a node, can read the token or write one that the
others accept: someone who can read Redis learns nothing usable, and someone who can write
it cannot slip in a token of their own (it fails to open, and the node fetches a fresh one
from GitHub). The Redis key's name is bound in as associated data, so a sealed value cannot
be moved to another installation's key either.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12
INFO = b"runnerhub/github-installation-token-cache/v1"


class Seal:
    def __init__(self, app_key: rsa.RSAPrivateKey, context: str) -> None:
        # The key's DER, not its PEM text: every node derives the same key from the same
        # App key, however its file is laid out.
        der = app_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(der)
        self._aead = AESGCM(key)
        self._context = context.encode()

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, self._context)

    def open(self, sealed: bytes) -> bytes | None:
        """The plaintext, or None for anything this seal did not make (forged, altered,
        from another App or key name, or an older plain value)."""
        if not sealed.startswith(VERSION) or len(sealed) < 1 + NONCE_BYTES + 16:
            return None
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, self._context)
        except InvalidTag:
            return None
