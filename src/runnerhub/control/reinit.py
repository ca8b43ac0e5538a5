"""Remediation: ask Patroni to rebuild a PostgreSQL replica that stopped streaming.

The leader reads Patroni's members (from the `patroni` health check) and who streams from
the primary (`pg_stat_replication`, read here, on the primary), times each running replica
without a stream and each replica whose PostgreSQL keeps failing to start
(`domain.replicas`), and once one has been so for `remediation.reinit_after_s` asks that
member's Patroni to reinitialise it (`POST
/reinitialize`: a fresh base backup from the primary). One at a time, within the hourly
budget, recorded as an event (`remediation.reinit_replica`) and counted; switchable off
with `remediation.reinit_stalled_replicas`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
import psycopg
import structlog
from prometheus_client import Gauge

from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.control.remediation import REMEDIATIONS, REMEDIATIONS_SKIPPED
from runnerhub.domain.budget import ActionBudget
from runnerhub.domain.replicas import (
    RETRYING_STATES,
    UP_STATES,
    Member,
    PrimaryView,
    StalledReplicas,
)
from runnerhub.store import events, replication
from runnerhub.store.db import UNAVAILABLE_OR_SLOW

log = structlog.get_logger("runnerhub.remediation")

STALLED = Gauge(
    "runnerhub_postgres_replica_stalled_seconds",
    "How long each PostgreSQL replica has had no WAL stream from the primary while running, "
    "or has failed to start (as the leader sees it; 0 once it streams).",
    ["replica"],
)
ACTION = "reinit_replica"
READ_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE_OR_SLOW, psycopg.Error)


class ReinitStalledReplicas(ControlLoop):
    name = "reinit"

    def __init__(self, ctx: NodeContext, http: httpx.AsyncClient) -> None:
        self.settings = ctx.settings.remediation
        super().__init__(self.settings.interval_s)
        self.ctx = ctx
        self.http = http
        self.health = ctx.settings.health
        self.watch = StalledReplicas(self.settings.reinit_after_s)
        self.budget = ActionBudget(self.settings.max_actions_per_hour)
        self._exported: set[str] = set()  # replicas the gauge has a series for
        self._system_id: str | None = None  # of the database the primary we read serves

    async def cycle(self) -> None:
        if not (
            self.settings.enabled
            and self.settings.reinit_stalled_replicas
            and self.health.patroni_urls
            and self.ctx.health
        ):
            return
        now = time.monotonic()
        due = self.watch.observe(self._members(now), await self._primary(), now)
        self._export(now)
        if due is None or due.member.api_url is None:
            return
        name = due.member.name
        base = configured_base(due.member.api_url, self.health.patroni_urls)
        if base is None:
            # The member list (and its api_url) comes from etcd, which anyone who reaches it
            # can write: credentials go only to a Patroni the settings name.
            log.warning(
                "stalled replica's Patroni is not among health.patroni_urls; not acting",
                replica=name,
                api_url=due.member.api_url,
            )
            return
        states = RETRYING_STATES if due.failing_to_start else UP_STATES
        if not await self._runs_as_replica_of(base, self._system_id, states):
            # Patroni's member list comes from etcd: a member whose machine died is listed
            # as it last was until its key expires. And the Patroni named in the settings
            # might not manage the database we read. Only a live replica of it is rebuilt.
            log.info("stalled replica does not answer as a replica", replica=name)
            return
        if not self.budget.take(now):
            REMEDIATIONS_SKIPPED.labels(ACTION).inc()
            log.warning("remediation budget spent; not acting", action=ACTION, replica=name)
            return
        why = due.reason
        self.ctx.ensure_may_act()
        answer = await self._reinitialize(base)
        log.warning("remediation", action=ACTION, replica=name, reason=why, patroni=answer)
        async with self.ctx.control_tx() as conn:
            await events.append(
                conn,
                self.ctx.settings.node.id,
                f"remediation.{ACTION}",
                f"postgres:{name}",
                reason=why,
                patroni=answer,
            )
        REMEDIATIONS.labels(ACTION).inc()

    def _members(self, now: float) -> list[Member] | None:
        """Patroni's members as the health check last read them, if that was just now."""
        assert self.ctx.health is not None
        result = self.ctx.health.result("patroni")
        fresh_s = 3 * self.health.interval_s + self.health.timeout_s
        if result is None or result.age_s(now) > fresh_s or "members" not in result.detail:
            return None
        return [_member(m) for m in result.detail["members"]]

    async def _primary(self) -> PrimaryView | None:
        try:
            async with self.ctx.db.connection(2.0) as conn:
                status = await replication.read_status(conn)
                system_id = await replication.system_identifier(conn)
        except READ_ERRORS as exc:  # no primary, no pg_monitor: no decision this time
            log.debug("replication state not read", error=type(exc).__name__)
            return None
        self._system_id = system_id
        if status.in_recovery:
            return None
        return PrimaryView({r.name for r in status.replicas}, status.server, status.timeline)

    async def _runs_as_replica_of(
        self, base: str, system_id: str | None, states: Sequence[str]
    ) -> bool:
        """The member's own Patroni says, now, that it is a replica of the database whose
        primary we read (same system identifier), in one of `states`."""
        try:
            r = await self.http.get(f"{base}/patroni", timeout=2.0)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return False
        return (
            isinstance(body, dict)
            and body.get("role") == "replica"
            and body.get("state") in states
            and system_id is not None
            and str(body.get("database_system_identifier")) == system_id
        )

    async def _reinitialize(self, base: str) -> str:
        """Patroni answers at once: 200 "reinitialize started", or 503 with why not (the
        member leads now, a rebuild is already running). Not forced: never cancel what
        Patroni is doing."""
        auth: httpx.Auth | None = None
        if self.health.patroni_username and self.health.patroni_password:
            auth = httpx.BasicAuth(
                self.health.patroni_username, self.health.patroni_password.get_secret_value()
            )
        try:
            r = await self.http.post(
                f"{base}/reinitialize", json={}, auth=auth or httpx.USE_CLIENT_DEFAULT, timeout=5.0
            )
        except httpx.HTTPError as exc:
            return f"no answer ({type(exc).__name__})"
        return f"{r.status_code} {r.text.strip()[:200]}"

    def _export(self, now: float) -> None:
        stalled = self.watch.stalled(now)
        for name in self._exported - stalled.keys():
            STALLED.labels(name).set(0)
        for name, seconds in stalled.items():
            STALLED.labels(name).set(round(seconds, 1))
        self._exported |= stalled.keys()


def configured_base(api_url: str, configured: Sequence[str]) -> str | None:
    """The configured Patroni URL that `api_url` (as Patroni's member list gives it, e.g.
    `http://10.0.0.22:8008/patroni`) points at: same scheme, host and port; else None."""
    try:
        wanted = httpx.URL(api_url)
    except (httpx.InvalidURL, TypeError):
        return None
    for url in configured:
        mine = httpx.URL(url)
        if (mine.scheme, mine.host, mine.port) == (wanted.scheme, wanted.host, wanted.port):
            return url.rstrip("/")
    return None


def _member(m: dict[str, Any]) -> Member:
    host, port = m.get("host"), m.get("port")
    return Member(
        name=str(m.get("name")),
        role=str(m.get("role")),
        state=str(m.get("state")),
        address=f"{host}:{port}" if host and port else None,
        api_url=m.get("api_url"),
        timeline=m.get("timeline"),
    )
