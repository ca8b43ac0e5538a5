"""The reconciler: compare our view with GitHub's and repair what webhooks missed.

Three sweeps, each on its own so one failing does not stop the others:
1. jobs: queued and in-progress runs of every repository in scope; jobs we never heard of
   are inserted, states we missed are caught up (through the same state machine as intake,
   so nothing moves backwards); jobs we think open that GitHub no longer lists are fetched.
2. deliveries: failed webhook deliveries (status not OK) that never reached us are
   redelivered; GitHub would never retry them itself.
3. runners: registrations with our name prefix that no live runner row claims are removed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from runnerhub import metrics
from runnerhub.backends.base import RunnerBackend
from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.domain.jobs import JobFacts, Outcome
from runnerhub.domain.naming import is_ours
from runnerhub.domain.payloads import PayloadError, job_from_api
from runnerhub.domain.pools import Pool as MatchPool
from runnerhub.domain.pools import match
from runnerhub.domain.scope import Scope
from runnerhub.github.client import GitHubClient
from runnerhub.github.errors import GitHubError, RunnerBusy
from runnerhub.github.models import HookDelivery, HookTarget
from runnerhub.store import events
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store
from runnerhub.store.deliveries import known_guids
from runnerhub.store.jobs import load_for_update, lock_jobs, plan_writes
from runnerhub.store.listener import RECONCILE_CHANNEL

log = structlog.get_logger("runnerhub.reconciler")

MAX_REDELIVERIES_PER_SWEEP = 200
DELIVERY_OVERLAP = timedelta(minutes=2)


@dataclass
class SweepReport:
    jobs_seen: int = 0
    repairs: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def count(self, kind: str, n: int = 1) -> None:
        self.repairs[kind] = self.repairs.get(kind, 0) + n
        metrics.RECONCILER_REPAIRS.labels(kind).inc(n)


class Reconciler(ControlLoop):
    name = "reconciler"
    notify_channel = RECONCILE_CHANNEL  # "reconcile now", asked of any node

    def __init__(
        self, ctx: NodeContext, github: GitHubClient, backends: Mapping[str, RunnerBackend]
    ) -> None:
        super().__init__(ctx.settings.reconciler.interval_s)
        self.ctx = ctx
        self.github = github
        self.backends = backends
        s = ctx.settings
        self.node = s.node.id
        self.prefix = s.scheduler.runner_name_prefix
        self._pools = [MatchPool.of(p.name, p.labels, p.min_idle, p.max_runners) for p in s.pools]
        self._scope = Scope(s.github.repositories, s.github.organizations)
        self._deliveries_swept: datetime | None = None

    async def cycle(self) -> None:
        await self._sweeps(self._sweep_jobs, self._sweep_deliveries, self._sweep_runners)

    async def catch_up_jobs(self) -> None:
        """A new leader's first step before it provisions: learn every job GitHub has
        queued or running (the rest of the sweep follows in the loop)."""
        await self._sweeps(self._sweep_jobs)

    async def _sweeps(self, *sweeps: Callable[[SweepReport], Awaitable[None]]) -> None:
        report = SweepReport()
        for sweep in sweeps:
            try:
                await sweep(report)
            except GitHubError as exc:
                report.errors.append(f"{sweep.__name__}: {exc}")
        if report.repairs or report.errors:
            log.info(
                "reconciled",
                repairs=report.repairs,
                errors=report.errors,
                jobs_seen=report.jobs_seen,
            )
        if report.errors:
            raise RuntimeError("; ".join(report.errors))

    # -- 1. jobs -------------------------------------------------------------------------

    async def repositories(self) -> list[str]:
        s = self.ctx.settings.github
        repos = list(s.repositories)
        for org in s.organizations:
            repos.extend(r for r in await self.github.list_org_repos(org) if r not in repos)
        return repos

    async def _sweep_jobs(self, report: SweepReport) -> None:
        seen: dict[int, JobFacts] = {}
        for repo in await self.repositories():
            for status in ("queued", "in_progress"):
                for run in await self.github.list_runs(repo, status):
                    for job in await self.github.list_run_jobs(repo, int(run["id"])):
                        self._read(job, repo, seen)
        async with self.ctx.db.connection() as conn:
            open_jobs = await job_store.open_jobs(conn, quiet_for_s=5)
        for job_id, repo in open_jobs:
            if job_id in seen or not self._scope.covers(repo):
                continue
            fetched = await self.github.get_job(repo, job_id)
            if fetched is not None:
                self._read(fetched, repo, seen)
        report.jobs_seen += len(seen)
        for outcome in await self.apply(list(seen.values())):
            if outcome is Outcome.CREATED:
                report.count("job_inserted")
            elif outcome in (Outcome.ADVANCED, Outcome.UPDATED):
                report.count("job_caught_up")

    def _read(self, job: dict[str, object], repo: str, into: dict[int, JobFacts]) -> None:
        try:
            obs = job_from_api(job, repo)
        except PayloadError as exc:
            log.warning("GitHub returned a job we cannot read", repository=repo, error=str(exc))
            return
        into[obs.job_id] = obs

    async def apply(self, observations: list[JobFacts], batch: int = 200) -> list[Outcome]:
        """Apply what GitHub said through the same state machine as intake, a batch per
        transaction (a sweep can see hundreds of jobs)."""
        outcomes: list[Outcome] = []
        for i in range(0, len(observations), batch):
            chunk = [(o, match(o.labels, self._pools)) for o in observations[i : i + batch]]
            async with self.ctx.control_tx() as conn:
                await lock_jobs(conn, (o.job_id for o, _ in chunk))
                current = await load_for_update(conn, (o.job_id for o, _ in chunk))
                writes = plan_writes(current, chunk, "reconciler")
                await writes.execute(conn, self.node)
            outcomes += [t.outcome for t in writes.transitions]
        return outcomes

    # -- 2. deliveries ---------------------------------------------------------------------

    def hooks(self) -> list[HookTarget]:
        s = self.ctx.settings.github
        targets = [HookTarget.app()] if s.app_hook_deliveries else []
        return targets + [HookTarget.from_ref(h) for h in s.hooks]

    async def _sweep_deliveries(self, report: SweepReport) -> None:
        if not self.ctx.settings.reconciler.redeliver:
            return
        # The first sweep looks back as far as configured (GitHub keeps deliveries for about
        # three days); later ones only since the previous sweep began, with a margin for
        # deliveries GitHub records late: listing everything each time would spend the rate
        # limit on pages of old, healthy deliveries.
        started = datetime.now(UTC)
        lookback = timedelta(seconds=self.ctx.settings.reconciler.delivery_lookback_s)
        since = started - lookback
        if self._deliveries_swept is not None:
            since = max(since, self._deliveries_swept - DELIVERY_OVERLAP)
        budget = MAX_REDELIVERIES_PER_SWEEP
        for hook in self.hooks():
            deliveries = await self.github.list_deliveries(hook, since=since)
            failed = _failed_guids(deliveries)
            if not failed:
                continue
            async with self.ctx.db.connection() as conn:
                have = await known_guids(conn, failed)
            for guid, delivery_id in failed.items():
                if guid in have or budget <= 0:
                    continue
                self.ctx.ensure_may_act()
                await self.github.redeliver(hook, delivery_id)
                budget -= 1
                report.count("redelivered")
        if budget > 0:  # all handled: the next sweep may start from here
            self._deliveries_swept = started

    # -- 3. runners ------------------------------------------------------------------------

    async def _sweep_runners(self, report: SweepReport) -> None:
        scopes = {p.spare_scope for p in self.ctx.settings.pools if p.spare_scope}
        async with self.ctx.db.connection() as conn:
            scopes |= await runner_store.recent_scopes(conn, days=7)
        # GitHub first, our side second: a runner row is written before its registration,
        # so whatever GitHub lists now that is ours already has its row.
        registered = {scope: await self.github.list_runners(scope) for scope in sorted(scopes)}
        async with self.ctx.db.connection() as conn:
            known = {r.name for r in await runner_store.live(conn)}
        for backend in self.backends.values():
            known.update(b.name for b in await backend.list() if b.alive)
        for scope, runners in registered.items():
            for gh in runners:
                if not is_ours(self.prefix, gh.name) or gh.name in known or gh.busy:
                    continue
                self.ctx.ensure_may_act()
                try:
                    if await self.github.delete_runner(scope, gh.id):
                        report.count("registration_removed")
                        log.info("removed a registration nothing runs", runner=gh.name, scope=scope)
                        async with self.ctx.control_tx() as conn:
                            await events.append(
                                conn,
                                self.node,
                                "remediation.remove_registration",
                                f"runner:{gh.name}",
                                scope=scope,
                                github_runner_id=gh.id,
                                reason="registered with GitHub, but no runner of ours runs it",
                            )
                except RunnerBusy:
                    pass


def _failed_guids(deliveries: Iterable[HookDelivery]) -> dict[str, int]:
    """GUIDs that never got an OK answer, mapped to their newest attempt's id."""
    ok: set[str] = set()
    newest: dict[str, HookDelivery] = {}
    for d in deliveries:
        if d.ok:
            ok.add(d.guid)
        elif d.guid not in newest or d.delivered_at > newest[d.guid].delivered_at:
            newest[d.guid] = d
    return {guid: d.id for guid, d in newest.items() if guid not in ok}
