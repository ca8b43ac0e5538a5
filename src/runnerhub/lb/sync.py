"""The loop that keeps HAProxy's server slots in step with the cluster's nodes: read
`/api/v1/cluster` (any node answers for all: the list is in PostgreSQL), plan
(`lb/plan.py`), apply through HAProxy's runtime API (`lb/runtime.py`). Run beside each
HAProxy (`runnerhub lb sync`, deploy/systemd/runnerhub-lb-sync.service); two HAProxy
hosts each run their own."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from prometheus_client import Counter, Gauge

from runnerhub.lb.plan import Member, Plan, is_member, plan
from runnerhub.lb.runtime import HAProxyRuntime, HAProxyRuntimeError
from runnerhub.render.haproxy import BACKEND, WEBHOOKS

log = structlog.get_logger("runnerhub.lb")

SYNCS = Counter(
    "runnerhub_lb_syncs_total",
    "Rounds of `runnerhub lb sync`, by outcome (ok, or what failed: api, resolve, haproxy).",
    ["outcome"],
)
CHANGES = Counter("runnerhub_lb_changes_total", "Server slots changed in HAProxy.")
UNPLACED = Gauge(
    "runnerhub_lb_unplaced_nodes",
    "Nodes HAProxy does not know because the backend has no free server slot.",
)


BACKENDS = (WEBHOOKS, BACKEND)  # as render/haproxy.py and deploy/haproxy.cfg name them


class SyncError(Exception):
    """A round failed: no API answered, or HAProxy refused; the message says which."""


@dataclass
class LoadBalancerSync:
    apis: Sequence[str]  # node base URLs, tried in turn
    token: str  # a read token
    haproxy: HAProxyRuntime
    backends: Sequence[str] = BACKENDS
    forget_after_s: float = 300.0
    verify: str | bool = True  # a CA file for https APIs, or True for the system's
    last: Plan | None = field(default=None, init=False)

    async def once(self) -> Plan:
        try:
            nodes = await self._nodes()
        except SyncError:
            SYNCS.labels("api").inc()
            raise
        try:
            members = await members_from(nodes, self.forget_after_s)
        except SyncError:
            SYNCS.labels("resolve").inc()
            raise
        try:
            slots = [s for b in self.backends for s in await self.haproxy.slots(b)]
            p = plan(slots, members)
            for change in p.changes:
                await self.haproxy.apply(change.commands())
                CHANGES.inc()
                log.info(
                    "lb.slot",
                    server=f"{change.backend}/{change.slot}",
                    node=change.node,
                    state=change.state,
                    addr=change.addr and f"{change.addr}:{change.port}",
                )
        except HAProxyRuntimeError as exc:
            SYNCS.labels("haproxy").inc()
            raise SyncError(str(exc)) from None
        if p.unplaced and (self.last is None or self.last.unplaced != p.unplaced):
            log.error(
                "lb.no_free_slot",
                nodes=p.unplaced,
                hint="raise the server-template's count in haproxy.cfg and reload",
            )
        UNPLACED.set(len(p.unplaced))
        SYNCS.labels("ok").inc()
        self.last = p
        return p

    async def run(self, interval_s: float) -> None:
        """Forever: a failed round is logged and the next one tries again."""
        while True:
            try:
                await self.once()
            except SyncError as exc:
                log.warning("lb.sync_failed", error=str(exc))
            await asyncio.sleep(interval_s)

    async def _nodes(self) -> list[dict[str, Any]]:
        errors = []
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(timeout=5.0, verify=self.verify) as client:
            for api in self.apis:
                try:
                    r = await client.get(f"{api.rstrip('/')}/api/v1/cluster", headers=headers)
                except httpx.HTTPError as exc:
                    errors.append(f"{api}: {exc or type(exc).__name__}")
                    continue
                if r.status_code == 200:
                    return list(r.json()["nodes"])
                errors.append(f"{api}: HTTP {r.status_code}")
        raise SyncError("no node's API answered: " + "; ".join(errors))


async def members_from(nodes: Sequence[dict[str, Any]], forget_after_s: float) -> list[Member]:
    """The nodes HAProxy should list. Silence is measured against the newest heartbeat in
    the list (one clock, the database's), not this host's clock."""
    seen = {n["id"]: datetime.fromisoformat(n["last_seen"]) for n in nodes}
    newest = max(seen.values(), default=None)
    out = []
    for n in nodes:
        silent_s = (newest - seen[n["id"]]).total_seconds() if newest else 0.0
        if not is_member(n.get("url"), silent_s, forget_after_s):
            continue
        addr, port = await _address(str(n["url"]))
        out.append(Member(n["id"], addr, port, bool(n["draining"])))
    return out


async def _address(url: str) -> tuple[str, int]:
    """HAProxy's runtime API takes an IP address: a node that advertises a name is resolved
    here, once per round."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SyncError(f"cannot resolve node URL {url}: {exc}") from None
    return str(infos[0][4][0]), port
