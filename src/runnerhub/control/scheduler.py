"""The scheduler: every queued job gets exactly one ephemeral runner, or a reason (I5, I6).

Each cycle takes a snapshot (queued jobs, live runners), asks the pure planner what each
pool needs (`domain.capacity.plan_pool`), and acts: reuse free runners, retire extras,
provision the rest. Provisioning runs in background tasks so one slow GitHub call does not
hold up the other pools; a finished provisioning wakes the loop again.

Provisioning one runner is idempotent by name: the runner row (the intent) is written first;
then GitHub's JIT config under that name; then the backend. A 409 from GitHub on the name
means an earlier attempt got that far: adopt what exists, never make a second runner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from runnerhub import metrics
from runnerhub.backends.base import BackendError, BackendRunner, RunnerBackend, RunnerSpec
from runnerhub.config import PoolSettings
from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.domain.backoff import retry_delay
from runnerhub.domain.capacity import LiveRunner, PoolSpec, QueuedJob, plan_pool
from runnerhub.domain.pools import Pool as MatchPool
from runnerhub.domain.pools import match
from runnerhub.domain.scope import job_scope
from runnerhub.github.client import GitHubClient
from runnerhub.github.errors import Conflict, GitHubError, RateLimited, RunnerBusy
from runnerhub.github.models import JitConfig
from runnerhub.store import events
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store
from runnerhub.store.jobs import QueuedJobRow
from runnerhub.store.runners import RunnerRow

log = structlog.get_logger("runnerhub.scheduler")


class Scheduler(ControlLoop):
    name = "scheduler"
    notify_channel = job_store.NOTIFY_CHANNEL  # intake's queued job, an operator's retry
    cycle_deadline_s = 30.0  # and each runner's provisioning too: see _guarded

    def __init__(
        self, ctx: NodeContext, github: GitHubClient, backends: Mapping[str, RunnerBackend]
    ) -> None:
        # Cycles coalesce under a burst of deliveries; a queued job still waits well under 1 s.
        super().__init__(ctx.settings.scheduler.tick_s, min_gap_s=0.2)
        self.ctx = ctx
        self.github = github
        self.backends = backends
        s = ctx.settings
        self.prefix = s.scheduler.runner_name_prefix
        self.node = s.node.id
        self.pools = {p.name: p for p in s.pools}
        self._match_pools = [
            MatchPool.of(p.name, p.labels, p.min_idle, p.max_runners) for p in s.pools
        ]
        self.orgs = {o.lower() for o in s.github.organizations}
        self._slots = asyncio.Semaphore(s.scheduler.max_parallel_provisions)
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    # -- the cycle -----------------------------------------------------------------------

    async def cycle(self) -> None:
        async with self.ctx.db.connection() as conn:
            jobs = await job_store.queued(conn)
            live = await runner_store.live(conn)
        await self._rematch(jobs)
        by_pool: dict[str, list[RunnerRow]] = {name: [] for name in self.pools}
        for r in live:
            by_pool.setdefault(r.pool, []).append(r)
        reasons: dict[int, str] = {}
        for name, pool in self.pools.items():
            pool_jobs = [j for j in jobs if j.pool == name]
            reasons.update(await self._serve_pool(pool, pool_jobs, by_pool.get(name, [])))
        await self._resume_stalled(live)
        await self._update_reasons(jobs, reasons)

    async def _rematch(self, jobs: list[QueuedJobRow]) -> None:
        """Pools change with the configuration; re-match queued jobs no pool had taken."""
        for i, j in enumerate(jobs):
            if j.pool is not None and j.pool in self.pools:
                continue
            m = match(j.labels, self._match_pools)
            if m.pool != j.pool:
                async with self.ctx.control_tx() as conn:
                    await job_store.set_pool(conn, j.id, m.pool, m.reason)
                jobs[i] = replace(j, pool=m.pool, waiting_reason=m.reason)

    async def _serve_pool(
        self, pool: PoolSettings, jobs: list[QueuedJobRow], live: list[RunnerRow]
    ) -> dict[int, str]:
        spec = PoolSpec(pool.name, pool.min_idle, pool.max_runners, pool.spare_scope)
        queued = [
            QueuedJob(
                j.id,
                j.run_attempt,
                j.repository,
                job_scope(j.repository, self.orgs),
                j.next_generation,
            )
            for j in jobs
        ]
        runners = [
            LiveRunner(r.name, r.scope, r.job_id, r.state == "busy", r.created_at) for r in live
        ]
        plan = plan_pool(spec, queued, runners, self.prefix)
        if plan.spares_wanted:  # name the spares: serials only when some are needed
            async with self.ctx.db.connection() as conn:
                serials = await runner_store.spare_serials(conn, plan.spares_wanted)
            plan = plan_pool(spec, queued, runners, self.prefix, serials)
        metrics.POOL_DESIRED.labels(pool.name).set(plan.desired)

        reasons = dict(plan.waiting)
        for a in plan.assigns:
            async with self.ctx.control_tx() as conn:
                await runner_store.assign(conn, a.runner, a.job_id, self.node)
            reasons[a.job_id] = f"runner {a.runner} (reused) is waiting for GitHub to hand it a job"
        for retire in plan.retires:
            if retire.runner not in self._in_flight:
                row = next(r for r in live if r.name == retire.runner)
                self._start(retire.runner, self._retire(pool, row))
        for p in plan.provisions:
            async with self.ctx.control_tx() as conn:
                created = await runner_store.insert_requested(
                    conn,
                    name=p.name,
                    pool=pool.name,
                    scope=p.scope,
                    labels=pool.labels,
                    job_id=p.job_id,
                    generation=p.generation,
                    backend=pool.backend,
                    node=self.node,
                )
                intent = await runner_store.get(conn, p.name)
                if created and p.job_id is not None and p.generation > 0:
                    # An earlier runner for this job exited (or was stopped) without
                    # taking it: the job is served again, by a runner of a new name.
                    await events.append(
                        conn,
                        self.node,
                        "remediation.requeue_job",
                        f"job:{p.job_id}",
                        runner=p.name,
                        generation=p.generation,
                        reason="its previous runner is gone without having taken it",
                    )
            if intent is not None and intent.state == "requested":
                self._start(p.name, self._provision(pool, intent))
            if p.job_id is not None:
                reasons[p.job_id] = f"provisioning runner {p.name}"
        for r in live:  # jobs whose runner is on its way or failing say so
            if r.job_id is not None and r.job_id not in reasons:
                reasons[r.job_id] = self._runner_reason(r)
        return reasons

    def _runner_reason(self, r: RunnerRow) -> str:
        if r.last_error and r.state in ("requested", "registered"):
            when = (
                r.next_attempt_at.astimezone(UTC).strftime("%H:%M:%S")
                if r.next_attempt_at
                else "soon"
            )
            return (
                f"provisioning runner {r.name} failed (attempt {r.attempts}): "
                f"{r.last_error}; next retry at {when} UTC"
            )
        if r.state in ("requested", "registered"):
            return f"provisioning runner {r.name}"
        return f"runner {r.name} is waiting for GitHub to hand it a job"

    async def _resume_stalled(self, live: list[RunnerRow]) -> None:
        """Retry runners whose provisioning failed or was cut short (a crash mid-way)."""
        now = datetime.now(UTC)
        for r in live:
            if r.state not in ("requested", "registered") or r.name in self._in_flight:
                continue
            if r.next_attempt_at is not None and r.next_attempt_at > now:
                self._wake_at(r.next_attempt_at)
                continue
            pool = self.pools.get(r.pool)
            if pool is not None:
                self._start(r.name, self._provision(pool, r))

    async def _update_reasons(self, jobs: list[QueuedJobRow], reasons: dict[int, str]) -> None:
        changed = {
            j.id: reasons[j.id]
            for j in jobs
            if j.id in reasons and reasons[j.id] != j.waiting_reason
        }
        if changed:
            async with self.ctx.control_tx() as conn:
                await job_store.set_waiting_reasons(conn, changed)

    # -- background work -------------------------------------------------------------------

    def _start(self, name: str, work: Any) -> None:
        task = asyncio.ensure_future(self._guarded(name, work))
        self._in_flight[name] = task

    async def _guarded(self, name: str, work: Any) -> None:
        try:
            async with self._slots:
                # A hung database must not hold a provisioning slot for ever.
                await asyncio.wait_for(work, self.cycle_deadline_s)
        except Exception as exc:  # log and let the next cycle retry
            log.error("runner work failed", runner=name, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._in_flight.pop(name, None)
            self.wake()

    def _wake_at(self, when: datetime) -> None:
        delay = (when - datetime.now(UTC)).total_seconds()
        if 0 < delay < self.interval_s:
            asyncio.get_running_loop().call_later(delay, self.wake)

    async def cancel_in_flight(self) -> None:
        """Stop provisioning under way (this node stopped leading). Each step is idempotent
        by runner name, so whatever a new leader finds half done it completes or adopts."""
        tasks = list(self._in_flight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _backend_runner(self, backend: RunnerBackend, name: str) -> BackendRunner | None:
        """What the backend knows under `name`, running or already exited."""
        return next((b for b in await backend.list() if b.name == name), None)

    async def _provision(self, pool: PoolSettings, snapshot: RunnerRow) -> None:
        # The snapshot may be stale: the provisioning it saw unfinished may have finished
        # (and its runner even exited) since. Only an unfinished one is worked on.
        async with self.ctx.db.connection() as conn:
            row = await runner_store.get(conn, snapshot.name)
        if row is None or row.state not in ("requested", "registered"):
            return
        backend = self.backends[pool.backend]
        stage = "github"
        registered = False
        try:
            existing = await self._backend_runner(backend, row.name)
            if existing is not None and not existing.alive:
                # An earlier attempt started it and it has already run and exited, but the
                # database never heard (it was failing over). Its name is spent: asking
                # GitHub again would start a second runner under it. The janitor cleans it
                # up; the job, if still queued, gets the next generation.
                async with self.ctx.control_tx() as conn:
                    await runner_store.set_state(
                        conn,
                        row.name,
                        "exited",
                        self.node,
                        expect=("requested", "registered"),
                        backend_ref=existing.ref,
                    )
                log.info("runner already exited before it was recorded", runner=row.name)
                return
            if existing is not None:  # an earlier attempt started it: adopt
                async with self.ctx.control_tx() as conn:
                    await runner_store.set_state(
                        conn,
                        row.name,
                        "running",
                        self.node,
                        backend_ref=existing.ref,
                        last_error=None,
                    )
                log.info("runner adopted from the backend", runner=row.name)
                return
            self.ctx.ensure_may_act()
            jit = await self._jit_config(pool, row)
            if jit is None:
                return
            registered = True
            async with self.ctx.control_tx() as conn:
                await runner_store.set_state(
                    conn, row.name, "registered", self.node, github_runner_id=jit.runner.id
                )
            stage = "backend"
            self.ctx.ensure_may_act()
            ref = await backend.provision(
                RunnerSpec(
                    row.name,
                    pool.name,
                    tuple(pool.labels),
                    row.job_id,
                    jit.encoded_jit_config,
                    attempt=row.attempts + 1,
                    epoch=self.ctx.leadership.epoch,
                )
            )
            async with self.ctx.control_tx() as conn:
                await runner_store.set_state(
                    conn, row.name, "running", self.node, backend_ref=ref, last_error=None
                )
                queued_at = await job_store.queued_since(conn, row.job_id)
            if queued_at is not None:
                latency = (datetime.now(UTC) - queued_at).total_seconds()
                metrics.PROVISION_LATENCY.observe(max(0.0, latency))
            log.info("runner started", runner=row.name, pool=pool.name, job=row.job_id)
        except (GitHubError, BackendError) as exc:
            metrics.PROVISION_FAILURES.labels(stage).inc()
            if registered:
                await self._unregister(row)
            await self._failed(row, stage, exc)

    async def _jit_config(self, pool: PoolSettings, row: RunnerRow) -> JitConfig | None:
        """JIT config under the runner's name; on 409 adopt or clear the stale name."""
        for _ in range(2):
            try:
                return await self.github.generate_jitconfig(
                    row.scope, row.name, list(pool.labels), pool.runner_group_id
                )
            except Conflict:
                gh = await self.github.find_runner(row.scope, row.name)
                if gh is None:
                    continue  # gone in between: ask again
                if gh.busy:
                    # Runs a job somewhere we cannot see: adopt it as it is.
                    async with self.ctx.control_tx() as conn:
                        await runner_store.set_state(
                            conn, row.name, "busy", self.node, github_runner_id=gh.id
                        )
                    log.warning("runner name taken by a busy runner; adopted", runner=row.name)
                    return None
                # Registered by an attempt that never started it (its JIT config is lost):
                # remove that registration and register the same name again: still one runner.
                log.info("clearing an unstarted registration of the same name", runner=row.name)
                await self.github.delete_runner(row.scope, gh.id)
                async with self.ctx.control_tx() as conn:
                    await events.append(
                        conn,
                        self.node,
                        "runner.registration_replaced",
                        f"runner:{row.name}",
                        github_runner_id=gh.id,
                    )
        raise Conflict(f"runner name {row.name} is still taken after clearing it", status=409)

    async def _unregister(self, row: RunnerRow) -> None:
        try:
            gh = await self.github.find_runner(row.scope, row.name)
            if gh is not None:
                await self.github.delete_runner(row.scope, gh.id)
        except GitHubError as exc:  # the janitor/reconciler will remove it later
            log.warning("could not remove registration", runner=row.name, error=str(exc))

    async def _failed(self, row: RunnerRow, stage: str, exc: Exception) -> None:
        attempt = row.attempts + 1
        s = self.ctx.settings.scheduler
        delay = retry_delay(attempt, s.retry_base_s, s.retry_max_s)
        if isinstance(exc, RateLimited):
            delay = max(delay, exc.retry_at - time.monotonic())
        at = datetime.now(UTC) + timedelta(seconds=delay)
        error = f"{stage}: {exc}"
        async with self.ctx.control_tx() as conn:
            await runner_store.set_state(
                conn, row.name, "requested", self.node, expect=("requested", "registered")
            )
            await runner_store.record_failure(conn, row.name, error, at, self.node)
        log.warning(
            "provisioning failed; will retry",
            runner=row.name,
            attempt=attempt,
            error=error,
            retry_in_s=round(delay, 2),
        )
        self._wake_at(at)

    async def _retire(self, pool: PoolSettings, row: RunnerRow) -> None:
        """Remove a spare: its registration first (GitHub refuses if it just took a job)."""
        self.ctx.ensure_may_act()
        if row.github_runner_id is not None:
            try:
                await self.github.delete_runner(row.scope, row.github_runner_id)
            except RunnerBusy:
                return  # it took a job after all; it will exit when done
        await self.backends[pool.backend].terminate(row.name)
        async with self.ctx.control_tx() as conn:
            await runner_store.set_state(
                conn, row.name, "removed", self.node, expect=runner_store.LIVE_STATES
            )
        log.info("spare runner retired", runner=row.name, pool=pool.name)
