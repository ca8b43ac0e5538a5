"""The GitHub simulator over real HTTP: REST shapes, auth, rate limits, faults, signed
webhooks to a real receiver, deliveries and redelivery, the runner protocol, persistence."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runnerhub.dev.sim.github import SimConfig, serve
from runnerhub.dev.waiting import wait_until

PAT = "ghp_simtest"
PAT2 = "ghp_other"
SECRET = "hook-secret"
APP_ID = 31337
INSTALLATION_ID = 77
DOCS = "https://docs.github.com/rest"


def free_socket() -> socket.socket:
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


# -- a real webhook receiver ---------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Receiver:
    received: list[Received] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)  # answers for the next requests
    hold: asyncio.Event | None = None  # while set to an unset event, requests hang

    async def endpoint(self, request: Request) -> Response:
        self.received.append(Received(dict(request.headers), await request.body()))
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.popleft() if self.statuses else 200
        return Response(b"thanks", status_code=status)

    def for_job(self, job_id: int) -> list[Received]:
        return [r for r in self.received if r.payload["workflow_job"]["id"] == job_id]


@contextlib.asynccontextmanager
async def run_receiver() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_until(lambda: server.started, what="receiver start")
    try:
        yield receiver, f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        server.should_exit = True
        await task
        sock.close()


# -- the simulator under test --------------------------------------------------------


@contextlib.asynccontextmanager
async def run_sim(config: SimConfig) -> AsyncIterator[str]:
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, "127.0.0.1", 0, ready=ready.set_result))
    waiters: set[asyncio.Future[Any]] = {task, ready}
    await asyncio.wait(waiters, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert ready.done(), "the simulator did not start"
    try:
        yield f"http://127.0.0.1:{ready.result()}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def app_jwt(key: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now - 60, "exp": now + 540, "iss": str(APP_ID)}, key, "RS256")


def base_config(key: rsa.RSAPrivateKey, hook_url: str | None) -> SimConfig:
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return SimConfig(
        webhook_url=hook_url,
        webhook_secret=SECRET,
        hook_id=9,
        repositories=["octo/app", "octo/lib"],
        organizations=["acme"],
        pats=[PAT, PAT2],
        app_id=APP_ID,
        app_public_key_pem=pem,
        installation_id=INSTALLATION_ID,
    )


@dataclass
class World:
    url: str
    api: httpx.AsyncClient  # authenticated with PAT
    receiver: Receiver
    key: rsa.RSAPrivateKey
    receiver_port: int

    async def create_jobs(self, repository: str = "octo/app", **spec: Any) -> list[int]:
        body = {"repository": repository, "labels": ["self-hosted"], "duration_s": 0, **spec}
        response = await self.api.post("/_sim/jobs", json=body)
        assert response.status_code == 201, response.text
        return [job["id"] for job in response.json()["jobs"]]

    async def fate(self, job_id: int) -> dict[str, Any]:
        response = await self.api.get(f"/_sim/jobs/{job_id}")
        result: dict[str, Any] = response.json()
        return result

    async def jit(
        self, scope: str = "repos/octo/app", name: str = "r1", labels: list[str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        body = {"name": name, "runner_group_id": 1, "labels": labels or ["self-hosted"]}
        response = await self.api.post(f"/{scope}/actions/runners/generate-jitconfig", json=body)
        assert response.status_code == 201, response.text
        data = response.json()
        return data["runner"], json.loads(base64.b64decode(data["encoded_jit_config"]))

    async def proto(
        self, config: dict[str, Any], action: str, body: Any = None, token: str | None = None
    ) -> httpx.Response:
        return await self.api.post(
            f"/_sim/runner/{config['runner_id']}/{action}",
            json=body or {},
            headers={"Authorization": f"RunnerToken {token or config['runner_token']}"},
        )

    async def deliveries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self.api.get("/_sim/deliveries")).json()["deliveries"]
        return result


@contextlib.asynccontextmanager
async def world(key: rsa.RSAPrivateKey, **overrides: Any) -> AsyncIterator[World]:
    async with run_receiver() as (receiver, hook_url):
        config = replace(base_config(key, hook_url), **overrides)
        async with (
            run_sim(config) as url,
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {PAT}"}) as api,
        ):
            yield World(url, api, receiver, key, int(hook_url.split(":")[2].split("/")[0]))


def check_error(response: httpx.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["documentation_url"].startswith("https://docs.github.com/")
    if message is not None:
        assert body["message"] == message


# -- auth and rate limits ------------------------------------------------------------


async def test_app_jwt_flow_and_installation_token_expiry(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key, token_ttl_s=1.0) as w, httpx.AsyncClient(base_url=w.url) as anon:
        jwt_auth = {"Authorization": f"Bearer {app_jwt(app_key)}"}
        path = f"/app/installations/{INSTALLATION_ID}/access_tokens"
        created = await anon.post(path, headers=jwt_auth)
        assert created.status_code == 201
        body = created.json()
        assert body["token"].startswith("ghs_")
        assert body["expires_at"].endswith("Z") and body["repository_selection"] == "all"
        assert isinstance(body["permissions"], dict)

        check_error(await anon.post("/app/installations/1/access_tokens", headers=jwt_auth), 404)
        pat_on_app = await anon.post(path, headers={"Authorization": f"Bearer {PAT}"})
        check_error(pat_on_app, 401, "A JSON web token could not be decoded")
        jwt_on_repo = await anon.get("/repos/octo/app/actions/runners", headers=jwt_auth)
        check_error(jwt_on_repo, 401)

        token = {"Authorization": f"token {body['token']}"}
        assert (await anon.get("/repos/octo/app/actions/runners", headers=token)).is_success

        async def expired() -> bool:
            response = await anon.get("/repos/octo/app/actions/runners", headers=token)
            return response.status_code == 401

        await wait_until(expired, what="installation token expiry")
        response = await anon.get("/repos/octo/app/actions/runners", headers=token)
        assert response.json() == {
            "message": "Bad credentials",
            "documentation_url": DOCS,
            "status": "401",
        }


async def test_missing_and_bad_credentials_and_unknown_things(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w, httpx.AsyncClient(base_url=w.url) as anon:
        check_error(await anon.get("/repos/octo/app/actions/runners"), 401)
        bad = await anon.get("/repos/octo/app/actions/runners", headers={"Authorization": "x y"})
        check_error(bad, 401)
        bad = await anon.get(
            "/repos/octo/app/actions/runners", headers={"Authorization": "Bearer nope"}
        )
        check_error(bad, 401, "Bad credentials")
        assert "x-ratelimit-limit" not in bad.headers

        check_error(await w.api.get("/repos/nobody/none/actions/runners"), 404, "Not Found")
        check_error(await w.api.get("/orgs/nobody/actions/runners"), 404, "Not Found")
        check_error(await w.api.get("/repos/octo/app/actions/runners/999"), 404)
        check_error(await w.api.get("/repos/octo/app/actions/jobs/999"), 404)
        check_error(await w.api.get("/no/such/path"), 404, "Not Found")


async def test_rate_limit_headers_and_exhaustion(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key, rate_limit=3) as w:
        remaining = []
        for _ in range(3):
            response = await w.api.get("/repos/octo/app/actions/runners")
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "3"
            assert response.headers["x-ratelimit-resource"] == "core"
            assert int(response.headers["x-ratelimit-reset"]) > time.time()
            remaining.append(response.headers["x-ratelimit-remaining"])
        assert remaining == ["2", "1", "0"]
        # Errors count and carry the headers too.
        response = await w.api.get("/repos/octo/app/actions/runners")
        assert response.status_code == 403
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert response.headers["x-ratelimit-used"] == "3"
        assert response.json()["message"].startswith("API rate limit exceeded for user ID 1.")

        other = {"Authorization": f"token {PAT2}"}
        assert (await w.api.get("/orgs/acme/repos", headers=other)).status_code == 200

        assert (await w.api.delete("/_sim/faults")).status_code == 204  # fresh windows
        response = await w.api.get("/repos/octo/app/actions/runners")
        assert response.headers["x-ratelimit-remaining"] == "2"

        set_fault = await w.api.post("/_sim/faults", json={"rate_limit_remaining": 0})
        assert set_fault.status_code == 200
        response = await w.api.get("/repos/octo/app/actions/runners", headers=other)
        assert response.status_code == 403 and "user ID 2" in response.json()["message"]


async def test_injected_responses_secondary_limits_and_5xx(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        faults = {
            "list-runners": [429, 403],
            "get-job": [502],
            "generate-jitconfig": [409, 503],
        }
        assert (await w.api.post("/_sim/faults", json={"responses": faults})).is_success
        for status in (429, 403):
            response = await w.api.get("/repos/octo/app/actions/runners")
            assert response.status_code == status
            assert response.headers["retry-after"] == "1"
            assert "secondary rate limit" in response.json()["message"]
            assert "x-ratelimit-remaining" in response.headers
        assert (await w.api.get("/repos/octo/app/actions/runners")).status_code == 200

        check_error(await w.api.get("/repos/octo/app/actions/jobs/1"), 502, "Server Error")
        body = {"name": "dup", "runner_group_id": 1, "labels": ["self-hosted"]}
        path = "/repos/octo/app/actions/runners/generate-jitconfig"
        check_error(
            await w.api.post(path, json=body),
            409,
            "Already exists - A runner with the name dup already exists.",
        )
        check_error(await w.api.post(path, json=body), 503)
        assert (await w.api.post(path, json=body)).status_code == 201

        bad = await w.api.post("/_sim/faults", json={"responses": {"nope": [500]}})
        assert bad.status_code == 422 and bad.json()["message"] == "Validation Failed"

        stats = (await w.api.get("/_sim/stats")).json()
        assert stats["api_calls"]["list-runners"] == {"429": 1, "403": 1, "200": 1}
        assert stats["api_calls"]["generate-jitconfig"] == {"409": 1, "503": 1, "201": 1}
        assert stats["jit_configs_issued"] == 1


# -- runners -------------------------------------------------------------------------


async def test_generate_jitconfig_201_409_422(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        labels = ["self-hosted", "linux", "x64", "gpu"]
        runner, config = await w.jit(name="r1", labels=labels)
        assert runner["name"] == "r1" and runner["status"] == "offline"
        assert runner["busy"] is False and runner["ephemeral"] is True
        assert runner["runner_group_id"] == 1
        assert [(x["name"], x["type"]) for x in runner["labels"]] == [
            ("self-hosted", "read-only"),
            ("linux", "read-only"),
            ("x64", "read-only"),
            ("gpu", "custom"),
        ]
        assert config["sim_url"] == w.url
        assert config["runner_id"] == runner["id"] and config["runner_name"] == "r1"
        assert config["labels"] == labels and config["scope"] == "repo:octo/app"
        assert len(config["runner_token"]) >= 32

        org_runner, org_config = await w.jit("orgs/acme", name="r1")  # other scope: fine
        assert org_config["scope"] == "org:acme" and org_runner["id"] != runner["id"]

        path = "/repos/octo/app/actions/runners/generate-jitconfig"
        body = {"name": "r1", "runner_group_id": 1, "labels": ["self-hosted"]}
        check_error(
            await w.api.post(path, json=body),
            409,
            "Already exists - A runner with the name r1 already exists.",
        )
        for bad in (
            {"runner_group_id": 1, "labels": ["a"]},
            {"name": "x", "runner_group_id": 1, "labels": []},
            {"name": "x", "runner_group_id": 1, "labels": [f"l{i}" for i in range(101)]},
            {"name": "x", "runner_group_id": 1, "labels": ["ok", 3]},
            {"name": "x", "runner_group_id": "1", "labels": ["a"]},
            {"name": "x", "runner_group_id": 0, "labels": ["a"]},
            {"name": "x", "labels": ["a"]},
            ["not", "an", "object"],
        ):
            response = await w.api.post(path, json=bad)
            check_error(response, 422, "Validation Failed")
            assert response.json()["errors"]
        response = await w.api.post(path, content=b"{nope")
        check_error(response, 400, "Problems parsing JSON")
        check_error(await w.api.post("/orgs/nobody/actions/runners/generate-jitconfig"), 404)


async def test_runners_list_get_delete_and_pagination(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        ids = [(await w.jit(name=f"r{i}"))[0]["id"] for i in range(5)]
        await w.jit("orgs/acme", name="org-runner")

        page1 = await w.api.get("/repos/octo/app/actions/runners", params={"per_page": 2})
        assert page1.json()["total_count"] == 5
        assert [r["id"] for r in page1.json()["runners"]] == ids[:2]
        assert 'rel="next"' in page1.headers["link"] and 'rel="last"' in page1.headers["link"]
        page3 = await w.api.get(
            "/repos/octo/app/actions/runners", params={"per_page": 2, "page": 3}
        )
        assert [r["id"] for r in page3.json()["runners"]] == ids[4:]
        assert 'rel="next"' not in page3.headers["link"]

        named = await w.api.get("/repos/octo/app/actions/runners", params={"name": "r3"})
        assert [r["id"] for r in named.json()["runners"]] == [ids[3]]
        org = (await w.api.get("/orgs/acme/actions/runners")).json()
        assert [r["name"] for r in org["runners"]] == ["org-runner"]

        one = await w.api.get(f"/repos/octo/app/actions/runners/{ids[0]}")
        assert one.json()["name"] == "r0"
        check_error(await w.api.get(f"/orgs/acme/actions/runners/{ids[0]}"), 404)  # scope

        assert (await w.api.delete(f"/repos/octo/app/actions/runners/{ids[0]}")).status_code == 204
        check_error(await w.api.get(f"/repos/octo/app/actions/runners/{ids[0]}"), 404)
        check_error(await w.api.delete(f"/repos/octo/app/actions/runners/{ids[0]}"), 404)
        listed = (await w.api.get("/repos/octo/app/actions/runners")).json()
        assert listed["total_count"] == 4

        sim_runners = (await w.api.get("/_sim/runners")).json()["runners"]
        deleted = [r for r in sim_runners if r["deleted"]]
        assert [r["id"] for r in deleted] == [ids[0]]
        assert all("runner_token" not in r and "token" not in r for r in sim_runners)


async def test_busy_runner_cannot_be_deleted_and_a_deleted_one_takes_no_job(
    app_key: rsa.RSAPrivateKey,
) -> None:
    async with world(app_key) as w:
        [job_id] = await w.create_jobs()
        runner, config = await w.jit(name="busy")
        assert (await w.proto(config, "session")).status_code == 200
        acquired = await w.proto(config, "acquire?wait_s=1")
        assert acquired.json() == {"job_id": job_id, "duration_s": 0.0, "conclusion": "success"}
        got = (await w.api.get(f"/repos/octo/app/actions/runners/{runner['id']}")).json()
        assert (got["status"], got["busy"]) == ("online", True)

        response = await w.api.delete(f"/repos/octo/app/actions/runners/{runner['id']}")
        check_error(response, 422, 'Bad request - Runner "busy" is still running a job')

        idle, idle_config = await w.jit(name="idle")
        await w.proto(idle_config, "session")
        deleted = await w.api.delete(f"/repos/octo/app/actions/runners/{idle['id']}")
        assert deleted.status_code == 204
        await w.create_jobs()
        assert (await w.proto(idle_config, "acquire?wait_s=0")).status_code == 410


# -- runs and jobs -------------------------------------------------------------------


async def test_runs_and_jobs_listing_status_and_pagination(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        first = await w.create_jobs(count=5, workflow_name="build")
        second = await w.create_jobs(count=1, workflow_name="lint")
        await w.create_jobs("octo/lib")
        runner, config = await w.jit(name="r")
        await w.proto(config, "session")
        assert (await w.proto(config, "acquire?wait_s=1")).json()["job_id"] == first[0]

        runs = (await w.api.get("/repos/octo/app/actions/runs")).json()
        assert runs["total_count"] == 2
        newest, oldest = runs["workflow_runs"]
        assert (newest["name"], newest["status"], newest["conclusion"]) == ("lint", "queued", None)
        assert (oldest["name"], oldest["status"]) == ("build", "in_progress")
        for key in ("id", "run_attempt", "event", "head_branch", "head_sha", "created_at"):
            assert key in oldest
        assert oldest["repository"]["full_name"] == "octo/app"
        assert oldest["repository"]["owner"]["login"] == "octo"

        queued = await w.api.get("/repos/octo/app/actions/runs", params={"status": "queued"})
        assert [r["name"] for r in queued.json()["workflow_runs"]] == ["lint"]
        paged = await w.api.get("/repos/octo/app/actions/runs", params={"per_page": 1})
        assert len(paged.json()["workflow_runs"]) == 1 and 'rel="next"' in paged.headers["link"]

        run_id = oldest["id"]
        jobs_page = await w.api.get(
            f"/repos/octo/app/actions/runs/{run_id}/jobs", params={"per_page": 2, "page": 2}
        )
        assert jobs_page.json()["total_count"] == 5
        assert [j["id"] for j in jobs_page.json()["jobs"]] == first[2:4]
        check_error(await w.api.get(f"/repos/octo/lib/actions/runs/{run_id}/jobs"), 404)

        job = (await w.api.get(f"/repos/octo/app/actions/jobs/{first[0]}")).json()
        assert (job["status"], job["runner_name"], job["runner_id"]) == (
            "in_progress",
            "r",
            runner["id"],
        )
        assert (job["runner_group_id"], job["runner_group_name"]) == (1, "Default")
        assert job["run_id"] == run_id and job["workflow_name"] == "build"
        other = (await w.api.get(f"/repos/octo/app/actions/jobs/{second[0]}")).json()
        assert other["runner_name"] is None and other["conclusion"] is None
        check_error(await w.api.get(f"/repos/octo/lib/actions/jobs/{first[0]}"), 404)

        await w.proto(config, "complete", {"job_id": first[0], "conclusion": "failure"})
        for job_id in first[1:]:
            assert (await w.api.post(f"/_sim/jobs/{job_id}/cancel")).is_success
        done = (await w.api.get(f"/repos/octo/app/actions/runs/{run_id}")).json()
        assert (done["status"], done["conclusion"]) == ("completed", "failure")
        by_conclusion = await w.api.get(
            "/repos/octo/app/actions/runs", params={"status": "failure"}
        )
        assert [r["id"] for r in by_conclusion.json()["workflow_runs"]] == [run_id]


async def test_org_repos(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        for name in ("one", "two", "three"):
            await w.create_jobs(f"acme/{name}")
        repos = await w.api.get("/orgs/acme/repos", params={"per_page": 2})
        assert [r["full_name"] for r in repos.json()] == ["acme/one", "acme/two"]
        assert repos.json()[0]["owner"]["login"] == "acme"
        assert 'rel="next"' in repos.headers["link"]
        check_error(await w.api.get("/orgs/nobody/repos"), 404)


# -- webhooks and deliveries ---------------------------------------------------------


def verify_signatures(received: Received) -> None:
    expected256 = hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    expected1 = hmac.new(SECRET.encode(), received.body, hashlib.sha1).hexdigest()
    assert hmac.compare_digest(received.headers["x-hub-signature-256"], f"sha256={expected256}")
    assert hmac.compare_digest(received.headers["x-hub-signature"], f"sha1={expected1}")


async def test_webhooks_are_signed_complete_and_in_order(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        [job_id] = await w.create_jobs("acme/svc", labels=["self-hosted", "Linux"])
        runner, config = await w.jit("orgs/acme", name="org-r", labels=["self-hosted", "linux"])
        await w.proto(config, "session")
        assert (await w.proto(config, "acquire?wait_s=2")).json()["job_id"] == job_id
        assert (await w.proto(config, "heartbeat")).json() == {
            "job_id": job_id,
            "cancelled": False,
        }
        await w.proto(config, "complete", {"job_id": job_id, "conclusion": "success"})

        got = await wait_until(
            lambda: len(w.receiver.for_job(job_id)) == 3 and w.receiver.for_job(job_id),
            what="three webhooks",
        )
        assert [r.payload["action"] for r in got] == ["queued", "in_progress", "completed"]
        guids = set()
        for received in got:
            verify_signatures(received)
            headers, payload = received.headers, received.payload
            assert headers["x-github-event"] == "workflow_job"
            assert headers["x-github-hook-id"] == "9"
            assert headers["user-agent"] == "GitHub-Hookshot/sim"
            assert headers["content-type"] == "application/json"
            assert headers["x-github-hook-installation-target-type"] == "integration"
            assert headers["x-github-hook-installation-target-id"] == str(APP_ID)
            guids.add(headers["x-github-delivery"])
            assert payload["workflow_job"]["status"] == payload["action"]
            assert payload["repository"]["full_name"] == "acme/svc"
            assert payload["organization"]["login"] == "acme"
            assert payload["installation"] == {"id": INSTALLATION_ID}
            assert payload["sender"]["login"]
        assert len(guids) == 3
        queued, started, completed = (r.payload["workflow_job"] for r in got)
        assert queued["runner_name"] is None and queued["labels"] == ["self-hosted", "Linux"]
        assert (started["runner_name"], started["runner_id"]) == ("org-r", runner["id"])
        assert completed["conclusion"] == "success" and completed["completed_at"]

        deliveries = await wait_until(w.deliveries, what="delivery records")
        assert {(d["status"], d["status_code"], d["redelivery"]) for d in deliveries} == {
            ("OK", 200, False)
        }
        assert {d["guid"] for d in deliveries} == guids
        assert deliveries[0]["installation_id"] == INSTALLATION_ID
        fate = await w.fate(job_id)
        assert fate["executions"] == ["org-r"] and fate["conclusion"] == "success"


async def test_repo_hook_without_app_or_org(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key, app_id=None, app_public_key_pem=None, installation_id=None) as w:
        [job_id] = await w.create_jobs("octo/lib")
        [received] = await wait_until(lambda: w.receiver.for_job(job_id), what="a webhook")
        assert received.headers["x-github-hook-installation-target-type"] == "repository"
        assert "organization" not in received.payload
        assert "installation" not in received.payload
        assert received.payload["repository"]["owner"]["type"] == "User"


async def test_failed_dropped_and_lost_deliveries_are_recorded_not_retried(
    app_key: rsa.RSAPrivateKey,
) -> None:
    async with world(app_key) as w:
        w.receiver.statuses.append(503)
        [failed] = await w.create_jobs()
        await wait_until(lambda: w.receiver.for_job(failed), what="the 503 attempt")

        await w.api.post("/_sim/faults", json={"drop_webhooks": 1.0})
        [dropped] = await w.create_jobs()
        await w.api.post("/_sim/faults", json={"drop_webhooks": 0.0, "lose_webhooks": 1.0})
        [lost] = await w.create_jobs()

        async def three_records() -> list[dict[str, Any]] | None:
            records = await w.deliveries()
            return records if len(records) == 3 else None

        records = await wait_until(three_records, what="three delivery records")
        for d in records:  # GitHub's time to the second; the simulator's own, exact
            at = datetime.fromisoformat(d["delivered_at"]).timestamp()
            assert at <= d["delivered_at_s"] < at + 1, d
        by_job = {
            json.loads(json.dumps(d["request"]["payload"]))["workflow_job"]["id"]: d
            for d in records
        }
        assert (by_job[failed]["status"], by_job[failed]["status_code"]) == (
            "Invalid HTTP Response: 503",
            503,
        )
        assert by_job[failed]["response"]["payload"] == "thanks"
        assert (by_job[dropped]["status"], by_job[dropped]["status_code"]) == ("timed out", 0)
        assert (by_job[lost]["status"], by_job[lost]["status_code"]) == ("OK", 200)
        assert w.receiver.for_job(dropped) == [] and w.receiver.for_job(lost) == []

        # A later event of the failed job is delivered; the failed one never came again.
        await w.api.delete("/_sim/faults")
        await w.api.post(f"/_sim/jobs/{failed}/cancel")
        await wait_until(lambda: len(w.receiver.for_job(failed)) == 2, what="the cancel event")
        assert [r.payload["action"] for r in w.receiver.for_job(failed)] == [
            "queued",
            "completed",
        ]
        stats = (await w.api.get("/_sim/stats")).json()
        assert stats["deliveries"]["Invalid HTTP Response: 503"] == 1


async def test_unreachable_receiver_is_a_failed_connection(app_key: rsa.RSAPrivateKey) -> None:
    closed = free_socket()
    port = closed.getsockname()[1]
    closed.close()
    async with world(app_key, webhook_url=f"http://127.0.0.1:{port}/hook") as w:
        await w.create_jobs()
        [record] = await wait_until(w.deliveries, what="a delivery record")
        assert (record["status"], record["status_code"]) == ("failed to connect to host", 0)


async def test_a_hook_re_pointed_delivers_there_from_then_on(app_key: rsa.RSAPrivateKey) -> None:
    # What a region failover does: the hook's URL changes; a failed delivery redelivered
    # and every new one go to the new URL, with the same secret.
    closed = free_socket()
    port = closed.getsockname()[1]
    closed.close()
    async with world(app_key, webhook_url=f"http://127.0.0.1:{port}/hook") as w:
        [before] = await w.create_jobs()
        [failed] = await wait_until(w.deliveries, what="the failed delivery")
        config = (await w.api.get("/repos/octo/app/hooks/9/config")).json()
        assert config == {
            "content_type": "json",
            "insecure_ssl": "0",
            "secret": "********",
            "url": f"http://127.0.0.1:{port}/hook",
        }
        receiver_url = f"http://127.0.0.1:{w.receiver_port}/hook"
        r = await w.api.patch("/orgs/acme/hooks/9/config", json={"url": receiver_url})
        assert (r.status_code, r.json()["url"], r.json()["secret"]) == (
            200,
            receiver_url,
            "********",
        )
        assert (await w.api.get("/orgs/acme/hooks/9/config")).json()["url"] == receiver_url

        redo = await w.api.post(f"/repos/octo/app/hooks/9/deliveries/{failed['id']}/attempts")
        assert redo.status_code == 202
        [again] = await wait_until(lambda: w.receiver.for_job(before), what="the redelivery")
        assert again.headers["x-github-delivery"] == failed["guid"]
        [after] = await w.create_jobs()
        [new] = await wait_until(lambda: w.receiver.for_job(after), what="a new delivery")
        digest = hmac.new(SECRET.encode(), new.body, hashlib.sha256).hexdigest()
        assert new.headers["x-hub-signature-256"] == f"sha256={digest}"

        # Bad input: GitHub's 422 with the field, 404 for a hook that is not there, and the
        # configuration unchanged.
        for body, field_name in (
            ({"url": "ftp://example.com/hook"}, "url"),
            ({"url": 7}, "url"),
            ({"content_type": "xml"}, "content_type"),
            ({"secret": 1}, "secret"),
            ({"insecure_ssl": "2"}, "insecure_ssl"),
        ):
            bad = await w.api.patch("/orgs/acme/hooks/9/config", json=body)
            check_error(bad, 422)
            assert bad.json()["errors"][0]["field"] == field_name
        check_error(await w.api.patch("/orgs/acme/hooks/8/config", json={"url": receiver_url}), 404)
        check_error(await w.api.get("/orgs/nobody/hooks/9/config"), 404)
        assert (await w.api.get("/orgs/acme/hooks/9/config")).json()["url"] == receiver_url


async def test_redelivery_keeps_the_guid_and_deliveries_paginate(
    app_key: rsa.RSAPrivateKey,
) -> None:
    async with world(app_key) as w:
        w.receiver.statuses.append(500)
        [job_id] = await w.create_jobs()
        await w.create_jobs(count=2)
        await wait_until(lambda: len(w.receiver.received) == 3, what="three webhooks")
        original = w.receiver.for_job(job_id)[0]

        items = await wait_until(
            lambda: listed_n(w, "/repos/octo/app/hooks/9/deliveries", 3), what="three deliveries"
        )
        assert [d["id"] for d in items] == sorted((d["id"] for d in items), reverse=True)
        [failed] = [d for d in items if d["status_code"] == 500]
        assert failed["guid"] == original.headers["x-github-delivery"]
        assert set(failed) >= {
            "id",
            "guid",
            "delivered_at",
            "redelivery",
            "duration",
            "status",
            "status_code",
            "event",
            "action",
            "installation_id",
            "repository_id",
        }
        assert (failed["event"], failed["action"]) == ("workflow_job", "queued")

        detail = (await w.api.get(f"/repos/octo/app/hooks/9/deliveries/{failed['id']}")).json()
        assert detail["request"]["payload"] == original.payload
        assert detail["request"]["headers"]["X-GitHub-Delivery"] == failed["guid"]
        assert detail["response"]["payload"] == "thanks"

        attempt = await w.api.post(f"/repos/octo/app/hooks/9/deliveries/{failed['id']}/attempts")
        assert (attempt.status_code, attempt.json()) == (202, {})
        again = await wait_until(
            lambda: len(w.receiver.for_job(job_id)) == 2 and w.receiver.for_job(job_id)[1],
            what="the redelivery",
        )
        assert again.headers["x-github-delivery"] == failed["guid"]
        assert again.body == original.body
        verify_signatures(again)

        items = await wait_until(
            lambda: listed_n(w, "/repos/octo/app/hooks/9/deliveries", 4), what="four deliveries"
        )
        newest = items[0]
        assert (newest["guid"], newest["redelivery"], newest["status"]) == (
            failed["guid"],
            True,
            "OK",
        )
        assert newest["id"] > failed["id"]

        # Cursor pagination, newest first, through the Link header.
        seen: list[int] = []
        url: str | None = "/repos/octo/app/hooks/9/deliveries?per_page=3"
        while url:
            page = await w.api.get(url)
            seen += [d["id"] for d in page.json()]
            link = page.headers.get("link")
            url = link.split(">")[0].lstrip("<") if link else None
            assert url is None or "cursor=" in url
        assert seen == [d["id"] for d in items]

        # The same hook seen from the org (none of its repos) and from the App (all).
        assert (await w.api.get("/orgs/acme/hooks/9/deliveries")).json() == []
        app_auth = {"Authorization": f"Bearer {app_jwt(app_key)}"}
        app_items = (await w.api.get("/app/hook/deliveries", headers=app_auth)).json()
        assert [d["id"] for d in app_items] == seen
        check_error(await w.api.get("/repos/octo/app/hooks/8/deliveries"), 404)
        check_error(await w.api.get("/repos/octo/lib/hooks/9/deliveries/" + str(seen[0])), 404)
        check_error(await w.api.post("/repos/octo/app/hooks/9/deliveries/1/attempts"), 404)


async def listed_n(w: World, path: str, n: int) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = (await w.api.get(path)).json()
    return items if len(items) == n else None


# -- runner protocol -----------------------------------------------------------------


async def test_runner_protocol_assignment_rule_and_tokens(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        [lib_job] = await w.create_jobs("octo/lib", labels=["self-hosted"])
        [gpu_job] = await w.create_jobs("octo/app", labels=["self-hosted", "GPU"])
        [cpu_job] = await w.create_jobs("octo/app", labels=["self-hosted"])
        [org_job] = await w.create_jobs("acme/x", labels=["self-hosted"])

        _, app_cpu = await w.jit(name="cpu", labels=["self-hosted", "linux"])
        _, app_gpu = await w.jit(name="gpu", labels=["Self-Hosted", "gpu"])
        _, org = await w.jit("orgs/acme", name="org", labels=["self-hosted"])

        assert (await w.proto(app_cpu, "session", token="wrong")).status_code == 401
        for config in (app_cpu, app_gpu, org):
            assert (await w.proto(config, "session")).status_code == 200
        assert (await w.proto(app_cpu, "session")).status_code == 409  # single use

        taken = {}
        for config in (app_cpu, app_gpu, org):
            response = await w.proto(config, "acquire?wait_s=0")
            taken[config["runner_name"]] = response.json()["job_id"]
        assert taken == {"cpu": cpu_job, "gpu": gpu_job, "org": org_job}
        assert (await w.fate(lib_job))["status"] == "queued"  # no runner may serve octo/lib

        runners = {r["name"]: r for r in (await w.api.get("/_sim/runners")).json()["runners"]}
        assert all(runners[n]["busy"] and runners[n]["status"] == "online" for n in taken)

        # Long poll: an idle runner gets a job queued while it waits.
        _, late = await w.jit("repos/octo/lib", name="late")
        await w.proto(late, "session")
        poll = asyncio.create_task(w.proto(late, "acquire?wait_s=5"))
        assert (await poll).json()["job_id"] == lib_job  # was already queued: immediate
        _, later = await w.jit("repos/octo/lib", name="later")
        await w.proto(later, "session")
        poll = asyncio.create_task(w.proto(later, "acquire?wait_s=5"))

        async def polling() -> bool:
            runners = (await w.api.get("/_sim/runners")).json()["runners"]
            return any(r["name"] == "later" and r["polling"] for r in runners)

        await wait_until(polling, what="the long poll to start")
        [new_job] = await w.create_jobs("octo/lib")
        assert (await poll).json()["job_id"] == new_job
        assert (await w.proto(later, "acquire?wait_s=0")).status_code == 409

        for name, job_id in taken.items():
            config = {"cpu": app_cpu, "gpu": app_gpu, "org": org}[name]
            done = await w.proto(config, "complete", {"job_id": job_id, "conclusion": "success"})
            assert done.status_code == 200
            assert (await w.proto(config, "heartbeat")).status_code == 410
            fate = await w.fate(job_id)
            assert (fate["status"], fate["executions"]) == ("completed", [name])

        empty = await w.proto(late, "acquire?wait_s=0")
        assert empty.status_code == 409  # still holds lib_job
        _, idle = await w.jit(name="idle")
        await w.proto(idle, "session")
        assert (await w.proto(idle, "acquire?wait_s=0.1")).status_code == 204
        stats = (await w.api.get("/_sim/stats")).json()
        assert stats["runners"]["deleted"] == 3 and stats["runners"]["busy"] == 2


async def test_lost_runner_fails_its_job_after_the_heartbeat_timeout(
    app_key: rsa.RSAPrivateKey,
) -> None:
    async with world(app_key, runner_heartbeat_timeout_s=0.5) as w:
        [job_id] = await w.create_jobs(duration_s=60)
        _, config = await w.jit(name="lost")
        await w.proto(config, "session")
        await w.proto(config, "acquire?wait_s=1")

        async def failed() -> bool:
            return bool((await w.fate(job_id))["status"] == "completed")

        await wait_until(failed, timeout_s=5, what="the lost runner's job to fail")
        fate = await w.fate(job_id)
        assert (fate["conclusion"], fate["executions"]) == ("failure", ["lost"])
        assert (await w.proto(config, "heartbeat")).status_code == 410
        events = await wait_until(
            lambda: len(w.receiver.for_job(job_id)) == 3 and w.receiver.for_job(job_id),
            what="the completed webhook",
        )
        assert events[-1].payload["workflow_job"]["conclusion"] == "failure"


async def test_control_api_validation_cancel_and_stats(app_key: rsa.RSAPrivateKey) -> None:
    async with world(app_key) as w:
        assert (await w.api.get("/_sim/healthz")).status_code == 200
        for bad in (
            {"repository": "octo/app"},
            {"repository": "octo/app", "labels": []},
            {"repository": "octo/app", "labels": ["x"], "count": 0},
            {"repository": "octo/app", "labels": ["x"], "duration_s": -1},
            {"repository": "octo/app", "labels": ["x"], "conclusion": "great"},
            {"labels": ["x"]},
        ):
            check_error(await w.api.post("/_sim/jobs", json=bad), 422)
        check_error(
            await w.api.post("/_sim/jobs", json={"repository": "no/repo", "labels": ["x"]}), 404
        )
        check_error(await w.api.get("/_sim/jobs/1"), 404)

        [job_id] = await w.create_jobs(conclusion="failure")
        cancelled = (await w.api.post(f"/_sim/jobs/{job_id}/cancel")).json()
        assert (cancelled["status"], cancelled["conclusion"]) == ("completed", "cancelled")
        assert cancelled["executions"] == []
        check_error(await w.api.post(f"/_sim/jobs/{job_id}/cancel"), 409)
        await w.create_jobs(count=2)
        queued = (await w.api.get("/_sim/jobs", params={"status": "queued"})).json()["jobs"]
        assert len(queued) == 2
        stats = (await w.api.get("/_sim/stats")).json()
        assert stats["jobs"] == {"queued": 2, "in_progress": 0, "completed": 1}
        assert stats["conclusions"] == {"cancelled": 1}


# -- persistence and the command line ------------------------------------------------


async def test_state_survives_a_restart(app_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    state_file = tmp_path / "sim.json"
    async with world(app_key, state_file=state_file) as w:
        [done, waiting] = await w.create_jobs(count=2)
        runner, config = await w.jit(name="r")
        _, kept = await w.jit(name="kept")
        await w.proto(config, "session")
        await w.proto(config, "acquire?wait_s=1")
        await w.proto(config, "complete", {"job_id": done, "conclusion": "success"})
        await wait_until(lambda: len(w.receiver.received) == 4, what="four webhooks")
        # Written while running (debounced), not only at shutdown.
        await wait_until(
            lambda: state_file.exists() and '"executions":["r"]' in state_file.read_text(),
            what="a snapshot on disk",
        )
        before = await w.deliveries()

    async with world(app_key, state_file=state_file) as w:
        fate = await w.fate(done)
        assert (fate["status"], fate["executions"]) == ("completed", ["r"])
        assert (await w.fate(waiting))["status"] == "queued"
        assert [d["guid"] for d in await w.deliveries()] == [d["guid"] for d in before]
        names = [
            r["name"]
            for r in (await w.api.get("/repos/octo/app/actions/runners")).json()["runners"]
        ]
        assert names == ["kept"]
        [new] = await w.create_jobs()
        assert new > waiting
        # The restored registration still works with its old token.
        assert (await w.proto(kept, "session")).status_code == 200
        assert (await w.proto(kept, "acquire?wait_s=0")).json()["job_id"] == waiting
        check_error(await w.api.get(f"/repos/octo/app/actions/runners/{runner['id']}"), 404)


async def test_webhooks_pending_at_shutdown_are_failed_deliveries_after_restart(
    app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    state_file = tmp_path / "sim.json"
    async with world(app_key, state_file=state_file, webhook_workers=1) as w:
        w.receiver.hold = asyncio.Event()  # the receiver never answers
        await w.create_jobs(count=3)
        await wait_until(lambda: w.receiver.received, what="the first attempt")
    async with world(app_key, state_file=state_file) as w:
        records = await w.deliveries()
        assert len(records) == 3
        assert {(d["status"], d["status_code"]) for d in records} == {
            ("failed to connect to host", 0)
        }
        assert len({d["guid"] for d in records}) == 3


async def test_main_serves_writes_the_ready_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    state_file = tmp_path / "state.json"
    env = {**os.environ, "RUNNERHUB_SIM_PATS": "envpat", "RUNNERHUB_SIM_WEBHOOK_SECRET": "s"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runnerhub.dev.sim.github",
        "--port",
        "0",
        "--repo",
        "octo/app",
        "--state-file",
        str(state_file),
        "--ready-file",
        str(ready_file),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(ready_file.exists, timeout_s=20, what="the ready file")
        ready = json.loads(ready_file.read_text())
        assert ready["pid"] == process.pid
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ready['port']}") as client:
            assert (await client.get("/_sim/healthz")).status_code == 200
            response = await client.get(
                "/repos/octo/app/actions/runners", headers={"Authorization": "token envpat"}
            )
            assert response.status_code == 200
            await client.post("/_sim/jobs", json={"repository": "octo/app", "labels": ["x"]})
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        assert json.loads(state_file.read_text())["jobs"]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
