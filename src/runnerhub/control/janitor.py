"""The janitor: reap runners that exited, remove their leftover registrations, stop orphans.

An ephemeral runner exits after its one job and GitHub deletes its registration; one that
died before taking a job leaves a registration behind, which we delete. A process the
backend runs that no live runner row claims is an orphan and is stopped. A queued job whose
runner exited without taking it needs nothing here: it has no live runner any more, so the
scheduler provisions the next generation for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from runnerhub.backends.base import BackendRunner, RunnerBackend
from runnerhub.context import NodeContext
from runnerhub.control.loop import ControlLoop
from runnerhub.github.client import GitHubClient
from runnerhub.github.errors import GitHubError, RunnerBusy
from runnerhub.store import runners as runner_store
from runnerhub.store.runners import RunnerRow

log = structlog.get_logger("runnerhub.janitor")


class Janitor(ControlLoop):
    name = "janitor"
    cycle_deadline_s = 30.0

    def __init__(
        self, ctx: NodeContext, github: GitHubClient, backends: Mapping[str, RunnerBackend]
    ) -> None:
        super().__init__(ctx.settings.janitor.interval_s)
        self.ctx = ctx
        self.github = github
        self.backends = backends
        self.node = ctx.settings.node.id

    async def cycle(self) -> None:
        seen: dict[str, tuple[RunnerBackend, BackendRunner]] = {}
        for backend in self.backends.values():
            for b in await backend.list():
                seen[b.name] = (backend, b)
        async with self.ctx.db.connection() as conn:
            live = {r.name: r for r in await runner_store.live(conn)}
            exited = await runner_store.in_state(conn, "exited", limit=100)
        for row in live.values():
            if row.state not in ("running", "busy"):
                continue  # still being provisioned: the scheduler owns it
            found = seen.get(row.name)
            if found is None and row.state == "busy" and self._unseen(row):
                continue  # its job runs on a runner host that does not answer: let it be
            if found is None or not found[1].alive:
                # Gone — or, unseen on a host that does not answer, it never took its job:
                # its registration goes (the fence), and its job gets a runner elsewhere.
                await self._mark_exited(row, found[1] if found else None)
                exited.append(row)
        pending = {row.name for row in exited if not await self._clean_up(row)}
        for name, (backend, b) in seen.items():
            if name in live or name in pending:
                continue  # pending: GitHub still has it (busy, or did not answer)
            if b.alive:
                self.ctx.ensure_may_act()
                log.warning("stopping a runner process no live runner claims", runner=name)
                await backend.terminate(name)
            else:
                await backend.forget(name)

    async def _mark_exited(self, row: RunnerRow, b: BackendRunner | None) -> None:
        failed = b is not None and b.exit_code not in (0, None)
        async with self.ctx.control_tx() as conn:
            await runner_store.set_state(
                conn,
                row.name,
                "exited",
                self.node,
                expect=("running", "busy"),
                last_error=f"exited with code {b.exit_code}" if failed and b else None,
            )
        log.info("runner exited", runner=row.name, was_busy=row.state == "busy")

    def _unseen(self, row: RunnerRow) -> bool:
        backend = self.backends.get(row.backend)
        return backend is not None and backend.unreachable(row.backend_ref)

    async def _clean_up(self, row: RunnerRow) -> bool:
        """Remove what is left of an exited runner: its registration, the backend record.
        False while GitHub still has it (it says the runner is busy)."""
        if not await self._remove_registration(row):
            return False
        async with self.ctx.control_tx() as conn:
            await runner_store.set_state(conn, row.name, "removed", self.node, expect=("exited",))
        backend = self.backends.get(row.backend)
        if backend is not None:
            await backend.forget(row.name)
        return True

    async def _remove_registration(self, row: RunnerRow) -> bool:
        """True once GitHub no longer has the runner (deleted now or already gone).

        An ephemeral runner that took a job is deregistered by GitHub when that job ends:
        asking again would only spend rate limit (the reconciler's sweep removes any that
        linger). Only a runner that never took a job leaves its registration behind."""
        if row.github_runner_id is None or row.busy_at is not None:
            return True
        self.ctx.ensure_may_act()
        try:
            await self.github.delete_runner(row.scope, row.github_runner_id)
            return True
        except RunnerBusy:
            return False  # GitHub still thinks it runs a job; it times it out, we retry
        except GitHubError as exc:
            log.warning(
                "could not remove a runner registration; will retry",
                runner=row.name,
                error=str(exc),
            )
            return False
