"""The GitHub REST client RunnerHub needs: runners, JIT configs, runs, jobs, deliveries.

Every call goes through ``_call``, which adds headers, counts the call, records rate
limits, retries what is safe to retry and maps failures to ``GitHubError`` subclasses.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog

from runnerhub.breakers import CircuitBreaker, CircuitOpen
from runnerhub.cache import Cache, NullCache
from runnerhub.config import GitHubSettings
from runnerhub.domain.backoff import retry_delay
from runnerhub.domain.rates import ErrorRate
from runnerhub.github.auth import Auth, api_headers, auth_from_settings
from runnerhub.github.budget import SharedRateLimits
from runnerhub.github.errors import (
    AuthError,
    Conflict,
    Forbidden,
    GitHubError,
    NotFound,
    RateLimited,
    RunnerBusy,
    Unavailable,
    ValidationFailed,
    no_response,
)
from runnerhub.github.models import (
    GitHubRunner,
    HookDelivery,
    HookTarget,
    JitConfig,
    scope_path,
    split_repository,
)
from runnerhub.github.ratelimit import (
    IDEMPOTENT_METHODS,
    RateLimit,
    RateLimitTracker,
    classify_throttle,
    may_retry_exception,
    may_retry_status,
    parse_rate_limit,
    server_time,
)
from runnerhub.metrics import (
    GITHUB_CALLS,
    GITHUB_RATE_REMAINING,
    GITHUB_RATE_RESET,
    GITHUB_REFUSED,
)

log = structlog.get_logger("runnerhub.github")

T = TypeVar("T")
PathParams = Mapping[str, str | int]
Query = dict[str, str | int]

PER_PAGE = 100
MAX_PAGES = 1000  # a server whose pagination never ends must not hold us forever
SHORT_WAIT_S = 1.0  # a retry-after this short is waited out (idempotent calls only)
MAX_BACKOFF_S = 5.0
# Windows seen by App-JWT calls are the App's own, not the installation's.
APP_BUCKET_PREFIX = "app:"

_STATUS_ERRORS: dict[int, type[GitHubError]] = {
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationFailed,
}


@dataclass
class _Tries:
    """How far one call has got: attempts made, and which one-off retries are spent."""

    attempt: int = 0
    auth_retried: bool = False
    throttle_retried: bool = False


class GitHubClient:
    """GitHub's REST API for RunnerHub.

    A *scope* names where runners register: ``"repo:owner/name"`` or ``"org:name"``.
    ``max_retries`` bounds the attempts of one call (the first included); ``sleep``,
    ``clock`` (monotonic), ``wall_clock`` and ``rng`` are injectable for tests.
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        *,
        timeout_s: float = 10,
        http: httpx.AsyncClient | None = None,
        max_retries: int = 3,
        retry_base_s: float = 0.2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        shared_limits: SharedRateLimits | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._auth = auth
        self._timeout_s = timeout_s
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout_s)
        self._max_retries = max(1, max_retries)
        self._retry_base_s = retry_base_s
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._limits = RateLimitTracker()
        self._shared = shared_limits
        self.breaker = breaker
        # Calls that got no answer or a 5xx, over the last minute: a forecast signal.
        self.errors = ErrorRate(clock=clock)

    @classmethod
    def from_settings(
        cls,
        settings: GitHubSettings,
        shared: Cache | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> GitHubClient:
        http = httpx.AsyncClient(timeout=settings.timeout_s)
        auth = auth_from_settings(settings, http, shared)
        client = cls(
            settings.api_url,
            auth,
            timeout_s=settings.timeout_s,
            http=http,
            shared_limits=SharedRateLimits(
                shared or NullCache(), auth.identity, settings.writes_per_minute
            ),
            breaker=breaker,
        )
        client._owns_http = True
        return client

    def __repr__(self) -> str:
        return f"GitHubClient(base_url={self._base_url!r}, auth={self._auth!r})"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def rate_limit(self) -> dict[str, RateLimit]:
        """The last window seen per bucket (GitHub resource; ``app:`` for App-JWT calls)."""
        return self._limits.snapshot()

    # -- runners -------------------------------------------------------------------------

    async def generate_jitconfig(
        self,
        scope: str,
        name: str,
        labels: Sequence[str],
        runner_group_id: int = 1,
        work_folder: str = "_work",
    ) -> JitConfig:
        """Register a one-job runner. 409 → Conflict (the name exists), 422 → ValidationFailed.

        Not retried once it may have reached GitHub: a JIT config may have been created,
        and a later 409 on the same name lets the caller adopt it.
        """
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of strings, not one string")
        prefix, params = scope_path(scope)
        endpoint = prefix + "/actions/runners/generate-jitconfig"
        body = {
            "name": name,
            "runner_group_id": runner_group_id,
            "labels": list(labels),
            "work_folder": work_folder,
        }
        resp = await self._call("POST", endpoint, params, json=body)
        return _parse(resp, "POST", endpoint, JitConfig.from_json)

    async def list_runners(self, scope: str, name: str | None = None) -> list[GitHubRunner]:
        prefix, params = scope_path(scope)
        endpoint = prefix + "/actions/runners"
        query: Query = {"name": name} if name is not None else {}
        runners: list[GitHubRunner] = []
        async with aclosing(self._pages(endpoint, params, query, key="runners")) as pages:
            async for items in pages:
                runners.extend(_parse_items(items, endpoint, GitHubRunner.from_json))
        return runners

    async def get_runner(self, scope: str, runner_id: int) -> GitHubRunner | None:
        prefix, params = scope_path(scope)
        endpoint = prefix + "/actions/runners/{runner_id}"
        try:
            resp = await self._call("GET", endpoint, {**params, "runner_id": runner_id})
        except NotFound:
            return None
        return _parse(resp, "GET", endpoint, GitHubRunner.from_json)

    async def find_runner(self, scope: str, name: str) -> GitHubRunner | None:
        matches = [r for r in await self.list_runners(scope, name=name) if r.name == name]
        return matches[0] if matches else None

    async def delete_runner(self, scope: str, runner_id: int) -> bool:
        """True when deleted, False when already gone; RunnerBusy while it runs a job."""
        prefix, params = scope_path(scope)
        endpoint = prefix + "/actions/runners/{runner_id}"
        try:
            await self._call(
                "DELETE",
                endpoint,
                {**params, "runner_id": runner_id},
                status_errors={422: RunnerBusy},
            )
        except NotFound:
            return False
        return True

    # -- workflow runs and jobs ----------------------------------------------------------

    async def list_runs(self, repository: str, status: str) -> list[dict[str, Any]]:
        return await self._collect(
            "/repos/{owner}/{repo}/actions/runs",
            _repo_params(repository),
            {"status": status},
            key="workflow_runs",
        )

    async def list_run_jobs(self, repository: str, run_id: int) -> list[dict[str, Any]]:
        return await self._collect(
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            {**_repo_params(repository), "run_id": run_id},
            {},
            key="jobs",
        )

    async def get_job(self, repository: str, job_id: int) -> dict[str, Any] | None:
        endpoint = "/repos/{owner}/{repo}/actions/jobs/{job_id}"
        try:
            resp = await self._call("GET", endpoint, {**_repo_params(repository), "job_id": job_id})
        except NotFound:
            return None
        return _parse(resp, "GET", endpoint, _as_object)

    async def list_org_repos(self, org: str) -> list[str]:
        endpoint = "/orgs/{org}/repos"
        repos = await self._collect(endpoint, {"org": org}, {}, key=None)
        return _parse_items(repos, endpoint, lambda repo: str(repo["full_name"]))

    async def get_rate_limit(self) -> dict[str, RateLimit]:
        """Every window of this identity (`GET /rate_limit`: costs nothing, and is answered
        even when a window is used up). One try, no wait: it is for health checks."""
        endpoint = "/rate_limit"
        headers = await self._headers("GET", endpoint, False)
        try:
            resp = await self._send(
                "GET", endpoint, self._base_url + endpoint, None, None, headers, False
            )
        except httpx.TransportError as exc:
            raise Unavailable(
                _no_response("GET", exc), method="GET", endpoint=endpoint, attempts=1
            ) from None
        if not resp.is_success:
            message, errors = _error_body(resp)
            raise _error_for(resp.status_code, message, errors, "GET", endpoint, 1, None)
        data = _parse(resp, "GET", endpoint, _as_object)
        resources = data.get("resources")
        if not isinstance(resources, dict):
            raise GitHubError("no resources in the answer", method="GET", endpoint=endpoint)
        windows = {}
        for name, w in resources.items():
            try:
                windows[str(name)] = RateLimit.from_json(w, resource=str(name))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # a resource we cannot read says nothing about the others
        return windows

    # -- webhook deliveries --------------------------------------------------------------

    async def list_deliveries(
        self, hook: HookTarget, since: datetime | None = None
    ) -> list[HookDelivery]:
        """Deliveries newest first, down to ``since`` (inclusive) when given."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        base, params, app = _hook_base(hook)
        endpoint = base + "/deliveries"
        found: list[HookDelivery] = []
        # Cursor pagination: only the Link header knows the next page.
        pages = self._pages(endpoint, params, {}, key=None, app=app, page_fallback=False)
        async with aclosing(pages) as pages_:
            async for items in pages_:
                for delivery in _parse_items(items, endpoint, HookDelivery.from_json):
                    if since is not None and delivery.delivered_at < since:
                        return found
                    found.append(delivery)
        return found

    async def redeliver(self, hook: HookTarget, delivery_id: int) -> None:
        base, params, app = _hook_base(hook)
        endpoint = base + "/deliveries/{delivery_id}/attempts"
        await self._call("POST", endpoint, {**params, "delivery_id": delivery_id}, app=app)

    async def update_hook_url(self, hook: HookTarget, url: str) -> str:
        """Send the hook's deliveries to `url` from now on (`PATCH …/hooks/{id}/config`, what
        a region failover does); the URL GitHub now holds. The secret is left as it is."""
        base, params, app = _hook_base(hook)
        endpoint = base + "/config"
        resp = await self._call("PATCH", endpoint, params, json={"url": url}, app=app)
        return _parse(resp, "PATCH", endpoint, lambda data: str(_as_object(data)["url"]))

    # -- plumbing ------------------------------------------------------------------------

    async def _collect(
        self, endpoint: str, params: PathParams, query: Query, *, key: str | None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        async with aclosing(self._pages(endpoint, params, query, key=key)) as pages:
            async for items in pages:
                found.extend(_parse_items(items, endpoint, _as_object))
        return found

    async def _pages(
        self,
        endpoint: str,
        params: PathParams,
        query: Query,
        *,
        key: str | None,
        app: bool = False,
        page_fallback: bool = True,
    ) -> AsyncGenerator[list[Any], None]:
        """Each page's items: follow Link rel="next", else ``page`` while pages are full.

        The next link's query is replayed on our own path template, so the token never
        goes to a host other than ``base_url``.
        """
        query = {**query, "per_page": PER_PAGE}
        page = 1
        for _ in range(MAX_PAGES):
            resp = await self._call("GET", endpoint, params, query=query, app=app)
            items = _parse(resp, "GET", endpoint, lambda data: _items_of(data, key))
            yield items
            next_url = resp.links.get("next", {}).get("url")
            if next_url:
                query = dict(httpx.URL(next_url).params.items())
            elif page_fallback and "link" not in resp.headers and len(items) >= PER_PAGE:
                page += 1
                query = {**query, "page": page}
            else:
                return
        raise GitHubError(
            f"pagination did not end after {MAX_PAGES} pages", method="GET", endpoint=endpoint
        )

    async def _call(
        self,
        method: str,
        endpoint: str,
        path: PathParams | None = None,
        *,
        query: Query | None = None,
        json: Any = None,
        app: bool = False,
        status_errors: Mapping[int, type[GitHubError]] | None = None,
    ) -> httpx.Response:
        """One API call with its retries; ``endpoint`` is the path template."""
        url = self._base_url + _fill(endpoint, path or {})
        tries = _Tries()
        while True:
            tries.attempt += 1
            self._refuse_if_exhausted(method, endpoint, app)
            await self._refuse_if_shared_pause(method, endpoint, app)
            headers = await self._headers(method, endpoint, app)
            try:
                resp = await self._send(method, endpoint, url, query, json, headers, app)
            except httpx.TransportError as exc:
                if may_retry_exception(method, exc) and tries.attempt < self._max_retries:
                    await self._backoff(method, endpoint, tries.attempt, type(exc).__name__)
                    continue
                raise Unavailable(
                    _no_response(method, exc),
                    method=method,
                    endpoint=endpoint,
                    attempts=tries.attempt,
                ) from None
            if resp.is_success:
                return resp
            await self._handle_failure(resp, method, endpoint, app, tries, status_errors)

    async def _headers(self, method: str, endpoint: str, app: bool) -> httpx.Headers:
        # httpx.Headers masks Authorization in its repr, should a traceback show locals.
        headers = httpx.Headers(api_headers())
        try:
            headers.update(await (self._auth.app_headers() if app else self._auth.headers()))
        except GitHubError as exc:
            if exc.method is None:  # e.g. a PAT asked for an App JWT: say for which call
                exc.method, exc.endpoint = method, endpoint
            raise
        return headers

    async def _send(
        self,
        method: str,
        endpoint: str,
        url: str,
        query: Query | None,
        json: Any,
        headers: httpx.Headers,
        app: bool,
    ) -> httpx.Response:
        """One request: counted, its rate-limit headers recorded, logged without secrets;
        refused at once (`CircuitOpen` as `Unavailable`) while GitHub's circuit is open."""
        self._enter_circuit(method, endpoint)
        started = self._clock()
        try:
            resp = await self._http.request(
                method, url, params=query, json=json, headers=headers, timeout=self._timeout_s
            )
        except httpx.TransportError as exc:
            GITHUB_CALLS.labels(endpoint, method, "0").inc()
            self.errors.record(ok=False)
            self._circuit(f"{type(exc).__name__} on {method} {endpoint}")
            raise
        except BaseException:  # cancelled: no verdict on GitHub
            if self.breaker is not None:
                self.breaker.release()
            raise
        self._circuit(
            f"HTTP {resp.status_code} on {method} {endpoint}" if resp.status_code >= 500 else None
        )
        GITHUB_CALLS.labels(endpoint, method, str(resp.status_code)).inc()
        self.errors.record(ok=resp.status_code < 500)
        await self._record_limits(endpoint, resp, app)
        log.debug(
            "github.call",
            method=method,
            endpoint=endpoint,
            status=resp.status_code,
            ms=round((self._clock() - started) * 1000, 1),
        )
        return resp

    async def _handle_failure(
        self,
        resp: httpx.Response,
        method: str,
        endpoint: str,
        app: bool,
        tries: _Tries,
        status_errors: Mapping[int, type[GitHubError]] | None,
    ) -> None:
        """Return (after any wait) when the call should be tried again; raise otherwise."""
        status = resp.status_code
        message, errors = _error_body(resp)
        now_wall = server_time(resp.headers, self._wall_clock())
        throttle = classify_throttle(status, resp.headers, message, now_wall)
        if throttle is not None:
            short = throttle.wait_s <= SHORT_WAIT_S
            if short and method in IDEMPOTENT_METHODS and not tries.throttle_retried:
                tries.throttle_retried = True
                reason = "secondary_rate_limit" if throttle.secondary else "rate_limit"
                self._log_retry(method, endpoint, tries.attempt, reason, throttle.wait_s)
                await self._sleep(throttle.wait_s)
                return
            kind = "secondary" if throttle.secondary else "primary"
            if self._shared is not None:  # spare the other nodes the same refusal
                until = self._wall_clock() + throttle.wait_s
                await self._shared.share_pause(
                    self._bucket(endpoint, app),
                    until,
                    throttle.secondary,
                    throttle.reset,
                    self._wall_clock(),
                )
            raise RateLimited(
                f"{message or kind + ' rate limit'}; retry in {throttle.wait_s:.0f} s",
                retry_at=self._clock() + throttle.wait_s,
                reset_at=datetime.fromtimestamp(throttle.reset, UTC) if throttle.reset else None,
                resource=resp.headers.get("x-ratelimit-resource"),
                secondary=throttle.secondary,
                status=status,
                method=method,
                endpoint=endpoint,
                attempts=tries.attempt,
            )
        if status == 401 and not tries.auth_retried:
            # An installation token can be revoked or expire early: fetch a new one once.
            tries.auth_retried = True
            self._auth.invalidate()
            self._log_retry(method, endpoint, tries.attempt, "401", 0.0)
            return
        if may_retry_status(method, status) and tries.attempt < self._max_retries:
            await self._backoff(method, endpoint, tries.attempt, str(status))
            return
        raise _error_for(status, message, errors, method, endpoint, tries.attempt, status_errors)

    def _refuse_if_exhausted(self, method: str, endpoint: str, app: bool) -> None:
        bucket = self._bucket(endpoint, app)
        exhausted = self._limits.exhausted(bucket, self._clock())
        if exhausted is None:
            return
        limit, retry_at = exhausted
        GITHUB_REFUSED.labels("exhausted").inc()
        raise RateLimited(
            f"rate limit {bucket!r} used up until {limit.reset_at:%Y-%m-%d %H:%M:%S}Z; "
            "not calling GitHub",
            retry_at=retry_at,
            reset_at=limit.reset_at,
            resource=limit.resource,
            method=method,
            endpoint=endpoint,
            attempts=0,
        )

    async def _refuse_if_shared_pause(self, method: str, endpoint: str, app: bool) -> None:
        """What other nodes learned: a window used up, a secondary limit, the write budget."""
        if self._shared is None:
            return
        now_wall = self._wall_clock()
        bucket = self._bucket(endpoint, app)
        pause = await self._shared.pause(bucket, now_wall)
        if pause is not None:
            GITHUB_REFUSED.labels("shared_pause").inc()
            kind = "secondary rate limit" if pause.secondary else f"rate limit {bucket!r} used up"
            until = datetime.fromtimestamp(pause.until, UTC)
            raise RateLimited(
                f"{kind} (seen by a RunnerHub node) until {until:%Y-%m-%d %H:%M:%S}Z; "
                "not calling GitHub",
                retry_at=self._clock() + (pause.until - now_wall),
                reset_at=datetime.fromtimestamp(pause.reset, UTC) if pause.reset else None,
                secondary=pause.secondary,
                method=method,
                endpoint=endpoint,
                attempts=0,
            )
        if method in IDEMPOTENT_METHODS and method != "DELETE":
            return
        wait = await self._shared.take_write(now_wall)
        if wait is not None:
            GITHUB_REFUSED.labels("write_budget").inc()
            raise RateLimited(
                f"the cluster's budget of {self._shared.writes_per_minute} content-creating "
                f"requests a minute is used up; next in {wait:.0f} s; not calling GitHub",
                retry_at=self._clock() + wait,
                secondary=True,
                method=method,
                endpoint=endpoint,
                attempts=0,
            )

    def _enter_circuit(self, method: str, endpoint: str) -> None:
        if self.breaker is None:
            return
        try:
            self.breaker.before()
        except CircuitOpen as exc:
            raise Unavailable(str(exc), method=method, endpoint=endpoint, attempts=0) from None

    def _circuit(self, failure: str | None) -> None:
        """GitHub answered (a 4xx is an answer) or it did not (no response, 5xx)."""
        if self.breaker is None:
            return
        if failure is None:
            self.breaker.succeeded()
        else:
            self.breaker.failed(failure)

    def _bucket(self, endpoint: str, app: bool) -> str:
        default = APP_BUCKET_PREFIX + "core" if app else "core"
        return self._limits.bucket_for(endpoint, default)

    async def _record_limits(self, endpoint: str, resp: httpx.Response, app: bool) -> None:
        limit = parse_rate_limit(resp.headers)
        if limit is None:
            return
        bucket = APP_BUCKET_PREFIX + limit.resource if app else limit.resource
        now_wall = server_time(resp.headers, self._wall_clock())
        self._limits.record(endpoint, bucket, limit, now_mono=self._clock(), now_wall=now_wall)
        GITHUB_RATE_REMAINING.labels(bucket).set(limit.remaining)
        GITHUB_RATE_RESET.labels(bucket).set(limit.reset)
        if self._shared is not None:
            await self._shared.share_window(bucket, limit, now_wall)

    async def _backoff(self, method: str, endpoint: str, attempt: int, reason: str) -> None:
        delay = retry_delay(attempt, self._retry_base_s, MAX_BACKOFF_S, self._rng)
        self._log_retry(method, endpoint, attempt, reason, delay)
        await self._sleep(delay)

    @staticmethod
    def _log_retry(method: str, endpoint: str, attempt: int, reason: str, delay: float) -> None:
        log.warning(
            "github.retry",
            method=method,
            endpoint=endpoint,
            reason=reason,
            attempt=attempt,
            delay_s=round(delay, 3),
        )


def _fill(template: str, params: PathParams) -> str:
    return template.format(**{k: quote(str(v), safe="") for k, v in params.items()})


def _repo_params(repository: str) -> dict[str, str]:
    owner, repo = split_repository(repository)
    return {"owner": owner, "repo": repo}


def _hook_base(hook: HookTarget) -> tuple[str, dict[str, str | int], bool]:
    """Path prefix, its parameters, and whether the App JWT authenticates it."""
    if hook.kind == "app":
        return "/app/hook", {}, True
    assert hook.owner is not None and hook.hook_id is not None  # HookTarget validates
    if hook.kind == "repo":
        return (
            "/repos/{owner}/{repo}/hooks/{hook_id}",
            {
                **_repo_params(hook.owner),
                "hook_id": hook.hook_id,
            },
            False,
        )
    return "/orgs/{org}/hooks/{hook_id}", {"org": hook.owner, "hook_id": hook.hook_id}, False


def _no_response(method: str, exc: Exception) -> str:
    text = no_response(exc)
    if method not in IDEMPOTENT_METHODS and not may_retry_exception(method, exc):
        text += "; the request may have reached GitHub"
    return text


def _error_body(resp: httpx.Response) -> tuple[str, list[Any]]:
    try:
        data = resp.json()
    except ValueError:
        return "", []
    if not isinstance(data, dict):
        return "", []
    message, errors = data.get("message"), data.get("errors")
    return (
        message if isinstance(message, str) else "",
        errors if isinstance(errors, list) else [],
    )


def _error_for(
    status: int,
    message: str,
    errors: list[Any],
    method: str,
    endpoint: str,
    attempts: int,
    overrides: Mapping[int, type[GitHubError]] | None,
) -> GitHubError:
    cls = (overrides or {}).get(status) or _STATUS_ERRORS.get(status)
    if cls is None:
        cls = Unavailable if status >= 500 else GitHubError
    if issubclass(cls, ValidationFailed):
        return cls(
            message,
            errors=errors,
            status=status,
            method=method,
            endpoint=endpoint,
            attempts=attempts,
        )
    return cls(message, status=status, method=method, endpoint=endpoint, attempts=attempts)


def _parse(resp: httpx.Response, method: str, endpoint: str, parse: Callable[[Any], T]) -> T:
    try:
        return parse(resp.json())
    except (KeyError, TypeError, ValueError) as exc:
        raise GitHubError(
            f"unexpected response body ({_describe(exc)})",
            status=resp.status_code,
            method=method,
            endpoint=endpoint,
        ) from None


def _parse_items(items: list[Any], endpoint: str, parse: Callable[[Any], T]) -> list[T]:
    try:
        return [parse(item) for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise GitHubError(
            f"unexpected item in response ({_describe(exc)})", method="GET", endpoint=endpoint
        ) from None


def _describe(exc: Exception) -> str:
    # Only the exception type and a missing key: values may be secrets (a JIT config).
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}" if exc.args else "missing field"
    return type(exc).__name__


def _items_of(data: Any, key: str | None) -> list[Any]:
    items = data if key is None else data[key]
    if not isinstance(items, list):
        raise TypeError("not a list")
    return items


def _as_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError("not an object")
    return data
