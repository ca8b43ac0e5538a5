"""Signed webhook deliveries from a bounded pool of workers.

Each key (one job, or one redelivery) has its own FIFO and at most one attempt in flight,
so a job's events arrive in order while different jobs go out concurrently. Like GitHub,
a failed delivery is recorded and never retried by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import ssl
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from runnerhub.dev.sim.config import SimConfig
from runnerhub.dev.sim.faults import Faults
from runnerhub.dev.sim.model import Delivery, Job
from runnerhub.dev.sim.shapes import SENDER, job_json, repo_json
from runnerhub.dev.sim.state import SimState

log = logging.getLogger(__name__)
MAX_RESPONSE_BODY = 64 * 1024
USER_AGENT = "GitHub-Hookshot/sim"


@dataclass
class Outgoing:
    key: str
    guid: str
    event: str
    action: str | None
    repository: str | None
    repository_id: int | None
    target_type: str
    target_id: int
    body: str
    redelivery: bool = False


def sign_headers(secret: str, body: bytes) -> dict[str, str]:
    key = secret.encode()
    return {
        "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
    }


def hook_headers(config: SimConfig, out: Outgoing) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-GitHub-Event": out.event,
        "X-GitHub-Delivery": out.guid,
        "X-GitHub-Hook-ID": str(config.hook_id),
        "X-GitHub-Hook-Installation-Target-Type": out.target_type,
        "X-GitHub-Hook-Installation-Target-ID": str(out.target_id),
        **sign_headers(config.webhook_secret, out.body.encode()),
    }


def _failed(status: str) -> tuple[str, int, dict[str, str], str | None]:
    return status, 0, {}, None


class WebhookSender:
    def __init__(self, config: SimConfig, state: SimState, faults: Faults) -> None:
        self.config = config
        self.state = state
        self.faults = faults
        self._queues: dict[str, deque[Outgoing]] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    # -- producing ------------------------------------------------------------------

    def _target(self, owner: str, repository_id: int) -> tuple[str, int]:
        if self.config.app_configured and self.config.app_id is not None:
            return "integration", self.config.app_id
        org_id = self.state.org_id_of(owner)
        if org_id is not None:
            return "organization", org_id
        return "repository", repository_id

    def job_event(self, job: Job, action: str) -> None:
        """Queue a `workflow_job` event with the job as it is now."""
        if not self.config.webhook_url:
            return
        repo = self.state.repo_by_name(job.repository)
        org_id = self.state.org_id_of(repo.owner)
        payload: dict[str, Any] = {
            "action": action,
            "workflow_job": job_json(job, self.state.api_url),
            "repository": repo_json(repo, org_id),
        }
        if org_id is not None:
            payload["organization"] = {"login": repo.owner, "id": org_id}
        payload["sender"] = SENDER
        if self.config.app_configured:
            payload["installation"] = {"id": self.config.installation_id}
        target_type, target_id = self._target(repo.owner, repo.id)
        self.enqueue(
            Outgoing(
                key=f"job:{job.id}",
                guid=str(uuid.uuid4()),
                event="workflow_job",
                action=action,
                repository=repo.full_name,
                repository_id=repo.id,
                target_type=target_type,
                target_id=target_id,
                body=json.dumps(payload, separators=(",", ":")),
            )
        )

    def redeliver(self, delivery: Delivery) -> None:
        """Send a recorded delivery's exact body again, under the same GUID."""
        headers = {k.lower(): v for k, v in delivery.request_headers.items()}
        self.enqueue(
            Outgoing(
                key=f"redelivery:{uuid.uuid4()}",
                guid=delivery.guid,
                event=delivery.event,
                action=delivery.action,
                repository=delivery.repository,
                repository_id=delivery.repository_id,
                target_type=headers.get("x-github-hook-installation-target-type", "repository"),
                target_id=int(headers.get("x-github-hook-installation-target-id", "0")),
                body=delivery.body,
                redelivery=True,
            )
        )

    def enqueue(self, out: Outgoing) -> None:
        queue = self._queues.get(out.key)
        if queue is None:
            self._queues[out.key] = deque([out])
            self._ready.put_nowait(out.key)
        else:
            queue.append(out)

    def pending(self) -> list[Outgoing]:
        return [out for queue in self._queues.values() for out in queue]

    # -- sending --------------------------------------------------------------------

    async def start(self) -> None:
        ca = self.config.webhook_ca
        self._client = httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=ca) if ca else True,
            timeout=self.config.webhook_timeout_s,
            # An idle connection is dropped after 2 s, well before the receiver's own idle
            # timeout (HAProxy's http-keep-alive, 5 s). With httpx's default, also 5 s, one
            # delivery failed without reaching HAProxy (2026-12-07): most likely sent on a
            # connection HAProxy was closing. The warning below now names the error.
            limits=httpx.Limits(max_connections=self.config.webhook_workers, keepalive_expiry=2.0),
            trust_env=False,  # a proxy from the environment must not carry loopback traffic
        )
        self._workers = [
            asyncio.create_task(self._worker(), name=f"webhook-worker-{n}")
            for n in range(self.config.webhook_workers)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            queue = self._queues[key]
            out = queue.popleft()
            try:
                delivery = await self._attempt(out)
            except asyncio.CancelledError:
                queue.appendleft(out)  # unfinished: still pending in a final snapshot
                raise
            finally:
                if queue:
                    self._ready.put_nowait(key)
                else:
                    del self._queues[key]
            self.state.add_delivery(delivery)

    async def _attempt(self, out: Outgoing) -> Delivery:
        headers = hook_headers(self.config, out)
        delivered_at = time.time()
        started = time.monotonic()
        fate = self.faults.webhook_fate()
        if fate == "lose":  # GitHub believes it arrived; only an API sweep can tell
            result: tuple[str, int, dict[str, str], str | None] = ("OK", 200, {}, None)
        elif fate == "drop":
            result = _failed("timed out")
        else:
            result = await self._post(out, headers)
        status, code, response_headers, response_body = result
        return Delivery(
            id=self.state.new_delivery_id(),
            guid=out.guid,
            event=out.event,
            action=out.action,
            repository=out.repository,
            repository_id=out.repository_id,
            installation_id=self.config.installation_id if self.config.app_configured else None,
            redelivery=out.redelivery,
            delivered_at=delivered_at,
            duration=round(time.monotonic() - started, 3),
            status=status,
            status_code=code,
            url=self.config.webhook_url or "",
            request_headers=headers,
            body=out.body,
            response_headers=response_headers,
            response_body=response_body,
        )

    async def _post(
        self, out: Outgoing, headers: dict[str, str]
    ) -> tuple[str, int, dict[str, str], str | None]:
        assert self._client is not None and self.config.webhook_url
        try:
            response = await self._client.post(
                self.config.webhook_url, content=out.body.encode(), headers=headers
            )
        except httpx.TimeoutException:
            return _failed("timed out")
        except Exception as exc:  # refused, reset, bad URL: all "could not connect"
            log.warning("webhook delivery %s failed: %r", out.guid, exc)
            return _failed("failed to connect to host")
        code = response.status_code
        status = "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}"
        return status, code, dict(response.headers), response.text[:MAX_RESPONSE_BODY]


def lost_on_restart(state: SimState, config: SimConfig, pending: list[dict[str, Any]]) -> None:
    """Deliveries still queued when the simulator stopped count as failed, as on GitHub."""
    for fields in pending:
        out = Outgoing(**fields)
        state.add_delivery(
            Delivery(
                id=state.new_delivery_id(),
                guid=out.guid,
                event=out.event,
                action=out.action,
                repository=out.repository,
                repository_id=out.repository_id,
                installation_id=config.installation_id if config.app_configured else None,
                redelivery=out.redelivery,
                delivered_at=time.time(),
                duration=0.0,
                status="failed to connect to host",
                status_code=0,
                url=config.webhook_url or "",
                request_headers=hook_headers(config, out),
                body=out.body,
                response_headers={},
                response_body=None,
            )
        )


def pending_snapshot(sender: WebhookSender) -> list[dict[str, Any]]:
    return [asdict(out) for out in sender.pending()]
