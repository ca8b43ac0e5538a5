"""One RunnerHub node, and the composition root: every part is built here once, in the order
of what it needs, and handed to what uses it.

Every node serves webhooks and the API (active-active). The control loops (scheduler,
reconciler, janitor, remediation) run only on the elected leader (active-passive): they
start when this node wins the election and stop when it steps down. Without etcd endpoints
configured the node is the only one and always leads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import structlog
from fastapi import FastAPI

from runnerhub.api.app import RunnerHubApp, create_app
from runnerhub.backends.base import RunnerBackend
from runnerhub.backends.container import ContainerBackend
from runnerhub.backends.guarded import GuardedBackend
from runnerhub.backends.process import ProcessBackend
from runnerhub.breakers import BreakerListener, CircuitBreaker
from runnerhub.cache import Cache, NullCache, SharedCache
from runnerhub.config import RedisSettings, Settings
from runnerhub.context import NodeContext, NodeState, SoleNode, StandbyNode
from runnerhub.control.backups import Backups
from runnerhub.control.janitor import Janitor
from runnerhub.control.membership import heartbeat
from runnerhub.control.nodewatch import NodeWatch
from runnerhub.control.reconciler import Reconciler
from runnerhub.control.reinit import ReinitStalledReplicas
from runnerhub.control.remediation import Remediation, StepDownWhenDegraded
from runnerhub.control.retention import Retention
from runnerhub.control.scheduler import Scheduler
from runnerhub.control.takeover import LeaderOffice
from runnerhub.control.watch import watch_cache, watch_replication
from runnerhub.github.client import GitHubClient
from runnerhub.ha.elector import Elector
from runnerhub.ha.etcd import EtcdAccess, EtcdLeaderStore, MemberStatusReader
from runnerhub.ha.leadership import LeasePolicy
from runnerhub.health.monitor import HealthMonitor
from runnerhub.health.node_checks import Subjects, node_checks
from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.intake.webhook import WebhookIntake
from runnerhub.lb.agent import LoadBalancerAgent
from runnerhub.live.hub import LiveHub
from runnerhub.paths import private_dir
from runnerhub.predict.node_signals import node_signals
from runnerhub.predict.watch import PredictionWatch
from runnerhub.store.db import make_pool
from runnerhub.store.migrate import migrate_when_reachable

log = structlog.get_logger("runnerhub.node")


def runner_state_dir(settings: Settings) -> Path:
    """Where the process backend keeps its runner records and logs."""
    return settings.node.runner_state_dir or settings.node.state_dir / "process"


def make_backends(
    settings: Settings,
    breakers: dict[str, CircuitBreaker] | None = None,
    on_change: BreakerListener | None = None,
) -> dict[str, RunnerBackend]:
    """Each backend behind its own circuit breaker (added to `breakers` when given)."""
    process_pools = {
        p.name: p.process for p in settings.pools if p.backend == "process" and p.process
    }
    container_pools = {
        p.name: p.container for p in settings.pools if p.backend == "container" and p.container
    }
    backends: dict[str, RunnerBackend] = {}
    if process_pools:
        backends["process"] = ProcessBackend(runner_state_dir(settings), process_pools)
    cb = settings.circuit_breaker
    if container_pools:
        # A breaker per runner host (an engine that stops answering), beside the backend's.
        backends["container"] = ContainerBackend(
            container_pools, cb.failure_threshold, cb.open_s, breakers, on_change
        )
    if breakers is None:
        return backends
    for kind in list(backends):
        breaker = CircuitBreaker(
            f"backend:{kind}", cb.failure_threshold, cb.open_s, on_change=on_change
        )
        breakers[breaker.name] = breaker
        backends[kind] = GuardedBackend(backends[kind], breaker)
    return backends


def make_cache(r: RedisSettings) -> Cache:
    if not r.enabled:
        return NullCache()
    return SharedCache.from_settings(r)


def make_elector(settings: Settings, state: NodeState) -> Elector | None:
    ha = settings.ha
    if not ha.enabled:
        return None
    node = settings.node
    return Elector(
        EtcdLeaderStore(ha.etcd_endpoints, ha.key_prefix, ha.etcd_timeout_s, EtcdAccess.of(ha)),
        node.id,
        node.url,
        LeasePolicy(ha.lease_ttl_s, ha.renewals_per_ttl, ha.safety_margin_s),
        is_draining=lambda: state.draining,
    )


class Node:
    def __init__(self, settings: Settings, run_control_loops: bool = True) -> None:
        self.settings = s = settings
        self.run_control_loops = run_control_loops and not settings.node.standby
        private_dir(s.node.state_dir)
        # Connections and what the node knows of itself.
        db = make_pool(s.database)
        cache = make_cache(s.redis)
        state = NodeState()
        # A standby region's node takes no part in any election, and never leads.
        self.elector = None if s.node.standby else make_elector(s, state)
        leadership = StandbyNode() if s.node.standby else (self.elector or SoleNode())
        self.health = HealthMonitor()  # its checks are added last: some watch the loops
        live = LiveHub(db, cache, use_redis=s.redis.enabled)
        self.ctx = ctx = NodeContext(s, db, leadership, cache, live, self.health, state)
        # What the node talks to: incidents, GitHub and the runner backends, each of the
        # last two behind a circuit breaker.
        self.incidents = IncidentRecorder(db, s.node.id, lambda: leadership.is_leader)
        self.health.listeners.append(self.incidents.on_health)
        cb = s.circuit_breaker
        github_breaker = CircuitBreaker(
            "github", cb.failure_threshold, cb.open_s, on_change=self.incidents.on_breaker
        )
        self.breakers = {"github": github_breaker}
        self.github = GitHubClient.from_settings(s.github, cache, github_breaker)
        self.backends = make_backends(s, self.breakers, self.incidents.on_breaker)
        for name in self.breakers:
            self.incidents.started(f"breaker:{name}")
        self.intake = WebhookIntake(s, db)
        # Tells HAProxy to send the leader almost no deliveries (lb/agent.py).
        self.lb_agent = (
            LoadBalancerAgent(s.node.host, s.node.lb_agent_port, lambda: leadership.is_leader)
            if s.node.lb_agent_port is not None
            else None
        )
        # The leader's loops, and what taking office means.
        self.peer_http = httpx.AsyncClient(timeout=1.0)
        self.health_http = httpx.AsyncClient(timeout=s.health.timeout_s)
        # With TLS or users, etcd's members are read over gRPC (its HTTP gateway refuses).
        secured = s.ha.etcd_ca_file is not None or s.ha.etcd_username is not None
        self.etcd_status = (
            MemberStatusReader(EtcdAccess.of(s.ha), s.health.timeout_s) if secured else None
        )
        scheduler = Scheduler(ctx, self.github, self.backends)
        janitor = Janitor(ctx, self.github, self.backends)
        reconciler = Reconciler(ctx, self.github, self.backends)
        logs = [runner_state_dir(s) / "logs"] if "process" in self.backends else []
        self.step_down = StepDownWhenDegraded(ctx, self.peer_http)
        self.reinit = ReinitStalledReplicas(ctx, self.peer_http)
        self.loops = [
            scheduler,
            janitor,
            reconciler,
            NodeWatch(ctx, self.incidents),
            Remediation(ctx, self.backends, logs),
            self.step_down,
            self.reinit,
            Retention(ctx),
        ]
        if s.backup.enabled:
            self.loops.append(Backups(ctx))
        first_steps = [("janitor", janitor.cycle), ("reconciler", reconciler.catch_up_jobs)]
        self.office = LeaderOffice(ctx, self.loops, scheduler, first_steps, self.incidents)
        # Forecasts and health checks, over all of the above.
        self.predictions = PredictionWatch(
            s.node.id,
            node_signals(s, db, lambda: state.replication, self.health, self.github.errors.rate),
            s.predict.interval_s,
            self.incidents,
        )
        self.health.add(node_checks(s, self.health, self._subjects(leadership)))
        self.app: RunnerHubApp = create_app(ctx, self.intake, lifespan=self._lifespan)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def _subjects(self, leadership: Elector | SoleNode) -> Subjects:
        return Subjects(
            db=self.ctx.db,
            spool=self.intake.spool,
            leadership=leadership,
            leader_store=self.elector.store if self.elector else None,
            loops=self.loops,
            github=self.github,
            breakers=self.breakers,
            backends=self.backends,
            cache=self.ctx.cache,
            replication=lambda: self.ctx.state.replication,
            archiver=lambda: self.ctx.state.archiver,
            archive_behind=lambda: self.ctx.state.archive_behind,
            standby=lambda: self.ctx.state.standby,
            predictions=lambda: self.predictions.standing,
            http=self.health_http,
            etcd_status=self.etcd_status,
        )

    @asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def hand_over_soon(self) -> None:
        """From a signal handler: step down at once if leading (safe outside the loop)."""
        if self._loop is not None and self.elector is not None:
            self._loop.call_soon_threadsafe(self.elector.retire, "shutting down")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.ctx.db.open(wait=False)
        self.intake.start()  # the spool (and its drainer): every node has its own
        if self.lb_agent is not None:
            await self.lb_agent.start()
        self._stop.clear()
        self._tasks.append(asyncio.create_task(self._run(), name="runnerhub-node"))
        # From the first moment: /health must answer (and say why) before the database does.
        self._tasks.append(asyncio.create_task(self.health.run(self._stop), name="health"))
        election = "etcd" if self.elector else "none (single node)"
        if self.settings.node.standby:
            election = "none (a standby region's node)"
        log.info(
            "node started",
            node=self.settings.node.id,
            url=self.settings.node.url,
            election=election,
        )

    async def _run(self) -> None:
        dsn = self.settings.database.dsn.get_secret_value()
        standby = self.settings.node.standby
        # A standby region's database is read-only: it is migrated by the active region.
        if not standby and not await migrate_when_reachable(dsn, self._stop):
            return
        stop, ctx = self._stop, self.ctx
        work = [
            asyncio.create_task(watch_replication(ctx, stop), name="replication"),
            asyncio.create_task(self.incidents.run(stop), name="incidents"),
        ]
        if not standby:  # it would write to the active region's nodes table
            work.append(asyncio.create_task(heartbeat(ctx, stop), name="heartbeat"))
        if ctx.live is not None:
            work.append(asyncio.create_task(ctx.live.run(stop), name="live-events"))
        if self.settings.predict.enabled:
            work.append(asyncio.create_task(self.predictions.run(stop), name="predict"))
        if self.settings.redis.enabled:
            work.append(asyncio.create_task(watch_cache(ctx, stop), name="cache"))
        if self.run_control_loops:
            if self.elector is not None:
                office = self.office
                elector = self.elector.run(stop, office.take, office.leave)
                work.append(asyncio.create_task(elector, name="elector"))
            else:
                await self.office.start_loops()  # one node, always the leader
        for task in work:
            task.add_done_callback(functools.partial(_ended_early, stop))
        await stop.wait()
        await self.office.stop_loops()
        await asyncio.gather(*work, return_exceptions=True)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=15)
            except TimeoutError:
                task.cancel()
        if self.lb_agent is not None:
            await self.lb_agent.close()
        await self.intake.close()
        if self.elector is not None:
            await self.elector.store.close()
        for backend in self.backends.values():
            await backend.close()
        await self.github.aclose()
        await self.health_http.aclose()
        if self.etcd_status is not None:
            await self.etcd_status.close()
        await self.peer_http.aclose()
        await self.ctx.cache.close()
        await self.ctx.db.close()
        log.info("node stopped", node=self.settings.node.id)


def _ended_early(stop: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """A node's background work runs until the node stops: one that ends before is a bug
    that would otherwise go unseen (an election loop ended so, leaving a leader's loops
    running on a lease nobody renewed)."""
    if stop.is_set():
        return
    if task.cancelled():
        how = "cancelled"
    elif (exc := task.exception()) is not None:
        how = f"{type(exc).__name__}: {exc}"
    else:
        how = "returned"
    log.error("background work ended before the node stopped", task=task.get_name(), how=how)
