"""GitHubClient against httpx.MockTransport: paths, bodies, pagination, errors, retries."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from runnerhub import __version__
from runnerhub.config import GitHubSettings, HookRef
from runnerhub.github import (
    AuthError,
    Conflict,
    GitHubClient,
    GitHubError,
    HookTarget,
    NotFound,
    PatAuth,
    RunnerBusy,
    Unavailable,
    ValidationFailed,
)

TOKEN = "ghp_TOPSECRETTOKEN0123456789"
ENCODED_JIT = "ZW5jb2RlZC1qaXQtU0VDUkVULWNvbmZpZw=="
BASE = "https://api.github.test"
JIT_REPO = "/repos/{owner}/{repo}/actions/runners/generate-jitconfig"

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeGitHub:
    """Routes (method, path) to queued replies; the last reply of a route repeats."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[Reply]] = {}

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes.setdefault((method, path), []).extend(replies)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            raise AssertionError(f"unexpected {request.method} {request.url.path}")
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


class FakeTime:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.mono

    def wall_clock(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.mono += seconds
        self.wall += seconds


class CountingAuth:
    """An Auth that tells which header kind was asked for, and counts invalidations."""

    def __init__(self) -> None:
        self.invalidations = 0
        self.generation = 0

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer install-{self.generation}"}

    async def app_headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer app-jwt"}

    def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1


@pytest.fixture
def gh() -> FakeGitHub:
    return FakeGitHub()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def make_client(
    gh: FakeGitHub, fake_time: FakeTime, auth: Any = None, **kwargs: Any
) -> GitHubClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(gh.handler))
    return GitHubClient(
        BASE,
        auth if auth is not None else PatAuth(TOKEN),
        http=http,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        wall_clock=fake_time.wall_clock,
        **kwargs,
    )


@pytest.fixture
def client(gh: FakeGitHub, fake_time: FakeTime) -> GitHubClient:
    return make_client(gh, fake_time)


def runner_json(runner_id: int, name: str, busy: bool = False) -> dict[str, Any]:
    return {
        "id": runner_id,
        "name": name,
        "os": "linux",
        "status": "online",
        "busy": busy,
        "labels": [
            {"id": 1, "name": "self-hosted", "type": "read-only"},
            {"id": 2, "name": "linux", "type": "custom"},
        ],
    }


def jit_reply(runner_id: int = 7, name: str = "rh-1") -> httpx.Response:
    return httpx.Response(
        201, json={"runner": runner_json(runner_id, name), "encoded_jit_config": ENCODED_JIT}
    )


def calls_metric(endpoint: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "runnerhub_github_api_calls_total",
        {"endpoint": endpoint, "method": method, "status": status},
    )
    return value or 0.0


# -- headers and JIT ---------------------------------------------------------------------


async def test_every_call_carries_api_headers(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("GET", "/repos/o/r/actions/runners/5", httpx.Response(200, json=runner_json(5, "a")))
    await client.get_runner("repo:o/r", 5)
    headers = gh.requests[0].headers
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"] == f"runnerhub/{__version__}"
    assert headers["authorization"] == f"Bearer {TOKEN}"


async def test_generate_jitconfig_repo(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("POST", "/repos/o/r/actions/runners/generate-jitconfig", jit_reply(7, "rh-1"))
    jit = await client.generate_jitconfig("repo:o/r", "rh-1", ["self-hosted", "linux"], 3, "w")
    body = json.loads(gh.requests[0].content)
    assert body == {
        "name": "rh-1",
        "runner_group_id": 3,
        "labels": ["self-hosted", "linux"],
        "work_folder": "w",
    }
    assert jit.runner.id == 7
    assert jit.runner.name == "rh-1"
    assert jit.runner.labels == ("self-hosted", "linux")
    assert jit.runner.os == "linux"
    assert jit.encoded_jit_config == ENCODED_JIT
    assert ENCODED_JIT not in repr(jit)
    assert ENCODED_JIT not in str(jit)


async def test_generate_jitconfig_org_defaults(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("POST", "/orgs/acme/actions/runners/generate-jitconfig", jit_reply())
    await client.generate_jitconfig("org:acme", "rh-2", ["x"])
    body = json.loads(gh.requests[0].content)
    assert body["runner_group_id"] == 1
    assert body["work_folder"] == "_work"


async def test_generate_jitconfig_409_is_conflict(gh: FakeGitHub, client: GitHubClient) -> None:
    message = "Already exists - A runner with the name rh-1 already exists."
    gh.on(
        "POST",
        "/repos/o/r/actions/runners/generate-jitconfig",
        httpx.Response(409, json={"message": message}),
    )
    with pytest.raises(Conflict) as info:
        await client.generate_jitconfig("repo:o/r", "rh-1", ["x"])
    err = info.value
    assert err.status == 409
    assert err.method == "POST"
    assert err.endpoint == JIT_REPO
    assert str(err) == f"GitHub POST {JIT_REPO}: 409 Conflict: {message}"


async def test_generate_jitconfig_422_is_validation_failed(
    gh: FakeGitHub, client: GitHubClient
) -> None:
    errors = [{"resource": "Runner", "field": "labels", "code": "invalid"}]
    gh.on(
        "POST",
        "/repos/o/r/actions/runners/generate-jitconfig",
        httpx.Response(422, json={"message": "Validation Failed", "errors": errors}),
    )
    with pytest.raises(ValidationFailed) as info:
        await client.generate_jitconfig("repo:o/r", "rh-1", ["x"])
    assert info.value.message == "Validation Failed"
    assert info.value.errors == errors
    assert str(info.value).endswith("422 Unprocessable Entity: Validation Failed [labels: invalid]")


async def test_jitconfig_labels_must_not_be_a_string(client: GitHubClient) -> None:
    with pytest.raises(TypeError):
        await client.generate_jitconfig("repo:o/r", "rh-1", "self-hosted")


@pytest.mark.parametrize("scope", ["o/r", "repo:o", "org:", "org:a/b", "team:x", "repo:a/b/c"])
async def test_bad_scope(client: GitHubClient, scope: str) -> None:
    with pytest.raises(ValueError):
        await client.list_runners(scope)


async def test_unexpected_body_is_a_github_error(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("POST", "/repos/o/r/actions/runners/generate-jitconfig", httpx.Response(201, json={}))
    with pytest.raises(GitHubError, match="unexpected response body"):
        await client.generate_jitconfig("repo:o/r", "rh-1", ["x"])


# -- runners -----------------------------------------------------------------------------


async def test_list_runners_follows_link_header(gh: FakeGitHub, client: GitHubClient) -> None:
    # GitHub's links may name another path (/repositories/{id}/...); only the query is used.
    next_link = (
        '<https://api.github.com/repositories/1/actions/runners?per_page=100&page=2>; rel="next", '
        '<https://api.github.com/repositories/1/actions/runners?per_page=100&page=2>; rel="last"'
    )

    def runners(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return httpx.Response(200, json={"total_count": 3, "runners": [runner_json(3, "c")]})
        body = {"total_count": 3, "runners": [runner_json(1, "a"), runner_json(2, "b")]}
        return httpx.Response(200, json=body, headers={"link": next_link})

    gh.on("GET", "/repos/o/r/actions/runners", runners)
    found = await client.list_runners("repo:o/r")
    assert [r.id for r in found] == [1, 2, 3]
    assert [r.url.host for r in gh.requests] == ["api.github.test"] * 2
    assert gh.requests[0].url.params["per_page"] == "100"
    assert gh.requests[1].url.params["page"] == "2"


async def test_list_runners_pages_without_link(gh: FakeGitHub, client: GitHubClient) -> None:
    def runners(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        count = 100 if page == 1 else 3
        items = [runner_json(page * 1000 + i, f"r{page}-{i}") for i in range(count)]
        return httpx.Response(200, json={"total_count": 103, "runners": items})

    gh.on("GET", "/orgs/acme/actions/runners", runners)
    found = await client.list_runners("org:acme")
    assert len(found) == 103
    assert [r.url.params.get("page") for r in gh.requests] == [None, "2"]


async def test_find_runner_uses_name_filter_and_exact_match(
    gh: FakeGitHub, client: GitHubClient
) -> None:
    body = {"total_count": 2, "runners": [runner_json(1, "rh-10"), runner_json(2, "rh-1")]}
    gh.on("GET", "/repos/o/r/actions/runners", httpx.Response(200, json=body))
    found = await client.find_runner("repo:o/r", "rh-1")
    assert found is not None and found.id == 2
    assert gh.requests[0].url.params["name"] == "rh-1"
    assert await client.find_runner("repo:o/r", "rh-9") is None


async def test_get_runner(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("GET", "/repos/o/r/actions/runners/5", httpx.Response(200, json=runner_json(5, "a")))
    gh.on("GET", "/repos/o/r/actions/runners/6", httpx.Response(404, json={"message": "Not Found"}))
    runner = await client.get_runner("repo:o/r", 5)
    assert runner is not None and runner.status == "online" and runner.busy is False
    assert await client.get_runner("repo:o/r", 6) is None


async def test_delete_runner(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("DELETE", "/orgs/acme/actions/runners/1", httpx.Response(204))
    gh.on("DELETE", "/orgs/acme/actions/runners/2", httpx.Response(404, json={"message": "x"}))
    busy = {"message": 'Bad request - Runner "rh-3" is still running a job"'}
    gh.on("DELETE", "/orgs/acme/actions/runners/3", httpx.Response(422, json=busy))
    assert await client.delete_runner("org:acme", 1) is True
    assert await client.delete_runner("org:acme", 2) is False
    with pytest.raises(RunnerBusy) as info:
        await client.delete_runner("org:acme", 3)
    assert info.value.endpoint == "/orgs/{org}/actions/runners/{runner_id}"
    assert "still running a job" in str(info.value)


# -- runs, jobs, repos -------------------------------------------------------------------


async def test_list_runs_and_jobs(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on(
        "GET",
        "/repos/o/r/actions/runs",
        httpx.Response(200, json={"total_count": 1, "workflow_runs": [{"id": 11}]}),
    )
    gh.on(
        "GET",
        "/repos/o/r/actions/runs/11/jobs",
        httpx.Response(200, json={"total_count": 2, "jobs": [{"id": 1}, {"id": 2}]}),
    )
    assert await client.list_runs("o/r", "queued") == [{"id": 11}]
    assert gh.requests[0].url.params["status"] == "queued"
    assert gh.requests[0].url.params["per_page"] == "100"
    assert await client.list_run_jobs("o/r", 11) == [{"id": 1}, {"id": 2}]
    assert gh.requests[1].url.params["per_page"] == "100"


async def test_get_job(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("GET", "/repos/o/r/actions/jobs/5", httpx.Response(200, json={"id": 5}))
    gh.on("GET", "/repos/o/r/actions/jobs/6", httpx.Response(404, json={"message": "Not Found"}))
    assert await client.get_job("o/r", 5) == {"id": 5}
    assert await client.get_job("o/r", 6) is None


async def test_list_org_repos(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on(
        "GET",
        "/orgs/acme/repos",
        httpx.Response(200, json=[{"full_name": "acme/a"}, {"full_name": "acme/b"}]),
    )
    assert await client.list_org_repos("acme") == ["acme/a", "acme/b"]


async def test_other_404_is_not_found(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("GET", "/orgs/nope/repos", httpx.Response(404, json={"message": "Not Found"}))
    with pytest.raises(NotFound) as info:
        await client.list_org_repos("nope")
    assert str(info.value) == "GitHub GET /orgs/{org}/repos: 404 Not Found"


# -- webhook deliveries ------------------------------------------------------------------


def delivery(delivery_id: int, when: str, status: str = "OK") -> dict[str, Any]:
    return {
        "id": delivery_id,
        "guid": f"guid-{delivery_id}",
        "delivered_at": when,
        "redelivery": False,
        "duration": 0.1,
        "status": status,
        "status_code": 200 if status == "OK" else 502,
        "event": "workflow_job",
        "action": "queued",
        "installation_id": None,
        "repository_id": None,
    }


@pytest.mark.parametrize(
    ("hook", "path", "authorization"),
    [
        (HookTarget.app(), "/app/hook/deliveries", "Bearer app-jwt"),
        (HookTarget.repo("o/r", 9), "/repos/o/r/hooks/9/deliveries", "Bearer install-0"),
        (HookTarget.org("acme", 9), "/orgs/acme/hooks/9/deliveries", "Bearer install-0"),
    ],
)
async def test_list_deliveries_paths_and_auth(
    gh: FakeGitHub, fake_time: FakeTime, hook: HookTarget, path: str, authorization: str
) -> None:
    client = make_client(gh, fake_time, CountingAuth())
    rows = [
        delivery(2, "2024-05-01T12:00:00Z", "failed to connect"),
        delivery(1, "2024-05-01T11:00:00Z"),
    ]
    gh.on("GET", path, httpx.Response(200, json=rows))
    found = await client.list_deliveries(hook)
    assert [d.id for d in found] == [2, 1]
    assert found[0].ok is False and found[1].ok is True
    assert found[0].status_code == 502
    assert found[1].delivered_at == datetime(2024, 5, 1, 11, tzinfo=UTC)
    assert gh.requests[0].headers["authorization"] == authorization
    assert gh.requests[0].url.params["per_page"] == "100"


async def test_list_deliveries_cursor_and_since(gh: FakeGitHub, client: GitHubClient) -> None:
    url = "https://api.github.com/repos/o/r/hooks/9/deliveries?per_page=100"

    def deliveries(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        if cursor is None:
            link = f'<{url}&cursor=v1_3>; rel="next"'
            rows = [delivery(5, "2024-05-01T12:00:00Z"), delivery(4, "2024-05-01T11:00:00Z")]
            return httpx.Response(200, json=rows, headers={"link": link})
        if cursor == "v1_3":
            link = f'<{url}&cursor=v1_1>; rel="next"'
            rows = [delivery(3, "2024-05-01T10:00:00Z"), delivery(2, "2024-05-01T09:00:00Z")]
            return httpx.Response(200, json=rows, headers={"link": link})
        raise AssertionError("read past `since`")

    gh.on("GET", "/repos/o/r/hooks/9/deliveries", deliveries)
    since = datetime(2024, 5, 1, 10, tzinfo=UTC)
    found = await client.list_deliveries(HookTarget.repo("o/r", 9), since=since)
    assert [d.id for d in found] == [5, 4, 3]
    assert gh.requests[1].url.params["cursor"] == "v1_3"
    assert gh.requests[1].url.params["per_page"] == "100"


async def test_list_deliveries_without_link_stops(gh: FakeGitHub, client: GitHubClient) -> None:
    # Cursor pagination: a full page without a Link header is the end, not "page=2".
    rows = [delivery(i, "2024-05-01T12:00:00Z") for i in range(100, 0, -1)]
    gh.on("GET", "/orgs/acme/hooks/9/deliveries", httpx.Response(200, json=rows))
    assert len(await client.list_deliveries(HookTarget.org("acme", 9))) == 100
    assert len(gh.requests) == 1


@pytest.mark.parametrize(
    ("hook", "path", "authorization"),
    [
        (HookTarget.app(), "/app/hook/deliveries/42/attempts", "Bearer app-jwt"),
        (
            HookTarget.repo("o/r", 9),
            "/repos/o/r/hooks/9/deliveries/42/attempts",
            "Bearer install-0",
        ),
        (
            HookTarget.org("acme", 9),
            "/orgs/acme/hooks/9/deliveries/42/attempts",
            "Bearer install-0",
        ),
    ],
)
async def test_redeliver(
    gh: FakeGitHub, fake_time: FakeTime, hook: HookTarget, path: str, authorization: str
) -> None:
    client = make_client(gh, fake_time, CountingAuth())
    gh.on("POST", path, httpx.Response(202, json={}))
    await client.redeliver(hook, 42)
    assert gh.requests[0].headers["authorization"] == authorization


async def test_app_hook_with_pat_is_auth_error(gh: FakeGitHub, client: GitHubClient) -> None:
    with pytest.raises(AuthError) as info:
        await client.list_deliveries(HookTarget.app())
    assert info.value.endpoint == "/app/hook/deliveries"
    assert "GitHub App" in str(info.value)
    assert gh.requests == []


def test_hook_target_from_config() -> None:
    assert HookTarget.from_ref(HookRef(repository="o/r", hook_id=3)) == HookTarget.repo("o/r", 3)
    assert HookTarget.from_ref(HookRef(organization="acme", hook_id=4)) == HookTarget.org("acme", 4)
    with pytest.raises(ValueError):
        HookTarget.repo("not-a-repo", 1)
    with pytest.raises(ValueError):
        HookTarget("app", "o", 1)


# -- retries -----------------------------------------------------------------------------


async def test_get_retried_on_503(
    gh: FakeGitHub, client: GitHubClient, fake_time: FakeTime
) -> None:
    gh.on(
        "GET",
        "/repos/o/r/actions/runners/5",
        httpx.Response(503),
        httpx.Response(502),
        httpx.Response(200, json=runner_json(5, "a")),
    )
    runner = await client.get_runner("repo:o/r", 5)
    assert runner is not None
    assert len(gh.requests) == 3
    assert len(fake_time.sleeps) == 2
    # Exponential backoff with jitter: attempt n waits in [base*2^(n-1)/2, base*2^(n-1)].
    assert 0.1 <= fake_time.sleeps[0] <= 0.2
    assert 0.2 <= fake_time.sleeps[1] <= 0.4


async def test_get_gives_up_after_max_retries(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("GET", "/repos/o/r/actions/runners/5", httpx.Response(503))
    with pytest.raises(Unavailable) as info:
        await client.get_runner("repo:o/r", 5)
    assert len(gh.requests) == 3
    assert str(info.value) == (
        "GitHub GET /repos/{owner}/{repo}/actions/runners/{runner_id}: "
        "503 Service Unavailable (after 3 attempts)"
    )


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
)
async def test_get_retried_on_transport_errors(
    gh: FakeGitHub, client: GitHubClient, exc: Exception
) -> None:
    gh.on("GET", "/orgs/acme/repos", exc, httpx.Response(200, json=[{"full_name": "acme/a"}]))
    assert await client.list_org_repos("acme") == ["acme/a"]
    assert len(gh.requests) == 2


async def test_delete_retried_on_502(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("DELETE", "/orgs/acme/actions/runners/1", httpx.Response(502), httpx.Response(204))
    assert await client.delete_runner("org:acme", 1) is True
    assert len(gh.requests) == 2


async def test_jit_not_retried_on_503(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("POST", "/repos/o/r/actions/runners/generate-jitconfig", httpx.Response(503), jit_reply())
    with pytest.raises(Unavailable) as info:
        await client.generate_jitconfig("repo:o/r", "rh-1", ["x"])
    assert len(gh.requests) == 1
    assert str(info.value) == f"GitHub POST {JIT_REPO}: 503 Service Unavailable"


async def test_jit_not_retried_on_read_timeout(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on(
        "POST",
        "/repos/o/r/actions/runners/generate-jitconfig",
        httpx.ReadTimeout("timed out"),
        jit_reply(),
    )
    with pytest.raises(Unavailable) as info:
        await client.generate_jitconfig("repo:o/r", "rh-1", ["x"])
    assert len(gh.requests) == 1
    assert info.value.status is None
    assert "may have reached GitHub" in str(info.value)


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")])
async def test_jit_retried_when_never_sent(
    gh: FakeGitHub, client: GitHubClient, exc: Exception
) -> None:
    gh.on("POST", "/repos/o/r/actions/runners/generate-jitconfig", exc, jit_reply())
    jit = await client.generate_jitconfig("repo:o/r", "rh-1", ["x"])
    assert jit.runner.id == 7
    assert len(gh.requests) == 2


async def test_connect_errors_give_up(gh: FakeGitHub, client: GitHubClient) -> None:
    gh.on("GET", "/orgs/acme/repos", httpx.ConnectError("refused"))
    with pytest.raises(Unavailable) as info:
        await client.list_org_repos("acme")
    assert len(gh.requests) == 3
    assert str(info.value) == (
        "GitHub GET /orgs/{org}/repos: no response (ConnectError: refused) (after 3 attempts)"
    )


async def test_max_retries_is_configurable(gh: FakeGitHub, fake_time: FakeTime) -> None:
    client = make_client(gh, fake_time, max_retries=1)
    gh.on("GET", "/orgs/acme/repos", httpx.Response(500))
    with pytest.raises(Unavailable):
        await client.list_org_repos("acme")
    assert len(gh.requests) == 1
    assert fake_time.sleeps == []


async def test_401_invalidates_and_retries_once(gh: FakeGitHub, fake_time: FakeTime) -> None:
    auth = CountingAuth()
    client = make_client(gh, fake_time, auth)
    bad = httpx.Response(401, json={"message": "Bad credentials"})
    gh.on("GET", "/orgs/acme/repos", bad, httpx.Response(200, json=[]))
    assert await client.list_org_repos("acme") == []
    assert auth.invalidations == 1
    assert [r.headers["authorization"] for r in gh.requests] == [
        "Bearer install-0",
        "Bearer install-1",
    ]


async def test_401_twice_is_auth_error(gh: FakeGitHub, fake_time: FakeTime) -> None:
    auth = CountingAuth()
    client = make_client(gh, fake_time, auth)
    gh.on(
        "POST",
        "/orgs/acme/actions/runners/generate-jitconfig",
        httpx.Response(401, json={"message": "Bad credentials"}),
    )
    with pytest.raises(AuthError) as info:
        await client.generate_jitconfig("org:acme", "rh-1", ["x"])
    assert len(gh.requests) == 2
    assert auth.invalidations == 1
    assert "401 Unauthorized: Bad credentials" in str(info.value)


async def test_403_without_rate_limit_is_auth_error(gh: FakeGitHub, client: GitHubClient) -> None:
    forbidden = {"message": "Resource not accessible by integration"}
    gh.on("GET", "/orgs/acme/repos", httpx.Response(403, json=forbidden))
    with pytest.raises(AuthError, match="Resource not accessible"):
        await client.list_org_repos("acme")
    assert len(gh.requests) == 1


# -- metrics -----------------------------------------------------------------------------


async def test_calls_are_counted(gh: FakeGitHub, client: GitHubClient) -> None:
    endpoint = "/repos/{owner}/{repo}/actions/runners/{runner_id}"
    before_503 = calls_metric(endpoint, "GET", "503")
    before_200 = calls_metric(endpoint, "GET", "200")
    before_0 = calls_metric(endpoint, "GET", "0")
    gh.on(
        "GET",
        "/repos/o/r/actions/runners/5",
        httpx.Response(503),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=runner_json(5, "a")),
    )
    await client.get_runner("repo:o/r", 5)
    assert calls_metric(endpoint, "GET", "503") == before_503 + 1
    assert calls_metric(endpoint, "GET", "0") == before_0 + 1
    assert calls_metric(endpoint, "GET", "200") == before_200 + 1


# -- lifecycle ---------------------------------------------------------------------------


async def test_from_settings_and_context_manager() -> None:
    settings = GitHubSettings.model_validate(
        {"api_url": "https://ghe.example/api/v3/", "auth": {"token": TOKEN}, "timeout_s": 4}
    )
    async with GitHubClient.from_settings(settings) as client:
        assert repr(client) == (
            "GitHubClient(base_url='https://ghe.example/api/v3', auth=PatAuth(token=<hidden>))"
        )
        http = client._http
        assert http.timeout.read == 4
    assert http.is_closed


async def test_given_http_client_is_not_closed(gh: FakeGitHub, fake_time: FakeTime) -> None:
    client = make_client(gh, fake_time)
    await client.aclose()
    assert not client._http.is_closed


# -- secrets -----------------------------------------------------------------------------


async def test_no_secret_in_errors_reprs_or_logs(
    gh: FakeGitHub, client: GitHubClient, caplog: pytest.LogCaptureFixture
) -> None:
    gh.on("POST", "/repos/o/r/actions/runners/generate-jitconfig", jit_reply())
    gh.on(
        "POST",
        "/orgs/acme/actions/runners/generate-jitconfig",
        httpx.Response(401, json={"message": "Bad credentials"}),
    )
    gh.on("GET", "/orgs/acme/repos", httpx.ReadTimeout("timed out"))
    gh.on(
        "POST",
        "/repos/o/b/actions/runners/generate-jitconfig",
        httpx.Response(422, json={"message": "Validation Failed", "errors": ["bad labels"]}),
    )
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        jit = await client.generate_jitconfig("repo:o/r", "rh-1", ["x"])
        seen += [repr(jit), str(jit), repr(jit.runner), repr(client)]
        for call in (
            client.generate_jitconfig("org:acme", "rh-1", ["x"]),
            client.list_org_repos("acme"),
            client.generate_jitconfig("repo:o/b", "rh-1", ["x"]),
        ):
            with pytest.raises(GitHubError) as info:
                await call
            seen += [str(info.value), repr(info.value), repr(info.value.args)]
    assert any(entry["log_level"] == "warning" for entry in logs)  # the capture works
    seen += [repr(entry) for entry in logs]
    seen.append(caplog.text)
    for text in seen:
        assert TOKEN not in text
        assert ENCODED_JIT not in text
