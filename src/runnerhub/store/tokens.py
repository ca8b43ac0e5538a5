"""API tokens kept hashed in PostgreSQL (migration 0006): made, looked up and revoked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import errors

from runnerhub.store.db import Conn

PREFIX = "rht_"  # tells a stored token from a static one at a glance (and to secret scanners)
COLUMNS = "name, role, created_at, created_by, expires_at, revoked_at, last_used_at"


class TokenNameTaken(Exception):
    pass


@dataclass(frozen=True)
class TokenRow:
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TokenRow:
        return cls(**row)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_stored_token(token: str) -> bool:
    return token.startswith(PREFIX)


async def create(
    conn: Conn, *, name: str, role: str, created_by: str, expires_at: datetime | None
) -> tuple[str, TokenRow]:
    """A new token (shown once: only its hash is kept) and its record."""
    token = PREFIX + secrets.token_urlsafe(32)
    try:
        cur = await conn.execute(
            f"""INSERT INTO api_tokens (name, role, token_sha256, created_by, expires_at)
                VALUES (%s, %s, %s, %s, %s) RETURNING {COLUMNS}""",
            (name, role, digest(token), created_by, expires_at),
        )
    except errors.UniqueViolation:
        raise TokenNameTaken(name) from None
    row = await cur.fetchone()
    assert row is not None
    return token, TokenRow.from_row(row)


async def find(conn: Conn, token: str) -> TokenRow | None:
    """The live or expired record of `token` (not a revoked one), marking it used."""
    cur = await conn.execute(
        f"""UPDATE api_tokens SET last_used_at = now()
             WHERE token_sha256 = %s AND revoked_at IS NULL RETURNING {COLUMNS}""",
        (digest(token),),
    )
    row = await cur.fetchone()
    return TokenRow.from_row(row) if row else None


async def list_tokens(conn: Conn, include_revoked: bool = False) -> list[TokenRow]:
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    cur = await conn.execute(f"SELECT {COLUMNS} FROM api_tokens {where} ORDER BY name, id")
    return [TokenRow.from_row(r) for r in await cur.fetchall()]


async def revoke(conn: Conn, name: str) -> TokenRow | None:
    cur = await conn.execute(
        f"""UPDATE api_tokens SET revoked_at = now()
             WHERE name = %s AND revoked_at IS NULL RETURNING {COLUMNS}""",
        (name,),
    )
    row = await cur.fetchone()
    return TokenRow.from_row(row) if row else None
