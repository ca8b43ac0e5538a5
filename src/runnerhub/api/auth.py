"""Bearer tokens with roles: `read` may look, `admin` may also act."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException

from runnerhub.config import ApiToken

Role = Literal["read", "admin"]
_RANK = {"read": 0, "admin": 1}


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


class TokenAuth:
    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = [
            (t.token.get_secret_value().encode(), Principal(t.name, t.role)) for t in tokens
        ]

    def identify(self, header: str | None) -> Principal:
        if not header:
            raise HTTPException(
                401,
                "missing Authorization header (expected: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(
                401,
                "Authorization must be 'Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = token.strip().encode()
        found: Principal | None = None
        for secret, principal in self._tokens:  # compare with all: no timing hint
            if hmac.compare_digest(secret, given):
                found = principal
        if found is None:
            raise HTTPException(401, "unknown API token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def authorize(self, header: str | None, role: Role) -> Principal:
        """The caller, if its token is known (401) and its role is high enough (403)."""
        principal = self.identify(header)
        if _RANK[principal.role] < _RANK[role]:
            raise HTTPException(
                403,
                f"token {principal.name!r} has role {principal.role!r}; this needs {role!r}",
            )
        return principal
