"""The simulated GitHub's state and rules: repos, runs, jobs, runners and deliveries.

Single-threaded asyncio: every method runs on the event loop without awaiting between a
check and the change it guards, so assigning a job to a runner is atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.errors import ApiError, not_found
from runnerhub.dev.sim.model import Delivery, Job, Repo, Run, Runner
from runnerhub.dev.sim.shapes import group_name

MAX_DELIVERIES = 20_000  # oldest records are forgotten past this, as GitHub ages them out
SNAPSHOT_VERSION = 1

# Id bases keep the kinds apart at a glance (a job id never looks like a run id).
_ID_BASES = {
    "org": 100_000,
    "repo": 500_000,
    "run": 1_000_000,
    "job": 20_000_000,
    "runner": 0,
    "delivery": 90_000_000_000,
    "label": 0,
}


class SimState:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.counters = dict(_ID_BASES)
        self.orgs: dict[str, tuple[str, int]] = {}  # lower login -> (login, id)
        self.repos: dict[str, Repo] = {}  # lower full name -> repo
        self.run_numbers: dict[str, int] = {}
        self.runs: dict[int, Run] = {}
        self.jobs: dict[int, Job] = {}
        self.queued: dict[int, None] = {}  # queued job ids, oldest first
        self.runners: dict[int, Runner] = {}
        self.deliveries: dict[int, Delivery] = {}  # oldest first
        # Each delivery's JSON, encoded once: records never change, and re-encoding
        # thousands of bodies on every debounced snapshot would stall the event loop.
        self._delivery_json: dict[int, bytes] = {}
        self.labels: dict[str, int] = {}
        self.api_calls: dict[str, dict[str, int]] = {}
        self.jit_issued = 0
        self.hook_config_changes: list[dict[str, Any]] = []  # url, at: each PATCH of it
        self.api_url = "https://api.github.com"  # replaced by the base URL callers use
        self.closing = False
        # Wiring set by the app: job events go to the webhook sender, changes to disk.
        self.on_job_event: Callable[[Job, str], None] = lambda job, action: None
        self.on_change: Callable[[], None] = lambda: None
        self._wakeup = asyncio.Event()
        self._add_configured()

    def _add_configured(self) -> None:
        for login in self.config.organizations:
            if login.lower() not in self.orgs:
                self.orgs[login.lower()] = (login, self._next("org"))
        for full_name in self.config.repositories:
            owner, name = full_name.split("/")
            self._add_repo(owner, name)

    def _next(self, kind: str) -> int:
        self.counters[kind] += 1
        return self.counters[kind]

    def _add_repo(self, owner: str, name: str) -> Repo:
        key = f"{owner}/{name}".lower()
        if key not in self.repos:
            self.repos[key] = Repo(id=self._next("repo"), owner=owner, name=name)
        return self.repos[key]

    def _changed(self) -> None:
        self.on_change()

    def _wake(self) -> None:
        """Wake every long-polling acquire so it looks again."""
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    # -- lookups --------------------------------------------------------------------

    def org(self, login: str) -> tuple[str, int]:
        found = self.orgs.get(login.lower())
        if found is None:
            raise not_found()
        return found

    def org_id_of(self, owner: str) -> int | None:
        found = self.orgs.get(owner.lower())
        return None if found is None else found[1]

    def repo(self, owner: str, name: str) -> Repo:
        """A known repo; any repo name under a configured organization exists."""
        found = self.repos.get(f"{owner}/{name}".lower())
        if found is not None:
            return found
        if owner.lower() in self.orgs:
            repo = self._add_repo(self.orgs[owner.lower()][0], name)
            self._changed()
            return repo
        raise not_found()

    def repo_by_name(self, full_name: str) -> Repo:
        owner, _, name = full_name.partition("/")
        if not owner or not name:
            raise not_found()
        return self.repo(owner, name)

    def label_id(self, name: str) -> int:
        key = name.lower()
        if key not in self.labels:
            self.labels[key] = self._next("label")
        return self.labels[key]

    def job(self, job_id: int) -> Job:
        found = self.jobs.get(job_id)
        if found is None:
            raise not_found()
        return found

    # -- jobs -----------------------------------------------------------------------

    def create_run(
        self,
        repo: Repo,
        *,
        labels: list[str],
        count: int,
        duration_s: float,
        conclusion: str,
        workflow_name: str,
        job_name: str,
    ) -> list[Job]:
        now = time.time()
        number = self.run_numbers.get(repo.full_name, 0) + 1
        self.run_numbers[repo.full_name] = number
        run = Run(
            id=self._next("run"),
            repository=repo.full_name,
            workflow_name=workflow_name,
            run_number=number,
            head_sha=secrets.token_hex(20),
            head_branch="main",
            created_at=now,
            job_ids=[],
        )
        self.runs[run.id] = run
        jobs = []
        for index in range(count):
            job = Job(
                id=self._next("job"),
                run_id=run.id,
                repository=repo.full_name,
                name=job_name if count == 1 else f"{job_name} ({index + 1})",
                workflow_name=workflow_name,
                labels=list(labels),
                duration_s=duration_s,
                planned_conclusion=conclusion,
                head_sha=run.head_sha,
                head_branch=run.head_branch,
                created_at=now,
                updated_at=now,
            )
            self.jobs[job.id] = job
            self.queued[job.id] = None
            run.job_ids.append(job.id)
            jobs.append(job)
        for job in jobs:
            self.on_job_event(job, "queued")
        self._wake()
        self._changed()
        return jobs

    def _finish(self, job: Job, conclusion: str) -> None:
        now = time.time()
        job.status = "completed"
        job.conclusion = conclusion
        job.completed_at = now
        job.updated_at = now
        self.queued.pop(job.id, None)
        self.on_job_event(job, "completed")
        self._changed()

    def cancel(self, job_id: int) -> Job:
        job = self.job(job_id)
        if job.status == "completed":
            raise ApiError(409, "Cannot cancel a job that is completed.")
        # A runner that holds it learns of it on its next heartbeat.
        self._finish(job, "cancelled")
        return job

    # -- runners --------------------------------------------------------------------

    def register_runner(
        self, scope: str, name: str, labels: list[str], group_id: int, work_folder: str
    ) -> Runner:
        for other in self.runners.values():
            if not other.deleted and other.scope == scope and other.name.lower() == name.lower():
                raise ApiError(
                    409, f"Already exists - A runner with the name {name} already exists."
                )
        runner = Runner(
            id=self._next("runner"),
            name=name,
            scope=scope,
            labels=list(labels),
            runner_group_id=group_id,
            work_folder=work_folder,
            token=secrets.token_urlsafe(32),
            created_at=time.time(),
            last_contact=time.monotonic(),
        )
        self.runners[runner.id] = runner
        self.jit_issued += 1
        self._changed()
        return runner

    def runners_in(self, scope: str) -> list[Runner]:
        return [r for r in self.runners.values() if r.scope == scope and not r.deleted]

    def runner_in(self, scope: str, runner_id: int) -> Runner:
        runner = self.runners.get(runner_id)
        if runner is None or runner.deleted or runner.scope != scope:
            raise not_found()
        return runner

    def delete_runner(self, runner: Runner) -> None:
        if runner.busy:
            raise ApiError(422, f'Bad request - Runner "{runner.name}" is still running a job')
        self._remove(runner)

    def _remove(self, runner: Runner) -> None:
        runner.deleted = True
        runner.deleted_at = time.time()
        runner.busy = False
        runner.status = "offline"
        self._wake()  # a long poll by this runner must notice now
        self._changed()

    # -- runner protocol ------------------------------------------------------------

    def protocol_runner(self, runner_id: int, token: str | None) -> Runner:
        runner = self.runners.get(runner_id)
        if runner is None:
            raise not_found()
        if token is None or not secrets.compare_digest(runner.token, token):
            raise ApiError(401)
        if runner.deleted:
            raise ApiError(410, "Runner registration was deleted")
        runner.last_contact = time.monotonic()
        return runner

    def open_session(self, runner: Runner) -> None:
        if runner.session:
            raise ApiError(409, "A session for this runner already exists.")
        runner.session = True
        runner.status = "online"
        self._changed()

    def _pick(self, runner: Runner) -> Job | None:
        """GitHub's rule: the oldest queued job this runner's labels and scope admit."""
        for job_id in self.queued:
            job = self.jobs[job_id]
            if runner.serves(job.repository) and runner.fits(job.labels):
                return job
        return None

    def _assign(self, job: Job, runner: Runner) -> None:
        now = time.time()
        del self.queued[job.id]
        job.status = "in_progress"
        job.started_at = now
        job.updated_at = now
        job.runner_id = runner.id
        job.runner_name = runner.name
        job.runner_group_id = runner.runner_group_id
        job.runner_group_name = group_name(runner.runner_group_id)
        job.executions.append(runner.name)
        runner.busy = True
        runner.job_id = job.id
        runner.status = "online"
        self.on_job_event(job, "in_progress")
        self._changed()

    async def acquire(self, runner: Runner, wait_s: float) -> Job | None:
        """Long poll: a job for this runner, or None when none came within `wait_s`."""
        if runner.busy or runner.job_id is not None:
            raise ApiError(409, "This runner has already been assigned a job.")
        runner.status = "online"
        runner.polling += 1
        deadline = time.monotonic() + wait_s
        try:
            while True:
                if runner.deleted:
                    raise ApiError(410, "Runner registration was deleted")
                job = self._pick(runner)
                if job is not None:
                    self._assign(job, runner)
                    return job
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closing:
                    return None
                wakeup = self._wakeup
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), remaining)
        finally:
            runner.polling -= 1
            runner.last_contact = time.monotonic()

    def heartbeat(self, runner: Runner) -> dict[str, Any]:
        job = self.jobs.get(runner.job_id) if runner.job_id is not None else None
        cancelled = job is not None and job.status == "completed"
        return {"job_id": runner.job_id, "cancelled": cancelled}

    def complete(self, runner: Runner, job_id: int, conclusion: str) -> None:
        """The runner's report; an ephemeral runner's registration goes with its job."""
        if runner.job_id != job_id:
            raise ApiError(409, f"Job {job_id} is not assigned to runner {runner.name}.")
        job = self.job(job_id)
        if job.status != "completed":  # already cancelled: the first word stands
            self._finish(job, conclusion)
        self._remove(runner)

    def reap(self) -> None:
        """Fail the jobs of runners lost mid-job; mark silent idle runners offline."""
        now = time.monotonic()
        timeout = self.config.runner_heartbeat_timeout_s
        for runner in list(self.runners.values()):
            if runner.deleted or now - runner.last_contact <= timeout:
                continue
            if runner.busy:
                job = self.jobs.get(runner.job_id) if runner.job_id is not None else None
                if job is not None and job.status != "completed":
                    self._finish(job, "failure")
                self._remove(runner)
            elif runner.status == "online" and runner.polling == 0:
                runner.status = "offline"
                self._changed()

    def begin_shutdown(self) -> None:
        self.closing = True
        self._wake()

    # -- deliveries -----------------------------------------------------------------

    def new_delivery_id(self) -> int:
        return self._next("delivery")

    def add_delivery(self, delivery: Delivery) -> None:
        self.deliveries[delivery.id] = delivery
        self._delivery_json[delivery.id] = json.dumps(
            vars(delivery), separators=(",", ":")
        ).encode()
        while len(self.deliveries) > MAX_DELIVERIES:
            oldest = next(iter(self.deliveries))
            del self.deliveries[oldest], self._delivery_json[oldest]
        self._changed()

    def record_api_call(self, key: str, status: int) -> None:
        by_status = self.api_calls.setdefault(key, {})
        by_status[str(status)] = by_status.get(str(status), 0) + 1

    # -- introspection and persistence ----------------------------------------------

    def stats(self) -> dict[str, Any]:
        jobs: dict[str, int] = {"queued": 0, "in_progress": 0, "completed": 0}
        conclusions: dict[str, int] = {}
        for job in self.jobs.values():
            jobs[job.status] = jobs.get(job.status, 0) + 1
            if job.conclusion is not None:
                conclusions[job.conclusion] = conclusions.get(job.conclusion, 0) + 1
        deliveries: dict[str, int] = {}
        for delivery in self.deliveries.values():
            deliveries[delivery.status] = deliveries.get(delivery.status, 0) + 1
        live = [r for r in self.runners.values() if not r.deleted]
        return {
            "jobs": jobs,
            "conclusions": conclusions,
            "deliveries": deliveries,
            "api_calls": {key: dict(value) for key, value in self.api_calls.items()},
            "jit_configs_issued": self.jit_issued,
            "runners": {
                "registered": len(self.runners),
                "online": sum(1 for r in live if r.status == "online"),
                "offline": sum(1 for r in live if r.status == "offline"),
                "busy": sum(1 for r in live if r.busy),
                "deleted": len(self.runners) - len(live),
            },
        }

    def snapshot_chunks(self, extra: dict[str, Any]) -> list[bytes]:
        """The whole state (plus `extra` keys) as JSON, in chunks to write one after another.

        Encoded right here on the loop, so the records' own dicts (`vars`) can be used
        without copies; the cached delivery fragments are only referenced, not joined.
        """
        data = {
            "version": SNAPSHOT_VERSION,
            "counters": self.counters,
            "orgs": self.orgs,
            "repos": [vars(r) for r in self.repos.values()],
            "run_numbers": self.run_numbers,
            "runs": [vars(r) for r in self.runs.values()],
            "jobs": [vars(j) for j in self.jobs.values()],
            "runners": [vars(r) for r in self.runners.values()],
            "labels": self.labels,
            "api_calls": self.api_calls,
            "jit_issued": self.jit_issued,
            **extra,
        }
        head = json.dumps(data, separators=(",", ":")).encode()
        chunks = [head[:-1], b',"deliveries":[']
        for index, fragment in enumerate(self._delivery_json.values()):
            if index:
                chunks.append(b",")
            chunks.append(fragment)
        chunks.append(b"]}")
        return chunks

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported state file version {data.get('version')!r}")
        self.counters.update(data["counters"])
        self.orgs = {key: (value[0], value[1]) for key, value in data["orgs"].items()}
        self.repos = {}
        for fields in data["repos"]:
            repo = Repo(**fields)
            self.repos[repo.full_name.lower()] = repo
        self.run_numbers = dict(data["run_numbers"])
        self.runs = {fields["id"]: Run(**fields) for fields in data["runs"]}
        self.jobs = {fields["id"]: Job(**fields) for fields in data["jobs"]}
        self.queued = {
            j.id: None
            for j in sorted(self.jobs.values(), key=lambda j: j.id)
            if j.status == "queued"
        }
        now = time.monotonic()
        self.runners = {}
        for fields in data["runners"]:
            # Live connections did not survive the restart: a runner that is still
            # running reconnects through heartbeats within the timeout.
            runner = Runner(**{**fields, "last_contact": now, "polling": 0})
            self.runners[runner.id] = runner
        self.deliveries = {}
        self._delivery_json = {}
        for fields in data["deliveries"]:
            self.add_delivery(Delivery(**fields))
        self.labels = dict(data["labels"])
        self.api_calls = {key: dict(value) for key, value in data["api_calls"].items()}
        self.jit_issued = int(data["jit_issued"])
        self._add_configured()
