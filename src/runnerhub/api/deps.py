"""What every route depends on, FastAPI style: the node's context, the caller's token and
role, and keyset pagination cursors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request

from runnerhub.api.auth import Principal, Role, TokenAuth
from runnerhub.context import NodeContext

# Async, all of them: FastAPI runs a plain `def` dependency in a thread pool.


async def get_context(request: Request) -> NodeContext:
    ctx: NodeContext = request.app.state.context  # set once by create_app
    return ctx


async def get_auth(request: Request) -> TokenAuth:
    auth: TokenAuth = request.app.state.auth
    return auth


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        auth: TokenAuth = request.app.state.auth
        return auth.authorize(request.headers.get("authorization"), role)

    return dependency


async def writable(request: Request) -> Principal:
    """An admin asking for a change, of a node that may make one: a standby region's node
    is read-only (409) until its region is promoted."""
    auth: TokenAuth = request.app.state.auth
    principal = auth.authorize(request.headers.get("authorization"), "admin")
    ctx: NodeContext = request.app.state.context
    if ctx.settings.node.standby:
        raise HTTPException(
            409, "this node stands by for another region and is read-only; act on the active one"
        )
    return principal


Context = Annotated[NodeContext, Depends(get_context)]
Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(writable)]


class HasId(Protocol):
    @property
    def id(self) -> int: ...


def cursor_out(rows: Sequence[HasId], limit: int) -> str | None:
    """The cursor for the next page (None: this was the last)."""
    if len(rows) < limit:
        return None
    return base64.urlsafe_b64encode(str(rows[-1].id).encode()).decode()


def cursor_in(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(400, "cursor is not one this API handed out") from None
