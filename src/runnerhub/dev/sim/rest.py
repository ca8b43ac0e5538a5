"""GitHub's REST endpoints, as the simulator answers them.

Every endpoint goes through `_endpoint`: authenticate, count against the primary rate
limit, consult injected faults, then run the handler; the rate-limit headers go on every
authenticated answer, errors included.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runnerhub.dev.sim.auth import INSTALLATION_PERMISSIONS, Identity
from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.core import Sim
from runnerhub.dev.sim.errors import SECONDARY_DOCS, ApiError, invalid, not_found
from runnerhub.dev.sim.model import Delivery, Runner
from runnerhub.dev.sim.shapes import (
    delivery_full,
    delivery_item,
    iso,
    job_json,
    page_params,
    paginate,
    repo_json,
    run_json,
    runner_json,
)

Handler = Callable[[Request, Identity], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
API_VERSION = "2022-11-28"
CURSOR_PREFIX = "v1_"


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "Problems parsing JSON") from exc


def _json(body: Any, status: int = 200, link: str | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"link": link} if link else None)


async def _forced_error(status: int, key: str, request: Request) -> ApiError:
    """The error an injected fault answers, shaped like GitHub's for that status."""
    if status in (403, 429):
        return ApiError(
            status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you "
            "try again. If you reach out to GitHub Support for help, please include the "
            f"request ID {secrets.token_hex(8).upper()}.",
            headers={"retry-after": "1"},
            documentation_url=SECONDARY_DOCS,
        )
    if status == 409 and key == "generate-jitconfig":
        try:
            body = await json_body(request)
        except ApiError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        return ApiError(409, f"Already exists - A runner with the name {name} already exists.")
    if status == 422:
        return ApiError(422, errors=[])
    return ApiError(status)


class Rest:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.state = sim.state

    def _endpoint(self, key: str, handler: Handler, *, app: bool = False) -> Endpoint:
        sim = self.sim

        async def call(request: Request) -> Response:
            sim.state.api_url = str(request.base_url).rstrip("/")
            rate_headers: dict[str, str] = {}
            try:
                identity = sim.auth.authenticate(request.headers.get("authorization"), app=app)
                rate_headers = sim.auth.consume(identity)
                forced = sim.faults.take_response(key)
                if forced is not None and forced >= 300:
                    raise await _forced_error(forced, key, request)
                response = await handler(request, identity)
            except ApiError as exc:
                response = exc.response()
            response.headers.update(rate_headers)
            response.headers["x-github-request-id"] = secrets.token_hex(8).upper()
            response.headers["x-github-api-version-selected"] = API_VERSION
            sim.state.record_api_call(key, response.status_code)
            return response

        return call

    async def rate_limit(self, request: Request) -> Response:
        """`GET /rate_limit`: the caller's windows; like GitHub's, it costs no budget."""
        sim = self.sim
        try:
            identity = sim.auth.authenticate(request.headers.get("authorization"), app=False)
            forced = sim.faults.take_response("rate-limit")
            if forced is not None and forced >= 300:
                raise await _forced_error(forced, "rate-limit", request)
        except ApiError as exc:
            response: Response = exc.response()
        else:
            headers = sim.auth.peek(identity)
            window = {
                "limit": int(headers["x-ratelimit-limit"]),
                "remaining": int(headers["x-ratelimit-remaining"]),
                "reset": int(headers["x-ratelimit-reset"]),
                "used": int(headers["x-ratelimit-used"]),
                "resource": "core",
            }
            response = JSONResponse(
                {"resources": {"core": window}, "rate": window}, headers=headers
            )
        sim.state.record_api_call("rate-limit", response.status_code)
        return response

    def routes(self) -> list[Route]:
        e = self._endpoint
        runners = "/actions/runners"
        routes = [
            Route("/rate_limit", self.rate_limit, methods=["GET"]),
            Route(
                "/app/installations/{installation_id:int}/access_tokens",
                e("access-token", self.access_token, app=True),
                methods=["POST"],
            ),
            Route("/orgs/{org}/repos", e("list-repos", self.org_repos), methods=["GET"]),
            Route("/repos/{owner}/{repo}/actions/runs", e("list-runs", self.runs), methods=["GET"]),
            Route(
                "/repos/{owner}/{repo}/actions/runs/{run_id:int}",
                e("get-run", self.run),
                methods=["GET"],
            ),
            Route(
                "/repos/{owner}/{repo}/actions/runs/{run_id:int}/jobs",
                e("list-jobs", self.run_jobs),
                methods=["GET"],
            ),
            Route(
                "/repos/{owner}/{repo}/actions/jobs/{job_id:int}",
                e("get-job", self.job),
                methods=["GET"],
            ),
        ]
        for base in ("/repos/{owner}/{repo}", "/orgs/{org}"):
            routes += [
                Route(
                    f"{base}{runners}/generate-jitconfig",
                    e("generate-jitconfig", self.generate_jitconfig),
                    methods=["POST"],
                ),
                Route(f"{base}{runners}", e("list-runners", self.list_runners), methods=["GET"]),
                Route(
                    f"{base}{runners}/{{runner_id:int}}",
                    e("get-runner", self.get_runner),
                    methods=["GET"],
                ),
                Route(
                    f"{base}{runners}/{{runner_id:int}}",
                    e("delete-runner", self.delete_runner),
                    methods=["DELETE"],
                ),
            ]
        for base, app in (
            ("/repos/{owner}/{repo}/hooks/{hook_id:int}", False),
            ("/orgs/{org}/hooks/{hook_id:int}", False),
            ("/app/hook", True),
        ):
            routes += [
                Route(
                    f"{base}/deliveries",
                    e("deliveries", self.list_deliveries, app=app),
                    methods=["GET"],
                ),
                Route(
                    f"{base}/deliveries/{{delivery_id:int}}",
                    e("deliveries", self.get_delivery, app=app),
                    methods=["GET"],
                ),
                Route(
                    f"{base}/deliveries/{{delivery_id:int}}/attempts",
                    e("redeliver", self.redeliver, app=app),
                    methods=["POST"],
                ),
                Route(f"{base}/config", e("hook-config", self.hook_config, app=app)),
                Route(
                    f"{base}/config",
                    e("update-hook-config", self.update_hook_config, app=app),
                    methods=["PATCH"],
                ),
            ]
        return routes

    # -- app ------------------------------------------------------------------------

    async def access_token(self, request: Request, identity: Identity) -> Response:
        if request.path_params["installation_id"] != self.sim.config.installation_id:
            raise not_found()
        await json_body(request)  # optional narrowing (repositories, permissions): accepted
        token, expires_at = self.sim.auth.issue_installation_token()
        return _json(
            {
                "token": token,
                "expires_at": iso(expires_at),
                "permissions": INSTALLATION_PERMISSIONS,
                "repository_selection": "all",
            },
            201,
        )

    # -- scopes ---------------------------------------------------------------------

    def _scope(self, request: Request) -> str:
        params = request.path_params
        if "org" in params:
            login, _ = self.state.org(params["org"])
            return f"org:{login}"
        return f"repo:{self.state.repo(params['owner'], params['repo']).full_name}"

    def _runner_json(self, runner: Runner) -> dict[str, Any]:
        return runner_json(runner, self.state.label_id)

    # -- runners --------------------------------------------------------------------

    async def generate_jitconfig(self, request: Request, identity: Identity) -> Response:
        scope = self._scope(request)
        name, group_id, labels, work_folder = _jit_request(await json_body(request))
        runner = self.state.register_runner(scope, name, labels, group_id, work_folder)
        config = {
            "sim_url": str(request.base_url).rstrip("/"),
            "runner_id": runner.id,
            "runner_name": runner.name,
            "runner_token": runner.token,
            "labels": runner.labels,
            "scope": runner.scope,
            "work_folder": runner.work_folder,
        }
        encoded = base64.b64encode(json.dumps(config).encode()).decode()
        return _json({"runner": self._runner_json(runner), "encoded_jit_config": encoded}, 201)

    async def list_runners(self, request: Request, identity: Identity) -> Response:
        runners = sorted(self.state.runners_in(self._scope(request)), key=lambda r: r.id)
        name = request.query_params.get("name")
        if name is not None:
            runners = [r for r in runners if r.name == name]
        per_page, page = page_params(dict(request.query_params))
        chunk, link = paginate(runners, request.url, per_page, page)
        body = {"total_count": len(runners), "runners": [self._runner_json(r) for r in chunk]}
        return _json(body, link=link)

    async def get_runner(self, request: Request, identity: Identity) -> Response:
        runner = self.state.runner_in(self._scope(request), request.path_params["runner_id"])
        return _json(self._runner_json(runner))

    async def delete_runner(self, request: Request, identity: Identity) -> Response:
        runner = self.state.runner_in(self._scope(request), request.path_params["runner_id"])
        self.state.delete_runner(runner)
        return Response(status_code=204)

    # -- repos, runs and jobs -------------------------------------------------------

    async def org_repos(self, request: Request, identity: Identity) -> Response:
        login, org_id = self.state.org(request.path_params["org"])
        repos = sorted(
            (r for r in self.state.repos.values() if r.owner.lower() == login.lower()),
            key=lambda r: r.id,
        )
        per_page, page = page_params(dict(request.query_params))
        chunk, link = paginate(repos, request.url, per_page, page)
        return _json([repo_json(r, org_id) for r in chunk], link=link)

    def _run_json(self, run_id: int) -> dict[str, Any]:
        run = self.state.runs[run_id]
        repo = self.state.repo_by_name(run.repository)
        jobs = [self.state.jobs[j] for j in run.job_ids]
        repo_obj = repo_json(repo, self.state.org_id_of(repo.owner))
        return run_json(run, jobs, repo_obj, self.state.api_url)

    async def runs(self, request: Request, identity: Identity) -> Response:
        repo = self.state.repo(request.path_params["owner"], request.path_params["repo"])
        runs = [
            self._run_json(run.id)
            for run in sorted(self.state.runs.values(), key=lambda r: -r.id)
            if run.repository == repo.full_name
        ]
        # GitHub's `status` filter takes a status or a conclusion.
        wanted = request.query_params.get("status")
        if wanted:
            runs = [r for r in runs if wanted in (r["status"], r["conclusion"])]
        per_page, page = page_params(dict(request.query_params))
        chunk, link = paginate(runs, request.url, per_page, page)
        return _json({"total_count": len(runs), "workflow_runs": chunk}, link=link)

    def _repo_run(self, request: Request) -> int:
        repo = self.state.repo(request.path_params["owner"], request.path_params["repo"])
        run = self.state.runs.get(request.path_params["run_id"])
        if run is None or run.repository != repo.full_name:
            raise not_found()
        return run.id

    async def run(self, request: Request, identity: Identity) -> Response:
        return _json(self._run_json(self._repo_run(request)))

    async def run_jobs(self, request: Request, identity: Identity) -> Response:
        run = self.state.runs[self._repo_run(request)]
        jobs = [job_json(self.state.jobs[j], self.state.api_url) for j in run.job_ids]
        per_page, page = page_params(dict(request.query_params))
        chunk, link = paginate(jobs, request.url, per_page, page)
        return _json({"total_count": len(jobs), "jobs": chunk}, link=link)

    async def job(self, request: Request, identity: Identity) -> Response:
        repo = self.state.repo(request.path_params["owner"], request.path_params["repo"])
        job = self.state.job(request.path_params["job_id"])
        if job.repository != repo.full_name:
            raise not_found()
        return _json(job_json(job, self.state.api_url))

    # -- webhook deliveries ---------------------------------------------------------

    def _deliveries_in_scope(self, request: Request) -> list[Delivery]:
        """The hook's deliveries that this path can see, newest first."""
        params = request.path_params
        config = self.sim.config
        if not config.webhook_url or params.get("hook_id", config.hook_id) != config.hook_id:
            raise not_found()
        if "org" in params:
            login, _ = self.state.org(params["org"])
            owner = login.lower() + "/"
            keep = [
                d
                for d in self.state.deliveries.values()
                if (d.repository or "").lower().startswith(owner)
            ]
        elif "owner" in params:
            full = self.state.repo(params["owner"], params["repo"]).full_name
            keep = [d for d in self.state.deliveries.values() if d.repository == full]
        else:
            keep = list(self.state.deliveries.values())
        return keep[::-1]

    def _delivery(self, request: Request) -> Delivery:
        wanted = request.path_params["delivery_id"]
        for delivery in self._deliveries_in_scope(request):
            if delivery.id == wanted:
                return delivery
        raise not_found()

    async def list_deliveries(self, request: Request, identity: Identity) -> Response:
        deliveries = self._deliveries_in_scope(request)
        query = request.query_params
        per_page, _ = page_params(dict(query))
        cursor = query.get("cursor")
        if cursor:
            try:
                before = int(cursor.removeprefix(CURSOR_PREFIX))
            except ValueError as exc:
                raise invalid("Delivery", "cursor", "cursor is not valid") from exc
            deliveries = [d for d in deliveries if d.id < before]
        status = query.get("status")  # GitHub's filter: success or failure
        if status in ("success", "failure"):
            deliveries = [d for d in deliveries if d.ok == (status == "success")]
        chunk = deliveries[:per_page]
        link = None
        if len(deliveries) > per_page:
            url = request.url.include_query_params(
                per_page=per_page, cursor=f"{CURSOR_PREFIX}{chunk[-1].id}"
            )
            link = f'<{url}>; rel="next"'
        return _json([delivery_item(d) for d in chunk], link=link)

    async def get_delivery(self, request: Request, identity: Identity) -> Response:
        return _json(delivery_full(self._delivery(request)))

    async def redeliver(self, request: Request, identity: Identity) -> Response:
        self.sim.sender.redeliver(self._delivery(request))
        return _json({}, 202)

    # -- the hook's configuration (where deliveries go: a region failover re-points it) --

    def _hook_in_scope(self, request: Request) -> None:
        params = request.path_params
        config = self.sim.config
        if not config.webhook_url or params.get("hook_id", config.hook_id) != config.hook_id:
            raise not_found()
        if "org" in params:
            self.state.org(params["org"])
        elif "owner" in params:
            self.state.repo(params["owner"], params["repo"])

    async def hook_config(self, request: Request, identity: Identity) -> Response:
        """`GET …/hooks/{hook_id}/config`: GitHub's webhook-config (the secret masked)."""
        self._hook_in_scope(request)
        return _json(hook_config_json(self.sim.config))

    async def update_hook_config(self, request: Request, identity: Identity) -> Response:
        """`PATCH …/hooks/{hook_id}/config`: url, content_type, secret, insecure_ssl; what
        is absent stays. Deliveries (and redeliveries) go to the new URL from now on."""
        self._hook_in_scope(request)
        url, secret = _hook_config_request(await json_body(request))
        config = self.sim.config
        if url is not None:
            config.webhook_url = url
        if secret is not None:
            config.webhook_secret = secret
        self.state.hook_config_changes.append({"url": config.webhook_url, "at": time.time()})
        return _json(hook_config_json(config))


def hook_config_json(config: SimConfig) -> dict[str, Any]:
    return {
        "content_type": "json",
        "insecure_ssl": "0",
        "secret": "********" if config.webhook_secret else None,
        "url": config.webhook_url,
    }


def _hook_config_request(body: Any) -> tuple[str | None, str | None]:
    """Validate a webhook-config body as GitHub's schema does: (url, secret), None = keep."""
    if not isinstance(body, dict):
        raise invalid("Hook", "body", "the body must be a JSON object")
    url = body.get("url")
    if url is not None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid("Hook", "url", "url must be an http(s) URL", "custom")
    if body.get("content_type", "json") not in ("json", "form"):
        raise invalid("Hook", "content_type", "content_type must be json or form")
    if body.get("content_type") == "form":
        raise invalid("Hook", "content_type", "this simulator sends json only", "custom")
    secret = body.get("secret")
    if secret is not None and not isinstance(secret, str):
        raise invalid("Hook", "secret", "secret must be a string")
    if str(body.get("insecure_ssl", "0")) not in ("0", "1"):
        raise invalid("Hook", "insecure_ssl", "insecure_ssl must be 0 or 1")
    return url, secret


def _jit_request(body: Any) -> tuple[str, int, list[str], str]:
    """Validate a generate-jitconfig body the way GitHub's schema does."""
    if not isinstance(body, dict):
        raise invalid("Runner", "body", "the body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("Runner", "name", "name is missing or not a string", "missing_field")
    group_id = body.get("runner_group_id")
    if isinstance(group_id, bool) or not isinstance(group_id, int) or group_id < 1:
        raise invalid("Runner", "runner_group_id", "runner_group_id must be a positive integer")
    labels = body.get("labels")
    if not isinstance(labels, list) or not 1 <= len(labels) <= 100:
        raise invalid("Runner", "labels", "labels must be an array of 1 to 100 strings")
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise invalid("Runner", "labels", "every label must be a non-empty string")
    work_folder = body.get("work_folder", "_work")
    if not isinstance(work_folder, str):
        raise invalid("Runner", "work_folder", "work_folder must be a string")
    return name, group_id, list(labels), work_folder
