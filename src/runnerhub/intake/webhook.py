"""`POST /webhooks/github`: verify, then record durably, then answer (I1, I2).

The checks run cheapest and least revealing first: size (413) before reading, signature
(401) before anything about the content is said, then headers and JSON (400).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from runnerhub import metrics
from runnerhub.config import Settings
from runnerhub.domain.events import PayloadError, parse_workflow_job
from runnerhub.domain.pools import Pool as PoolSpec
from runnerhub.domain.pools import match
from runnerhub.intake.batcher import IntakeBatcher
from runnerhub.intake.signature import verify
from runnerhub.store import deliveries
from runnerhub.store.db import UNAVAILABLE, Pool

log = structlog.get_logger("runnerhub.intake")


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: str
    message: str
    job_id: int | None = None

    def response(self) -> Response:
        body: dict[str, object] = {"outcome": self.outcome, "message": self.message}
        if self.job_id is not None:
            body["job_id"] = self.job_id
        return JSONResponse(body, status_code=self.status)


class Scope:
    """Which repositories are ours to serve (empty lists: every repository)."""

    def __init__(self, repositories: Sequence[str], organizations: Sequence[str]) -> None:
        self._repos = {r.lower() for r in repositories}
        self._orgs = {o.lower() for o in organizations}

    def covers(self, repository: str) -> bool:
        if not self._repos and not self._orgs:
            return True
        repo = repository.lower()
        return repo in self._repos or repo.split("/", 1)[0] in self._orgs


class WebhookIntake:
    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._secrets = [s.get_secret_value().encode() for s in settings.webhook.secrets]
        self._max_body = settings.webhook.max_body_bytes
        self._node = settings.node.id
        self._pools = [
            PoolSpec.of(p.name, p.labels, p.min_idle, p.max_runners) for p in settings.pools
        ]
        self._scope = Scope(settings.github.repositories, settings.github.organizations)
        self._db = pool
        self.batcher = IntakeBatcher(
            pool, self._node, settings.webhook.max_batch, settings.webhook.batch_writers
        )

    async def endpoint(self, request: Request) -> Response:
        started = time.perf_counter()
        answer = await self._answer(request)
        metrics.WEBHOOK_DELIVERIES.labels(answer.outcome).inc()
        metrics.WEBHOOK_LATENCY.observe(time.perf_counter() - started)
        if answer.status >= 400:
            log.warning(
                "webhook refused",
                status=answer.status,
                outcome=answer.outcome,
                reason=answer.message,
                delivery=request.headers.get("x-github-delivery"),
            )
        return answer.response()

    async def _read(self, request: Request) -> bytes | None:
        """The body, or None when it is larger than allowed (checked while reading)."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _answer(self, request: Request) -> Answer:
        try:
            body = await self._read(request)
        except ClientDisconnect:
            return Answer(400, "disconnected", "the client went away before the body arrived")
        if body is None:
            return Answer(
                413, "too_large", f"body larger than {self._max_body} bytes; nothing stored"
            )
        h = request.headers
        if not verify(self._secrets, body, h.get("x-hub-signature-256")):
            return Answer(
                401, "bad_signature", "missing or invalid X-Hub-Signature-256; nothing stored"
            )
        event, guid = h.get("x-github-event"), h.get("x-github-delivery")
        if not event or not guid:
            missing = " and ".join(
                n for n, v in (("X-GitHub-Event", event), ("X-GitHub-Delivery", guid)) if not v
            )
            return Answer(400, "bad_headers", f"missing header {missing}")
        hook = h.get("x-github-hook-id")
        hook_id = int(hook) if hook and hook.isdigit() else None
        try:
            return await self._record(event, guid, hook_id, body)
        except UNAVAILABLE as exc:
            log.error(
                "database unavailable; delivery refused", delivery=guid, error=type(exc).__name__
            )
            return Answer(
                503, "db_unavailable", "the database is unavailable; the delivery was not accepted"
            )

    async def _record(self, event: str, guid: str, hook_id: int | None, body: bytes) -> Answer:
        try:
            text = body.decode("utf-8")
            payload = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            d = deliveries.Delivery(guid, event, None, hook_id, None, self._node)
            await deliveries.record(self._db, d, "malformed", f"not JSON: {exc}")
            return Answer(400, "malformed", f"body is not valid JSON: {exc}")
        action = payload.get("action") if isinstance(payload, dict) else None
        d = deliveries.Delivery(
            guid, event, action if isinstance(action, str) else None, hook_id, text, self._node
        )
        if event == "ping":
            rec = await deliveries.record(self._db, d, "ping")
            return Answer(200, rec.outcome, "pong")
        if event != "workflow_job":
            rec = await deliveries.record(self._db, d, "ignored", f"event {event} not used")
            return Answer(202, rec.outcome, f"event {event!r} recorded and ignored")
        try:
            obs = parse_workflow_job(payload)
        except PayloadError as exc:
            await deliveries.record(self._db, d, "invalid", str(exc))
            return Answer(
                400, "invalid", f"not a workflow_job payload RunnerHub understands: {exc}"
            )
        if obs is None:
            rec = await deliveries.record(self._db, d, "null_job", "workflow_job is null")
            return Answer(202, rec.outcome, "workflow_job is null; recorded")
        if not self._scope.covers(obs.repository):
            rec = await deliveries.record(self._db, d, "out_of_scope", obs.repository)
            return Answer(
                202, rec.outcome, f"repository {obs.repository} is not in scope; recorded"
            )
        rec = await self.batcher.record(
            deliveries.JobDelivery(d, obs, match(obs.labels, self._pools))
        )
        if rec.outcome == deliveries.UNSTORABLE:
            return Answer(
                400,
                rec.outcome,
                "the payload holds text PostgreSQL cannot store "
                "(such as a NUL character); recorded without it",
                obs.job_id,
            )
        status = 200 if rec.duplicate else 202
        return Answer(
            status, rec.outcome, f"job {obs.job_id} is {rec.job_state or 'unchanged'}", obs.job_id
        )
