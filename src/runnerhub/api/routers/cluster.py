"""`/api/v1/cluster` and `/api/v1/nodes/{id}/drain`: the nodes, the leader, PostgreSQL and
Redis as this node sees them; draining a node."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, HTTPException

from runnerhub.api.auth import Principal
from runnerhub.api.deps import Admin, Context, Reader, audit
from runnerhub.api.schemas import (
    CacheOut,
    ClusterOut,
    DatabaseOut,
    NodeOut,
    RegionOut,
    StandbyOut,
)
from runnerhub.domain.vacancy import still_leading
from runnerhub.store import leadership, nodes

router = APIRouter(tags=["cluster"])


@router.get("/cluster", response_model=ClusterOut, summary="Nodes and the leader")
async def cluster(ctx: Context, _: Reader) -> ClusterOut:
    async with ctx.db.connection() as conn:
        rows = await nodes.list_nodes(conn)
        lead = await leadership.current(conn)
    stale_after = _stale_after(ctx)
    replication = ctx.state.replication
    standby = ctx.state.standby
    cache_status = ctx.cache.status()
    last_leader: str | None = lead.node if lead else None
    epoch: int | None = lead.epoch if lead else None
    since: datetime | None = lead.since if lead else None
    if lead is None and not ctx.settings.ha.enabled:  # one node, always the leader
        last_leader, since = ctx.settings.node.id, ctx.started_at
    leader = last_leader
    if lead is not None:
        row = next((r for r in rows if r.id == lead.node), None)
        if not still_leading(
            lead.since,
            row.role if row else None,
            row.last_seen if row else None,
            row.silent_s if row else None,
            stale_after,
        ):
            leader = None  # vacant: the row names whoever led last
    return ClusterOut(
        nodes=[
            NodeOut(
                id=r.id,
                url=r.url,
                pid=r.pid,
                role=r.role,
                healthy=not r.draining and r.silent_s < stale_after,
                draining=r.draining,
                last_seen=r.last_seen,
                started_at=r.started_at,
            )
            for r in rows
        ],
        leader=leader,
        last_leader=last_leader,
        epoch=epoch,
        leader_since=since,
        database=DatabaseOut(**replication.as_dict()) if replication else None,
        cache=CacheOut(
            configured=ctx.settings.redis.enabled,
            available=cache_status["available"],
            primary=cache_status["primary"],
            consecutive_failures=cache_status["consecutive_failures"],
            replicas=(ctx.state.cache_replication or {}).get("replicas", []),
        ),
        region=RegionOut(
            role=ctx.settings.node.role,
            standby=StandbyOut(**asdict(standby)) if standby else None,
        ),
    )


@router.post(
    "/nodes/{node_id}/drain", status_code=202, summary="Stop a node taking traffic and leadership"
)
async def drain(node_id: str, ctx: Context, who: Admin) -> dict[str, object]:
    return await _set_draining(ctx, node_id, True, who)


@router.delete("/nodes/{node_id}/drain", summary="Let a drained node serve again")
async def undrain(node_id: str, ctx: Context, who: Admin) -> dict[str, object]:
    return await _set_draining(ctx, node_id, False, who)


async def _set_draining(
    ctx: Context, node_id: str, draining: bool, who: Principal
) -> dict[str, object]:
    async with ctx.db.connection() as conn, conn.transaction():
        if not await nodes.set_draining(conn, node_id, draining):
            raise HTTPException(404, f"no node {node_id!r} in this cluster")
        # Audited with the change, in its transaction.
        await audit(
            conn, ctx, who, "node_drained" if draining else "node_undrained", f"node:{node_id}"
        )
    return {"node": node_id, "draining": draining}


@router.delete("/nodes/{node_id}", summary="Forget a node that is gone for good (admin; audited)")
async def remove_node(node_id: str, ctx: Context, who: Admin) -> dict[str, object]:
    """For a decommissioned node: it leaves /api/v1/cluster (and so the load balancer's
    slots and the dashboard). Refused while it still heartbeats: a node that comes back
    is simply listed again."""
    async with ctx.db.connection() as conn, conn.transaction():
        silent_s = await nodes.silent_for_update(conn, node_id)
        if silent_s is None:
            raise HTTPException(404, f"no node {node_id!r} in this cluster")
        if silent_s < _stale_after(ctx):
            # A node that still heartbeats would write its row back at once.
            why = f"it sent a heartbeat {silent_s:.1f} s ago: stop it first"
            raise HTTPException(409, f"node {node_id!r} is alive: {why}")
        await nodes.delete(conn, node_id)
        await audit(conn, ctx, who, "node_removed", f"node:{node_id}")
    return {"node": node_id, "removed": True}


def _stale_after(ctx: Context) -> float:
    """Silent this long, a node is not healthy (three missed heartbeats)."""
    return 3 * ctx.settings.ha.heartbeat_s
