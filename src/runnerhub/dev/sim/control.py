"""The simulator-private API under `/_sim`: the control API (no auth; tests and the demo
drive the simulated world with it) and the runner protocol (the runner simulator's side of
GitHub, authenticated with the runner token from the JIT config)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runnerhub.dev.sim.core import Sim
from runnerhub.dev.sim.errors import invalid
from runnerhub.dev.sim.model import JOB_CONCLUSIONS, Job, Runner
from runnerhub.dev.sim.rest import json_body
from runnerhub.dev.sim.shapes import delivery_full, iso, runner_json

MAX_WAIT_S = 10.0
MAX_JOBS_PER_CALL = 1000


def job_fate(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "run_id": job.run_id,
        "repository": job.repository,
        "name": job.name,
        "workflow_name": job.workflow_name,
        "labels": list(job.labels),
        "status": job.status,
        "conclusion": job.conclusion,
        "runner_name": job.runner_name,
        "runner_id": job.runner_id,
        "executions": list(job.executions),
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.completed_at),
    }


def _field(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(key, default)
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise invalid("Job", key, f"{key} has the wrong type")
    return value


def _new_jobs_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("Job", "body", "the body must be a JSON object")
    if not isinstance(body.get("repository"), str):
        raise invalid("Job", "repository", "repository (owner/name) is required")
    labels = body.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(x, str) and x for x in labels)
    ):
        raise invalid("Job", "labels", "labels must be a non-empty array of strings")
    duration = _field(body, "duration_s", (int, float), 0.5)
    count = _field(body, "count", int, 1)
    conclusion = _field(body, "conclusion", str, "success")
    if duration < 0:
        raise invalid("Job", "duration_s", "duration_s must be >= 0")
    if not 1 <= count <= MAX_JOBS_PER_CALL:
        raise invalid("Job", "count", f"count must be from 1 to {MAX_JOBS_PER_CALL}")
    if conclusion not in JOB_CONCLUSIONS:
        raise invalid("Job", "conclusion", f"conclusion must be one of {sorted(JOB_CONCLUSIONS)}")
    return {
        "repository": body["repository"],
        "labels": labels,
        "duration_s": float(duration),
        "count": count,
        "conclusion": conclusion,
        "workflow_name": _field(body, "workflow_name", str, "ci"),
        "job_name": _field(body, "name", str, "build"),
    }


class Control:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.state = sim.state

    def routes(self) -> list[Route]:
        runner = "/_sim/runner/{runner_id:int}"
        return [
            Route("/_sim/healthz", self.healthz, methods=["GET"]),
            Route("/_sim/jobs", self.create_jobs, methods=["POST"]),
            Route("/_sim/jobs", self.list_jobs, methods=["GET"]),
            Route("/_sim/jobs/{job_id:int}", self.get_job, methods=["GET"]),
            Route("/_sim/jobs/{job_id:int}/cancel", self.cancel_job, methods=["POST"]),
            Route("/_sim/faults", self.get_faults, methods=["GET"]),
            Route("/_sim/faults", self.set_faults, methods=["POST"]),
            Route("/_sim/faults", self.clear_faults, methods=["DELETE"]),
            Route("/_sim/deliveries", self.deliveries, methods=["GET"]),
            Route("/_sim/runners", self.runners, methods=["GET"]),
            Route("/_sim/stats", self.stats, methods=["GET"]),
            Route(f"{runner}/session", self.session, methods=["POST"]),
            Route(f"{runner}/acquire", self.acquire, methods=["POST"]),
            Route(f"{runner}/heartbeat", self.heartbeat, methods=["POST"]),
            Route(f"{runner}/complete", self.complete, methods=["POST"]),
        ]

    # -- control API ----------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def create_jobs(self, request: Request) -> Response:
        self.state.api_url = str(request.base_url).rstrip("/")
        spec = _new_jobs_request(await json_body(request))
        repo = self.state.repo_by_name(spec.pop("repository"))
        jobs = self.state.create_run(repo, **spec)
        return JSONResponse({"jobs": [{"id": j.id, "run_id": j.run_id} for j in jobs]}, 201)

    async def list_jobs(self, request: Request) -> Response:
        status = request.query_params.get("status")
        repository = request.query_params.get("repository")
        jobs = [
            job_fate(job)
            for job in self.state.jobs.values()
            if (not status or job.status == status)
            and (not repository or job.repository.lower() == repository.lower())
        ]
        return JSONResponse({"jobs": jobs})

    async def get_job(self, request: Request) -> Response:
        return JSONResponse(job_fate(self.state.job(request.path_params["job_id"])))

    async def cancel_job(self, request: Request) -> Response:
        return JSONResponse(job_fate(self.state.cancel(request.path_params["job_id"])))

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self.sim.faults.to_json())

    async def set_faults(self, request: Request) -> Response:
        faults = self.sim.faults
        body = await json_body(request)
        faults.merge(body)
        if isinstance(body, dict) and "rate_limit_remaining" in body:
            assert faults.rate_limit_remaining is not None
            self.sim.auth.set_remaining(faults.rate_limit_remaining, faults.rate_limit_token)
        return JSONResponse(faults.to_json())

    async def clear_faults(self, request: Request) -> Response:
        """Clear every fault and give every token a fresh rate-limit window."""
        self.sim.faults.clear()
        self.sim.auth.reset_limits()
        return Response(status_code=204)

    async def deliveries(self, request: Request) -> Response:
        # `delivered_at` is GitHub's, to the second; benches place deliveries in fault
        # windows by `delivered_at_s`, the time the simulator sent it.
        items = [
            {**delivery_full(d), "repository": d.repository, "delivered_at_s": d.delivered_at}
            for d in self.state.deliveries.values()
        ]
        return JSONResponse({"deliveries": items, "pending": len(self.sim.sender.pending())})

    def _runner_record(self, runner: Runner) -> dict[str, Any]:
        return {
            **runner_json(runner, self.state.label_id),
            "scope": runner.scope,
            "deleted": runner.deleted,
            "session": runner.session,
            "polling": runner.polling > 0,
            "job_id": runner.job_id,
            "created_at": iso(runner.created_at),
            "deleted_at": iso(runner.deleted_at),
        }

    async def runners(self, request: Request) -> Response:
        return JSONResponse(
            {"runners": [self._runner_record(r) for r in self.state.runners.values()]}
        )

    async def stats(self, request: Request) -> Response:
        stats = self.state.stats()
        stats["webhooks_pending"] = len(self.sim.sender.pending())
        return JSONResponse(stats)

    # -- runner protocol ------------------------------------------------------------

    def _runner(self, request: Request) -> Runner:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme == "RunnerToken" and token.strip() else None
        return self.state.protocol_runner(request.path_params["runner_id"], given)

    async def session(self, request: Request) -> Response:
        runner = self._runner(request)
        self.state.open_session(runner)
        return JSONResponse({"runner_id": runner.id, "runner_name": runner.name})

    async def acquire(self, request: Request) -> Response:
        runner = self._runner(request)
        try:
            wait_s = float(request.query_params.get("wait_s", "0"))
        except ValueError as exc:
            raise invalid("Runner", "wait_s", "wait_s must be a number") from exc
        job = await self.state.acquire(runner, min(max(wait_s, 0.0), MAX_WAIT_S))
        if job is None:
            return Response(status_code=204)
        return JSONResponse(
            {"job_id": job.id, "duration_s": job.duration_s, "conclusion": job.planned_conclusion}
        )

    async def heartbeat(self, request: Request) -> Response:
        return JSONResponse(self.state.heartbeat(self._runner(request)))

    async def complete(self, request: Request) -> Response:
        runner = self._runner(request)
        body = await json_body(request)
        job_id = body.get("job_id") if isinstance(body, dict) else None
        conclusion = body.get("conclusion") if isinstance(body, dict) else None
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise invalid("Job", "job_id", "job_id must be an integer")
        if conclusion not in JOB_CONCLUSIONS:
            raise invalid("Job", "conclusion", "conclusion is not a job conclusion")
        assert isinstance(conclusion, str)
        self.state.complete(runner, job_id, conclusion)
        return JSONResponse({"job_id": job_id, "conclusion": conclusion})
