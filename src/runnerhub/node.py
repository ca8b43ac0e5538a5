"""One RunnerHub node: the HTTP app (intake, API, health) plus the control loops.

Every node serves webhooks and the API (active-active). The control loops (scheduler,
reconciler, janitor) run only on the elected leader (active-passive): they start when this
node wins the election and stop when it steps down. Without etcd endpoints configured the
node is the only one and always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import structlog
from fastapi import FastAPI

from runnerhub import metrics
from runnerhub.api.app import RunnerHubApp, create_app
from runnerhub.backends.base import RunnerBackend
from runnerhub.backends.guarded import GuardedBackend
from runnerhub.backends.process import ProcessBackend
from runnerhub.breakers import BreakerListener, CircuitBreaker
from runnerhub.cache import Cache, NullCache, SharedCache
from runnerhub.config import Settings
from runnerhub.context import NodeContext
from runnerhub.control.janitor import Janitor
from runnerhub.control.listener import listen
from runnerhub.control.loop import ControlLoop
from runnerhub.control.nodewatch import NodeWatch
from runnerhub.control.reconciler import Reconciler
from runnerhub.control.reinit import ReinitStalledReplicas
from runnerhub.control.remediation import Remediation, StepDownWhenDegraded
from runnerhub.control.scheduler import Scheduler
from runnerhub.github.client import GitHubClient
from runnerhub.ha.dcs import Term
from runnerhub.ha.elector import Elector
from runnerhub.ha.etcd import EtcdLeaderStore
from runnerhub.ha.leadership import LeasePolicy
from runnerhub.health import checks
from runnerhub.health.monitor import CheckFn, CheckSpec, HealthMonitor
from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.incidents.tracker import Incident
from runnerhub.live.hub import LiveHub
from runnerhub.predict import signals
from runnerhub.predict.forecast import ForecastPolicy
from runnerhub.predict.rates import CounterErrorRate, ErrorRate
from runnerhub.predict.watch import PredictionWatch, Signal
from runnerhub.store import fencing, replication
from runnerhub.store.db import UNAVAILABLE, make_pool
from runnerhub.store.migrate import migrate
from runnerhub.store.runners import log_event

log = structlog.get_logger("runnerhub.node")

# A new leader reconciles with GitHub before it provisions, but not for longer than this:
# provisioning is idempotent on its own, and failover has a time budget.
TAKEOVER_RECONCILE_S = 5.0
# A loop mid-cycle is cancelled after this: every step is idempotent, and a clean handover
# should not wait for a reconciler sweep to finish.
LOOP_STOP_GRACE_S = 0.05
# Reading replication state may fail for want of a database or of the pg_monitor role.
MONITORING_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE, psycopg.Error)


def runner_state_dir(settings: Settings) -> Path:
    """Where the process backend keeps its runner records and logs."""
    return settings.node.runner_state_dir or settings.node.state_dir / "process"


def make_backends(
    settings: Settings,
    breakers: dict[str, CircuitBreaker] | None = None,
    on_change: BreakerListener | None = None,
) -> dict[str, RunnerBackend]:
    """Each backend behind its own circuit breaker (added to `breakers` when given)."""
    process_pools = {p.name: p.process for p in settings.pools if p.process is not None}
    backends: dict[str, RunnerBackend] = {}
    if process_pools:
        backends["process"] = ProcessBackend(runner_state_dir(settings), process_pools)
    if breakers is None:
        return backends
    cb = settings.circuit_breaker
    for kind in list(backends):
        breaker = CircuitBreaker(
            f"backend:{kind}", cb.failure_threshold, cb.open_s, on_change=on_change
        )
        breakers[breaker.name] = breaker
        backends[kind] = GuardedBackend(backends[kind], breaker)
    return backends


def make_cache(settings: Settings) -> Cache:
    r = settings.redis
    if not r.enabled:
        return NullCache()
    return SharedCache(
        [(h, int(p)) for h, _, p in (e.rpartition(":") for e in r.sentinels)],
        r.master_name,
        password=r.password.get_secret_value() if r.password else None,
        sentinel_password=r.sentinel_password.get_secret_value() if r.sentinel_password else None,
        socket_timeout_s=r.socket_timeout_s,
        connect_timeout_s=r.socket_timeout_s,
    )


class Node:
    def __init__(self, settings: Settings, run_control_loops: bool = True) -> None:
        self.settings = settings
        settings.node.state_dir.mkdir(parents=True, exist_ok=True)
        self.db = make_pool(settings.database)
        self.ctx = NodeContext(settings, self.db)
        self.cache = make_cache(settings)
        self.ctx.cache = self.cache
        self.live = LiveHub(self.db, self.cache, use_redis=settings.redis.enabled)
        self.ctx.live = self.live
        self.incidents = IncidentRecorder(
            self.db, settings.node.id, lambda: self.ctx.leadership.is_leader
        )
        cb = settings.circuit_breaker
        self.breakers: dict[str, CircuitBreaker] = {
            "github": CircuitBreaker(
                "github", cb.failure_threshold, cb.open_s, on_change=self.incidents.on_breaker
            )
        }
        self.github = GitHubClient.from_settings(
            settings.github, self.cache, self.breakers["github"]
        )
        self.backends = make_backends(settings, self.breakers, self.incidents.on_breaker)
        for name in self.breakers:
            self.incidents.started(f"breaker:{name}")
        self.scheduler = Scheduler(self.ctx, self.github, self.backends)
        self.janitor = Janitor(self.ctx, self.github, self.backends)
        self.reconciler = Reconciler(self.ctx, self.github, self.backends)
        self.node_watch = NodeWatch(self.ctx, self.incidents)
        logs = [runner_state_dir(settings) / "logs"] if "process" in self.backends else []
        self.remediation = Remediation(self.ctx, self.backends, logs)
        self.peer_http = httpx.AsyncClient(timeout=1.0)
        self.step_down = StepDownWhenDegraded(self.ctx, self.peer_http)
        self.reinit = ReinitStalledReplicas(self.ctx, self.peer_http)
        self.loops: list[ControlLoop] = [
            self.scheduler,
            self.janitor,
            self.reconciler,
            self.node_watch,
            self.remediation,
            self.step_down,
            self.reinit,
        ]
        self.run_control_loops = run_control_loops
        self.elector: Elector | None = None
        ha = settings.ha
        if ha.enabled:
            store = EtcdLeaderStore(ha.etcd_endpoints, ha.key_prefix, ha.etcd_timeout_s)
            policy = LeasePolicy(ha.lease_ttl_s, ha.renewals_per_ttl, ha.safety_margin_s)
            self.elector = Elector(
                store,
                settings.node.id,
                self.ctx.public_url,
                policy,
                self._on_elected,
                self._on_demoted,
                is_draining=lambda: self.ctx.draining,
            )
            self.ctx.leadership = self.elector
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop_stop = asyncio.Event()
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app: RunnerHubApp = create_app(self.ctx, lifespan=self._lifespan)
        self.app.state.node = self
        self.health_http = httpx.AsyncClient(timeout=settings.health.timeout_s)
        self.predictions = PredictionWatch(
            settings.node.id,
            self._signals(),
            settings.predict.interval_s,
            self.incidents,
        )
        self.health = HealthMonitor(self._health_checks())
        self.health.listeners.append(self.incidents.on_health)
        self.ctx.health = self.health

    def _signals(self) -> list[Signal]:
        """What is forecast: this node's disk, memory and connection pool, the replicas'
        lag, the database's and GitHub's answer times (from the health checks) and their
        error rates (GitHub calls without an answer or with a 5xx; failed requests for a
        database connection)."""
        p = self.settings.predict
        h = self.settings.health

        def policy(limit: float, rising: bool = True) -> ForecastPolicy:
            return ForecastPolicy(
                limit=limit,
                horizon_s=p.horizon_s,
                window_s=p.window_s,
                min_span_s=p.min_span_s,
                min_t=p.min_t,
                rising=rising,
            )

        state = self.settings.node.state_dir
        total = signals.total_bytes(state) or 0.0
        memory = p.memory_limit_bytes or signals.memory_limit_bytes() or 0.0
        db_max = self.settings.database.pool_max_size

        def pool_use() -> float:
            s = self.db.get_stats()
            busy = s.get("pool_size", 0) - s.get("pool_available", 0)
            return (busy + s.get("requests_waiting", 0)) / db_max

        def pool_requests() -> tuple[int, int]:
            s = self.db.get_stats()  # counters psycopg_pool keeps (absent until non-zero)
            return s.get("requests_num", 0), s.get("requests_errors", 0)

        def replica_lag() -> float | None:
            status = self.ctx.replication
            lags = (
                [r.replay_lag_s for r in status.replicas if r.replay_lag_s is not None]
                if status
                else []
            )
            return max(lags) if lags else None

        def latency(check: str) -> Callable[[], float | None]:
            def read() -> float | None:
                r = self.health.result(check)  # read at each tick, once the monitor exists
                return None if r is None or r.latency_ms is None else r.latency_ms / 1000

            return read

        out = [
            Signal(
                f"disk:{state}",
                lambda: signals.free_bytes(state),
                policy(total * p.disk_reserve_fraction, rising=False),
                f"the disk holding {state} fills up",
            ),
            Signal("db_pool", pool_use, policy(1.0), "the database connection pool runs out"),
            Signal(
                "replica_lag",
                replica_lag,
                policy(p.replica_lag_limit_s),
                f"a PostgreSQL replica falls {p.replica_lag_limit_s:g} s behind",
            ),
            Signal(
                "database_latency",
                latency("database"),
                policy(h.timeout_s),
                "the database answers slower than the health timeout",
            ),
            Signal(
                "github_latency",
                latency("github"),
                policy(h.timeout_s),
                "GitHub answers slower than the health timeout",
            ),
            Signal(
                "github_errors",
                self.github.errors.rate,
                policy(p.error_rate_limit),
                f"{p.error_rate_limit:.0%} of GitHub API calls fail",
            ),
            Signal(
                "database_errors",
                CounterErrorRate(pool_requests, ErrorRate()).sample,
                policy(p.error_rate_limit),
                f"{p.error_rate_limit:.0%} of requests for a database connection fail",
            ),
        ]
        if memory:
            out.append(
                Signal(
                    "memory",
                    signals.rss_bytes,
                    policy(memory * 0.9),
                    "this node's memory reaches 90 % of its limit",
                )
            )
        return out

    def _health_checks(self) -> list[CheckSpec]:
        s = self.settings
        h = s.health
        ctx = self.ctx

        def spec(name: str, fn: CheckFn, critical: bool = False, every: float = 0) -> CheckSpec:
            return CheckSpec(name, fn, every or h.interval_s, h.timeout_s, critical)

        elector = self.elector

        def patroni_members() -> list[dict[str, Any]] | None:
            r = self.health.result("patroni")  # read when the check runs, from memory
            return r.detail.get("members") if r is not None else None

        specs = [
            spec("database", checks.database(self.db, h.timeout_s), critical=True),
            spec("replication", checks.replication(lambda: ctx.replication, patroni_members)),
            spec("spool", checks.spool(self.app.state.intake.spool)),
            spec(
                "leader",
                checks.leader(
                    elector.store if elector else None,
                    s.node.id,
                    lambda: ctx.leadership.is_leader,
                    ctx.leadership.may_act,
                ),
                critical=True,
            ),
            spec("control_loops", checks.loops(self.loops, lambda: ctx.leadership.is_leader)),
            spec("github", checks.github(self.github), every=h.github_interval_s),
            spec("circuit_breakers", checks.breakers(self.breakers)),
            spec("predictions", checks.predictions(lambda: self.predictions.standing)),
        ]
        if self.backends:
            specs.append(spec("backends", checks.backends(self.backends)))
        if s.ha.enabled:
            specs.append(spec("etcd", checks.etcd(s.ha.etcd_endpoints, self.health_http)))
        if s.redis.enabled:
            specs.append(spec("redis", checks.redis(self.cache)))
        if h.patroni_urls:
            specs.append(spec("patroni", checks.patroni(h.patroni_urls, self.health_http)))
        return specs

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
        await self.db.open(wait=False)
        self.app.state.intake.start()  # the spool (and its drainer): every node has its own
        self._stop.clear()
        self._tasks.append(asyncio.create_task(self._run(), name="runnerhub-node"))
        # From the first moment: /health must answer (and say why) before the database does.
        self._tasks.append(asyncio.create_task(self.health.run(self._stop), name="health"))
        log.info(
            "node started",
            node=self.settings.node.id,
            url=self.ctx.public_url,
            election="etcd" if self.elector else "none (single node)",
        )

    async def _migrate_when_reachable(self) -> None:
        dsn = self.settings.database.dsn.get_secret_value()
        while not self._stop.is_set():
            try:
                applied = await migrate(dsn)
                if applied:
                    log.info("database migrated", applied=[m.version for m in applied])
                return
            except UNAVAILABLE as exc:
                log.warning("database not reachable for migrations; retrying", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=2.0)

    async def _run(self) -> None:
        await self._migrate_when_reachable()
        if self._stop.is_set():
            return
        work = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._watch_replication(), name="replication"),
            asyncio.create_task(self.live.run(self._stop), name="live-events"),
            asyncio.create_task(self.incidents.run(self._stop), name="incidents"),
        ]
        if self.settings.predict.enabled:
            work.append(asyncio.create_task(self.predictions.run(self._stop), name="predict"))
        if self.settings.redis.enabled:
            work.append(asyncio.create_task(self._watch_cache(), name="cache"))
        if self.run_control_loops:
            if self.elector is not None:
                work.append(asyncio.create_task(self.elector.run(self._stop), name="elector"))
            else:
                await self._start_loops()
        await self._stop.wait()
        await self._stop_loops()
        await asyncio.gather(*work, return_exceptions=True)

    # -- membership ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Tell the cluster this node is alive (and learn whether it is to drain)."""
        node = self.settings.node
        while not self._stop.is_set():
            role = "leader" if self.ctx.leadership.is_leader else "follower"
            try:
                async with self.db.connection(2.0) as conn:
                    draining = await fencing.heartbeat(
                        conn, node.id, self.ctx.public_url, os.getpid(), role
                    )
                if draining and not self.ctx.draining:
                    log.warning("draining: no more traffic or leadership for this node")
                self.ctx.draining = draining
                if draining:
                    self.ctx.leadership.request_resign("draining")
            except UNAVAILABLE as exc:
                log.warning("heartbeat failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.ha.heartbeat_s)

    async def _watch_replication(self) -> None:
        """Read the primary's replication state now and then: for /api/v1/cluster, /readyz
        and the metrics. A failure only leaves the last reading marked as unknown."""
        db = self.settings.database
        while not self._stop.is_set():
            try:
                async with self.db.connection(2.0) as conn:
                    status = await replication.read_status(conn, db.replica_lag_alert_s)
                self.ctx.replication = status
                metrics.record_replication(status)
            except MONITORING_ERRORS as exc:
                # Unreachable, or a role without pg_monitor: monitoring is lost, nothing else.
                self.ctx.replication = None
                log.debug("replication state not read", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=db.replication_check_s)

    async def _watch_cache(self) -> None:
        """Redis's primary (as Sentinel names it) and its replicas' offset lag, now and then.
        Never blocks anything: the cache swallows its own failures (I7)."""
        while not self._stop.is_set():
            self.ctx.cache_replication = await self.cache.replication()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.redis.check_s)

    # -- leadership ------------------------------------------------------------------------

    async def _on_elected(self, term: Term, vacancy_seen: float) -> None:
        node = self.settings.node.id
        async with self.db.connection() as conn, conn.transaction():
            previous = await fencing.current(conn)
            if not await fencing.record_epoch(conn, term.epoch, node):
                newer = previous and previous["epoch"]
                raise RuntimeError(
                    f"epoch {term.epoch} is older than the recorded {newer} (was etcd reset?)"
                )
        await self._start_loops()
        now_mono = time.monotonic()
        takeover_s = max(0.0, now_mono - vacancy_seen)
        seen_at = datetime.now(UTC) - timedelta(seconds=takeover_s)
        metrics.ELECTIONS.inc()
        metrics.IS_LEADER.set(1)
        metrics.LEADER_EPOCH.set(term.epoch)
        metrics.TAKEOVER.observe(takeover_s)
        with contextlib.suppress(*UNAVAILABLE):
            async with self.ctx.control_tx() as conn:
                await log_event(
                    conn,
                    node,
                    "leader.elected",
                    "cluster",
                    epoch=term.epoch,
                    previous_leader=previous and previous["node"],
                    previous_epoch=previous and previous["epoch"],
                    vacancy_detected_at=seen_at.isoformat(),
                    acting_at=datetime.now(UTC).isoformat(),
                    takeover_s=round(takeover_s, 3),
                )
        log.info("acting as leader", epoch=term.epoch, takeover_s=round(takeover_s, 3))
        await self._record_leader_change(term, previous, seen_at)

    async def _record_leader_change(
        self, term: Term, previous: dict[str, Any] | None, seen_at: datetime
    ) -> None:
        """A leader change as an incident: begun at the old leader's last heartbeat (it may
        have died any time after), noticed when this node saw the seat empty, over now."""
        node = self.settings.node.id
        old = str(previous["node"]) if previous else None
        if old is None:
            return  # the cluster's first leader: nothing failed
        last_seen: datetime | None = None
        if old != node:
            with contextlib.suppress(*UNAVAILABLE, TimeoutError):
                async with asyncio.timeout(1.0), self.db.connection() as conn:
                    cur = await conn.execute("SELECT last_seen FROM nodes WHERE id = %s", (old,))
                    row = await cur.fetchone()
                    last_seen = row["last_seen"] if row else None
        started = min(last_seen, seen_at) if last_seen else None
        self.incidents.submit(
            Incident(
                key=f"leader:{term.epoch}",
                component="leader",
                kind="leader_change",
                summary=f"{node} leads (epoch {term.epoch}) after {old}",
                detected_at=seen_at,
                started_at=started,
                recovered_at=datetime.now(UTC),
                action="elected; adopted runners, caught up with GitHub, resumed the loops",
                detail={"previous_leader": old, "epoch": term.epoch},
            ),
            new=True,
        )

    async def _on_demoted(self, term: Term, reason: str) -> None:
        metrics.IS_LEADER.set(0)
        metrics.STEP_DOWNS.labels(reason.split(":")[0].split(" (")[0]).inc()
        await self._stop_loops()
        # Not fenced: a record of what happened, which even a deposed leader may write.
        with contextlib.suppress(*UNAVAILABLE, TimeoutError):
            async with asyncio.timeout(1.0), self.db.connection() as conn, conn.transaction():
                await log_event(
                    conn,
                    self.settings.node.id,
                    "leader.stepped_down",
                    "cluster",
                    epoch=term.epoch,
                    reason=reason,
                )

    async def _start_loops(self) -> None:
        """Adopt and reconcile first, then provision: a new leader must see every runner
        the old one started before it decides a job lacks one (I5)."""
        self._loop_stop = asyncio.Event()
        for name, first in (
            ("janitor", self.janitor.cycle),
            ("reconciler", self.reconciler.catch_up_jobs),
        ):
            try:
                await asyncio.wait_for(first(), timeout=TAKEOVER_RECONCILE_S)
            except Exception as exc:  # the loop retries; provisioning stays idempotent
                log.warning(
                    "takeover step did not finish", step=name, error=f"{type(exc).__name__}: {exc}"
                )
        dsn = self.settings.database.dsn.get_secret_value()
        stop = self._loop_stop
        self._loop_tasks = [
            asyncio.create_task(loop.run(stop), name=loop.name) for loop in self.loops
        ]
        self._loop_tasks.append(
            asyncio.create_task(listen(dsn, self.scheduler.wake, stop), name="listener")
        )
        if self.settings.redis.enabled:  # without Redis each node reads the events itself
            self._loop_tasks.append(
                asyncio.create_task(self.live.publish(stop), name="live-publisher")
            )

    async def _stop_loops(self) -> None:
        self._loop_stop.set()
        tasks, self._loop_tasks = self._loop_tasks, []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=LOOP_STOP_GRACE_S)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.scheduler.cancel_in_flight()

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=15)
            except TimeoutError:
                task.cancel()
        await self.app.state.intake.close()
        if self.elector is not None:
            await self.elector.store.close()
        await self.github.aclose()
        await self.health_http.aclose()
        await self.peer_http.aclose()
        await self.cache.close()
        await self.db.close()
        log.info("node stopped", node=self.settings.node.id)
