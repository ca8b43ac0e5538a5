"""Remediation: the leader fixes common failures by itself.

Each action is switchable off (`remediation.*`), spends from its own budget
(`max_actions_per_hour`: a fault that keeps recurring is reported, not papered over without
end), and is recorded in the events table (`remediation.<action>`) and counted
(`runnerhub_remediations_total`).

- **Stuck runners**: a runner that started for a job but has not taken it after
  `janitor.idle_spare_ttl_s` while the job is still queued (it never registered, or GitHub
  gave the job elsewhere and it waits forever) is stopped; the scheduler then provisions
  the next generation for the job, under a new name.
- **Zombie runners**: a runner still alive `zombie_grace_s` after its job completed is
  stopped (an ephemeral runner exits after its one job; one that does not holds capacity).
- **Logs**: when the filesystem of the runner logs has less than
  `prune_below_free_fraction` free, logs of runners that are gone are deleted, oldest
  first, until it has enough again (logs of live runners are kept).

- **A degraded leader** (`StepDownWhenDegraded`): one that has not reached the database
  for `step_down_after_s` while a follower's /health says it does hands leadership to that
  follower (the handoff of `runnerhub leader handoff`).

Elsewhere, and recorded as `remediation.*` events too: a job whose runner died before
starting it gets a new runner from the scheduler (`remediation.requeue_job`); registrations
no runner uses are removed by the reconciler's sweep (`remediation.remove_registration`);
a stalled PostgreSQL replica is rebuilt by `control.reinit`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog
from prometheus_client import Counter

from runnerhub.backends.base import RunnerBackend
from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.domain.budget import ActionBudget
from runnerhub.predict.signals import free_bytes, total_bytes
from runnerhub.store import events
from runnerhub.store import jobs as job_store
from runnerhub.store import runners as runner_store
from runnerhub.store.runners import RunnerRow

log = structlog.get_logger("runnerhub.remediation")

REMEDIATIONS = Counter(
    "runnerhub_remediations_total", "Automatic fixes the leader made, by action.", ["action"]
)
REMEDIATIONS_SKIPPED = Counter(
    "runnerhub_remediations_skipped_total",
    "Automatic fixes not made because the action's hourly budget was spent.",
    ["action"],
)


class Remediation(ControlLoop):
    name = "remediation"

    def __init__(
        self,
        ctx: NodeContext,
        backends: Mapping[str, RunnerBackend],
        log_dirs: Sequence[Path] = (),
    ) -> None:
        self.settings = ctx.settings.remediation
        super().__init__(self.settings.interval_s)
        self.ctx = ctx
        self.backends = backends
        self.log_dirs = list(log_dirs)
        self.node = ctx.settings.node.id
        self.budgets = {
            action: ActionBudget(self.settings.max_actions_per_hour)
            for action in ("replace_stuck_runner", "stop_zombie_runner", "prune_logs")
        }

    async def cycle(self) -> None:
        if not self.settings.enabled:
            return
        async with self.ctx.db.connection() as conn:
            live = await runner_store.live(conn)
            jobs = await job_store.progress(conn, (r.job_id or r.provisioned_for for r in live))
        now = datetime.now(UTC)
        if self.settings.replace_stuck_runners:
            limit = self.ctx.settings.janitor.idle_spare_ttl_s
            for r in live:
                job = jobs.get(r.provisioned_for or -1)
                if (
                    r.state == "running"
                    and r.busy_at is None
                    and job is not None
                    and job.state == "queued"
                    and (now - r.created_at).total_seconds() > limit
                ):
                    await self._stop(
                        "replace_stuck_runner",
                        r,
                        f"replaced: had not taken job {r.provisioned_for} after {limit:g} s",
                    )
        if self.settings.stop_zombie_runners:
            grace = self.settings.zombie_grace_s
            for r in live:
                job = jobs.get(r.job_id or r.provisioned_for or -1)
                done_at = job.completed_at if job else None
                if (
                    r.state in ("running", "busy")
                    and job is not None
                    and job.state == "completed"
                    and done_at is not None
                    and (now - done_at).total_seconds() > grace
                ):
                    await self._stop(
                        "stop_zombie_runner",
                        r,
                        f"stopped: still alive {grace:g} s after job {job.id} completed",
                    )
        if self.settings.prune_logs:
            await self._prune_logs({r.name for r in live})

    async def _stop(self, action: str, row: RunnerRow, why: str) -> None:
        if not self.budgets[action].take(time.monotonic()):
            REMEDIATIONS_SKIPPED.labels(action).inc()
            log.warning("remediation budget spent; not acting", action=action, runner=row.name)
            return
        backend = self.backends.get(row.backend)
        self.ctx.ensure_may_act()
        if backend is not None:
            await backend.terminate(row.name)
        async with self.ctx.control_tx() as conn:
            changed = await runner_store.set_state(
                conn,
                row.name,
                "exited",
                self.node,
                expect=(row.state,),
                last_error=why,
            )
            if changed:
                await events.append(
                    conn, self.node, f"remediation.{action}", f"runner:{row.name}", reason=why
                )
        REMEDIATIONS.labels(action).inc()
        log.warning("remediation", action=action, runner=row.name, reason=why)

    async def _prune_logs(self, live: set[str]) -> None:
        for directory in self.log_dirs:
            total = total_bytes(directory)
            free = free_bytes(directory)
            if not total or free is None:
                continue
            want = total * self.settings.prune_below_free_fraction
            if free >= want:
                continue
            if not self.budgets["prune_logs"].take(time.monotonic()):
                REMEDIATIONS_SKIPPED.labels("prune_logs").inc()
                continue
            removed, freed = _prune(directory, live, want - free)
            if not removed:
                continue
            REMEDIATIONS.labels("prune_logs").inc()
            log.warning("remediation", action="prune_logs", directory=str(directory), files=removed)
            async with self.ctx.control_tx() as conn:
                await events.append(
                    conn,
                    self.node,
                    "remediation.prune_logs",
                    f"dir:{directory}",
                    files=removed,
                    bytes=freed,
                    free_before=free,
                )


def _prune(directory: Path, live: set[str], need: float) -> tuple[int, int]:
    """Delete logs of runners that are gone, oldest first, until `need` bytes are freed."""
    candidates = []
    with os.scandir(directory) as entries:
        for e in entries:
            if e.is_file() and e.name.endswith(".log") and e.name[:-4] not in live:
                st = e.stat()
                candidates.append((st.st_mtime, e.path, st.st_size))
    removed = freed = 0
    for _, path, size in sorted(candidates):
        if freed >= need:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed += 1
        freed += size
    return removed, freed


# Checks in a row (a second apart) that must see this node failing and the same follower
# fine before the handoff.
CONFIRMATIONS = 3


class StepDownWhenDegraded(ControlLoop):
    """A leader whose own database access has failed for `step_down_after_s` hands over to
    a follower whose /health says its database is fine (a network fault between this node
    and PostgreSQL, not an outage of PostgreSQL: then nobody could do better, and nobody is
    asked). Runs every second on the leader; needs etcd, not the database."""

    name = "stepdown"

    def __init__(self, ctx: NodeContext, http: httpx.AsyncClient) -> None:
        super().__init__(interval_s=1.0)
        self.ctx = ctx
        self.http = http
        self.settings = ctx.settings.remediation
        self.budget = ActionBudget(self.settings.max_actions_per_hour)
        self._failing_since: float | None = None
        self._candidate: str | None = None  # the healthy follower seen, and how many times
        self._streak = 0

    async def cycle(self) -> None:
        health = self.ctx.health
        if not (self.settings.enabled and self.settings.step_down_when_degraded) or not health:
            return
        result = health.result("database")
        now = time.monotonic()
        if result is None or result.status != "failing":
            self._failing_since = None
            self._candidate, self._streak = None, 0
            return
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since < self.settings.step_down_after_s:
            return
        target = await self._healthy_follower()
        if target is None or target != self._candidate:
            # Nobody reaches the database either (PostgreSQL itself is down), or a follower
            # just did: after a PostgreSQL failover the nodes reconnect a second or two
            # apart, and that is no reason to change leaders. Wait for it to hold.
            self._candidate, self._streak = target, 1 if target else 0
            return
        self._streak += 1
        if self._streak < CONFIRMATIONS:
            return
        if not self.budget.take(now):
            REMEDIATIONS_SKIPPED.labels("step_down").inc()
            return
        log.warning(
            "remediation",
            action="step_down",
            to=target,
            reason=f"database unreachable from here for {now - self._failing_since:.0f} s",
        )
        await self.ctx.leadership.request_handoff(target)
        REMEDIATIONS.labels("step_down").inc()
        self._failing_since = None
        self._candidate, self._streak = None, 0

    async def _healthy_follower(self) -> str | None:
        for node, url in sorted(self.ctx.state.peers.items()):
            try:
                r = await self.http.get(f"{url}/health", timeout=0.5)
                checks = r.json()["checks"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue
            if checks.get("database", {}).get("status") == "ok":
                return node
        return None
