"""`/api/v1/tokens`: API tokens kept hashed in PostgreSQL, made and revoked by admins
(`runnerhub token ...`). The configuration's static tokens are not listed here."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException

from runnerhub.api.auth import Principal
from runnerhub.api.deps import Admin, Context, require
from runnerhub.api.schemas import NewTokenOut, TokenIn, TokenOut
from runnerhub.store import tokens

log = structlog.get_logger("runnerhub.api")
router = APIRouter(tags=["tokens"])
AdminReader = Annotated[Principal, Depends(require("admin"))]  # a standby region's too


@router.post("/tokens", status_code=201, summary="Make an API token (shown once)")
async def create(ctx: Context, who: Admin, body: TokenIn) -> NewTokenOut:
    if body.name in {t.name for t in ctx.settings.api_tokens}:
        raise HTTPException(409, f"{body.name!r} is the name of a token in the configuration")
    expires = (
        datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    )
    try:
        async with ctx.db.connection() as conn:
            secret, row = await tokens.create(
                conn, name=body.name, role=body.role, created_by=who.name, expires_at=expires
            )
    except tokens.TokenNameTaken:
        raise HTTPException(409, f"a live token is named {body.name!r}; revoke it first") from None
    log.info("api token created", name=row.name, role=row.role, by=who.name)
    return NewTokenOut(**asdict(row), token=secret)


@router.get("/tokens", summary="The stored API tokens (never their values)")
async def list_all(ctx: Context, _: AdminReader, revoked: bool = False) -> list[TokenOut]:
    async with ctx.db.connection() as conn:
        rows = await tokens.list_tokens(conn, include_revoked=revoked)
    return [TokenOut(**asdict(r)) for r in rows]


@router.delete("/tokens/{name}", summary="Revoke a stored API token (at once, on every node)")
async def revoke(ctx: Context, who: Admin, name: str) -> TokenOut:
    async with ctx.db.connection() as conn:
        row = await tokens.revoke(conn, name)
    if row is None:
        raise HTTPException(404, f"no live stored token named {name!r}")
    log.info("api token revoked", name=name, by=who.name)
    return TokenOut(**asdict(row))
