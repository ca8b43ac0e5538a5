"""`/api/v1/leader/handoff` and `/api/v1/reconcile`: asking the leader to do something."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from runnerhub.api.deps import Admin, Context, audit
from runnerhub.api.schemas import HandoffIn
from runnerhub.context import NoElection
from runnerhub.ha.dcs import StoreUnavailable
from runnerhub.store import nodes
from runnerhub.store.listener import RECONCILE_CHANNEL, notify

router = APIRouter(tags=["leadership"])


@router.post("/leader/handoff", status_code=202, summary="Ask the leader to step down")
async def handoff(ctx: Context, who: Admin, body: HandoffIn | None = None) -> dict[str, object]:
    target = body.to if body else None
    if target is not None:
        async with ctx.db.connection() as conn:
            known = {r.id: r for r in await nodes.list_nodes(conn)}
        if target not in known:
            raise HTTPException(404, f"no node {target!r} in this cluster")
        if known[target].draining:
            raise HTTPException(409, f"node {target!r} is draining; it will not lead")
    try:
        record = await ctx.leadership.request_handoff(target)
    except NoElection as exc:
        raise HTTPException(409, str(exc)) from None
    except StoreUnavailable as exc:
        raise HTTPException(503, f"cannot reach etcd: {exc}") from None
    async with ctx.db.connection() as conn:
        await audit(
            conn,
            ctx,
            who,
            "handoff_requested",
            f"node:{record.node}",
            epoch=record.epoch,
            to=target,
        )
    return {"status": "handoff requested", "from": record.node, "epoch": record.epoch, "to": target}


@router.post("/reconcile", status_code=202, summary="Run the reconciler now (admin; audited)")
async def reconcile(ctx: Context, who: Admin) -> dict[str, str]:
    """Asked of any node (behind a load balancer, usually a follower), itself included:
    the leader's listener hears it through PostgreSQL and runs its reconciler at once."""
    async with ctx.db.connection() as conn, conn.transaction():
        await notify(conn, RECONCILE_CHANNEL)
        await audit(conn, ctx, who, "reconcile_requested", "reconciler")
    return {"status": "reconcile requested"}
