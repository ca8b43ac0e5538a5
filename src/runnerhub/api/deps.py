"""What every route depends on, FastAPI style: the node's context, the caller's token and
role, and keyset pagination cursors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request

from runnerhub.api.auth import Principal, Role, TokenAuth, request_source
from runnerhub.context import NodeContext
from runnerhub.store import events
from runnerhub.store.db import Conn

# Async, all of them: FastAPI runs a plain `def` dependency in a thread pool.


async def get_context(request: Request) -> NodeContext:
    ctx: NodeContext = request.app.state.context  # set once by create_app
    return ctx


def source_of(request: Request) -> str:
    """The address a request came from (through trusted proxies: the one they saw)."""
    ctx: NodeContext = request.app.state.context
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    return request_source(peer, forwarded, ctx.settings.api.trusted_proxies)


async def authenticate(request: Request, role: Role) -> Principal:
    auth: TokenAuth = request.app.state.auth
    return await auth.authorize(request.headers.get("authorization"), role, source_of(request))


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        return await authenticate(request, role)

    return dependency


async def writable(request: Request) -> Principal:
    """An admin asking for a change, of a node that may make one: a standby region's node
    is read-only (409) until its region is promoted."""
    principal = await authenticate(request, "admin")
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


# Ids are PostgreSQL bigints: a larger number in a path or query is refused (422) by its
# declared bounds, not sent to the database to fail there (a 500).
BIGINT_MAX = 2**63 - 1


def cursor_in(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        value = int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        value = -1
    if not 0 <= value <= BIGINT_MAX:
        raise HTTPException(400, "cursor is not one this API handed out")
    return value


async def audit(
    conn: Conn, ctx: NodeContext, who: Principal, action: str, subject: str, **detail: Any
) -> None:
    """An operator's action through the API, as event `operator.<action>`: who asked (the
    token's name) and through which node, in the caller's transaction."""
    await events.append(
        conn, ctx.settings.node.id, f"operator.{action}", subject, by=who.name, **detail
    )
