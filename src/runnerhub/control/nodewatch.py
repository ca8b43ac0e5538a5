"""The leader watches every node's heartbeat: a node whose heartbeat stops is an incident
(node lost), over when it beats again.

A node beats every `ha.heartbeat_s`; two missed beats and a half make it lost, so with the
default of 1 s a dead node is recorded about 2.5 s after its last beat (the incident's
detection time, measured from that last beat, on the database's clock)."""

from __future__ import annotations

from dataclasses import replace

from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.store import nodes


class NodeWatch(ControlLoop):
    name = "nodewatch"

    def __init__(self, ctx: NodeContext, incidents: IncidentRecorder) -> None:
        beat = ctx.settings.ha.heartbeat_s
        super().__init__(interval_s=min(0.5, beat / 2))
        self.ctx = ctx
        self.incidents = incidents
        self.lost_after_s = 2.5 * beat

    async def cycle(self) -> None:
        async with self.ctx.db.connection(2.0) as conn:
            rows = await nodes.list_nodes(conn)
        me = self.ctx.settings.node.id
        self.ctx.state.peers = {
            r.id: r.url for r in rows if r.id != me and r.url and not r.draining
        }
        for r in rows:
            if r.id == me:
                continue
            change = self.incidents.tracker.observe(
                f"node:{r.id}",
                r.silent_s <= self.lost_after_s,
                r.db_now,
                kind="node_lost",
                summary=f"node {r.id} stopped sending heartbeats",
                action="HAProxy stops routing to it (/readyz); the leader adopts its runners",
                detail={"url": r.url, "pid": r.pid, "role": r.role},
            )
            if change is None:
                continue
            what, incident = change
            if what == "opened":  # it went silent at its last beat, not at our last look
                incident = replace(incident, started_at=r.last_seen)
            self.incidents.submit(incident)
