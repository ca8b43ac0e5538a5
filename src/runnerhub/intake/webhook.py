"""`POST /webhooks/github`: verify, then record durably, then answer (I1, I2).

The checks run cheapest and least revealing first: size (413) before reading, signature
(401) before anything about the content is said, then headers and JSON (400).

While PostgreSQL is unreachable, or does not record a delivery within `webhook.db_wait_s`
(a hung primary, a frozen host, a synchronous standby lost), a verified delivery goes to the
node's spool (fsync'd) and is answered 202 `spooled`; the spool's drainer replays it later
through the same `classify` and recording functions as live intake. A recording that was
only slow goes on and may land after all: the replay then finds its GUID recorded.

From such a delivery on, deliveries go straight to the spool until the drainer records
again: through a failover each would otherwise wait `db_wait_s` first, again and again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from runnerhub import metrics
from runnerhub.config import Settings
from runnerhub.domain.payloads import PayloadError, parse_workflow_job
from runnerhub.domain.pools import Pool as PoolSpec
from runnerhub.domain.pools import match
from runnerhub.domain.scope import Scope
from runnerhub.intake.batcher import IntakeBatcher, record_jobs, record_plain
from runnerhub.intake.drainer import SpoolDrainer
from runnerhub.intake.signature import Verifier
from runnerhub.intake.spool import Spool, SpoolError, SpoolFull, VerifiedDelivery
from runnerhub.logs import Throttle
from runnerhub.store.db import UNAVAILABLE, UNAVAILABLE_OR_SLOW, Pool
from runnerhub.store.deliveries import UNSTORABLE, Delivery, JobDelivery, Recorded

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


def header_int(value: str | None) -> int | None:
    """A header holding a non-negative integer that fits PostgreSQL's bigint, or None.
    `str.isdigit` alone takes "²" and other digits `int` refuses."""
    if value and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _printable(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:limit])


def _unstorable(job_id: int | None) -> Answer:
    return Answer(
        400,
        UNSTORABLE,
        "the payload holds text PostgreSQL cannot store (such as a NUL character); "
        "recorded without it",
        job_id,
    )


@dataclass(frozen=True)
class Plain:
    """A delivery that changes no job, and how to answer it once recorded."""

    delivery: Delivery
    outcome: str
    detail: str | None
    status: int
    message: str
    fixed_outcome: bool = False  # answer `outcome` even when it was a duplicate

    def answer(self, rec: Recorded) -> Answer:
        if rec.outcome == UNSTORABLE:
            return _unstorable(None)
        return Answer(
            self.status, self.outcome if self.fixed_outcome else rec.outcome, self.message
        )


Classified: TypeAlias = Plain | JobDelivery


def job_answer(item: JobDelivery, rec: Recorded) -> Answer:
    job_id = item.obs.job_id
    if rec.outcome == UNSTORABLE:
        return _unstorable(job_id)
    status = 200 if rec.duplicate else 202
    return Answer(status, rec.outcome, f"job {job_id} is {rec.job_state or 'unchanged'}", job_id)


def classify(v: VerifiedDelivery, pools: Sequence[PoolSpec], scope: Scope) -> Classified:
    """What a verified delivery is and how it is to be recorded; pure, so that live intake
    and the spool's replay record a delivery exactly alike."""
    digest = hashlib.sha256(v.body).hexdigest()  # the same signed body again: a duplicate
    try:
        text = v.body.decode("utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser goes (no GitHub payload is).
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        d = Delivery(v.guid, v.event, None, v.hook_id, None, v.node, v.received_at, digest)
        return Plain(
            d, "malformed", f"not JSON: {why}", 400, f"body is not valid JSON: {why}", True
        )
    action = payload.get("action") if isinstance(payload, dict) else None
    d = Delivery(
        v.guid,
        v.event,
        action if isinstance(action, str) else None,
        v.hook_id,
        text,
        v.node,
        v.received_at,
        digest,
    )
    if v.event == "ping":
        return Plain(d, "ping", None, 200, "pong")
    if v.event != "workflow_job":
        return Plain(
            d,
            "ignored",
            f"event {v.event} not used",
            202,
            f"event {v.event!r} recorded and ignored",
        )
    try:
        obs = parse_workflow_job(payload)
    except PayloadError as exc:
        message = f"not a workflow_job payload RunnerHub understands: {exc}"
        return Plain(d, "invalid", str(exc), 400, message, True)
    if obs is None:
        return Plain(d, "null_job", "workflow_job is null", 202, "workflow_job is null; recorded")
    if not scope.covers(obs.repository):
        message = f"repository {obs.repository} is not in scope; recorded"
        return Plain(d, "out_of_scope", obs.repository, 202, message)
    return JobDelivery(d, obs, match(obs.labels, pools))


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
        # A server that answers nothing in a statement's time, and a second more, is hung:
        # its commit is given up (the delivery is in the spool by then).
        statement_s = settings.database.statement_timeout_ms / 1000 or 30.0
        self._deadline_s = statement_s + 1
        self.batcher = IntakeBatcher(
            pool,
            self._node,
            settings.webhook.max_batch,
            settings.webhook.batch_writers,
            deadline_s=self._deadline_s,
        )
        self.spool = Spool.from_settings(settings)
        self.drainer = SpoolDrainer(
            self.spool,
            self.replay,
            settings.spool.drain_interval_s,
            settings.webhook.max_batch,
            deadline_s=self._deadline_s,
            on_recorded=lambda: self._bypass(False),
        )
        self._bypassing = False  # the database failed a delivery; the drainer not yet back
        self._db_wait_s = settings.webhook.db_wait_s
        self._body_timeout_s = settings.webhook.body_timeout_s
        self._refusals = Throttle()

    def start(self) -> None:
        """Start the spool's drainer (the node calls this once its event loop runs)."""
        self.drainer.start()

    async def close(self) -> None:
        await self.drainer.close()
        await self.batcher.close()
        await self.spool.close()

    async def endpoint(self, request: Request) -> Response:
        started = time.perf_counter()
        answer = await self._answer(request)
        metrics.WEBHOOK_DELIVERIES.labels(answer.outcome).inc()
        metrics.WEBHOOK_LATENCY.observe(time.perf_counter() - started)
        held_back = self._refusals.admit(time.monotonic()) if answer.status >= 400 else None
        if held_back is not None:  # anyone can send these: a few lines, not one each
            log.warning(
                "webhook refused",
                status=answer.status,
                outcome=answer.outcome,
                reason=answer.message,
                # The sender chose it: at most a GUID's worth, printable.
                delivery=_printable(request.headers.get("x-github-delivery"), 40),
                **({"refusals_not_logged": held_back} if held_back else {}),
            )
        return answer.response()

    async def _read(self, request: Request, verifier: Verifier) -> bytes | None:
        """The body, fed to `verifier` as it arrives; None when it is larger than allowed
        (checked while reading)."""
        length = header_int(request.headers.get("content-length"))
        if length is not None and length > self._max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                return None
            verifier.update(chunk)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _answer(self, request: Request) -> Answer:
        verifier = Verifier(self._secrets)
        try:
            async with asyncio.timeout(self._body_timeout_s):
                body = await self._read(request, verifier)
        except ClientDisconnect:
            return Answer(400, "disconnected", "the client went away before the body arrived")
        except TimeoutError:
            return Answer(
                408,
                "body_timeout",
                f"the body did not arrive within {self._body_timeout_s:g}s; nothing stored",
            )
        if body is None:
            return Answer(
                413, "too_large", f"body larger than {self._max_body} bytes; nothing stored"
            )
        h = request.headers
        if not verifier.matches(h.get("x-hub-signature-256")):
            return Answer(
                401, "bad_signature", "missing or invalid X-Hub-Signature-256; nothing stored"
            )
        event, guid = h.get("x-github-event"), h.get("x-github-delivery")
        if not event or not guid:
            missing = " and ".join(
                n for n, v in (("X-GitHub-Event", event), ("X-GitHub-Delivery", guid)) if not v
            )
            return Answer(400, "bad_headers", f"missing header {missing}")
        hook_id = header_int(h.get("x-github-hook-id"))
        v = VerifiedDelivery(guid, event, hook_id, body, time.time(), self._node)
        refused: Answer | None = None
        if self.spool.enabled and self._bypassing:
            spooled = await self._spool(v)
            if spooled.status < 500:
                return spooled
            refused = spooled  # the spool cannot take it: the database may, by now
        try:
            # Recorded at once even while older spooled deliveries of the same job wait for
            # the drainer: safe because job state only moves forward (I3; see drainer.py).
            answer = await self._record_within(v)
        except UNAVAILABLE_OR_SLOW as exc:
            slow = isinstance(exc, TimeoutError)
            why = f"no answer within {self._db_wait_s:g}s" if slow else type(exc).__name__
            log.warning("database unavailable", delivery=v.guid[:40], error=why)
            if not self.spool.enabled:
                return Answer(
                    503,
                    "db_unavailable",
                    f"the database is unavailable ({why}); the delivery was not accepted",
                )
            self._bypass(True)
            return refused or await self._spool(v)
        self._bypass(False)
        return answer

    def _bypass(self, on: bool) -> None:
        if on == self._bypassing:  # every recorded delivery comes here: nothing to do
            return
        log.info("deliveries go straight to the spool" if on else "deliveries recorded again")
        self._bypassing = on
        metrics.WEBHOOK_DB_BYPASSED.set(int(on))

    async def _record_within(self, v: VerifiedDelivery) -> Answer:
        """`_record`, waited for `db_wait_s` at most (TimeoutError). The recording itself
        goes on: cut off mid-commit it would leave nothing more certain behind."""
        recording = asyncio.ensure_future(self._record(v))
        try:
            return await asyncio.wait_for(asyncio.shield(recording), self._db_wait_s)
        except TimeoutError:
            metrics.WEBHOOK_DB_WAITS.inc()
            recording.add_done_callback(_late)
            raise

    async def _spool(self, v: VerifiedDelivery) -> Answer:
        try:
            await self.spool.append(v)
        except SpoolFull as exc:
            log.error("spool full; delivery refused", delivery=v.guid, error=str(exc))
            return Answer(
                503, "spool_full", "the database is unavailable and this node's spool is full"
            )
        except SpoolError as exc:
            log.error("spool unusable; delivery refused", delivery=v.guid, error=str(exc))
            return Answer(
                503,
                "spool_unavailable",
                "the database is unavailable and this node cannot spool the delivery",
            )
        return Answer(
            202,
            "spooled",
            "the database is unavailable; the delivery is stored on this node and will be "
            "recorded when it is back",
        )

    async def _record(self, v: VerifiedDelivery) -> Answer:
        c = classify(v, self._pools, self._scope)
        if isinstance(c, Plain):
            recording = record_plain(self._db, c.delivery, c.outcome, c.detail)
            return c.answer(await asyncio.wait_for(recording, self._deadline_s))
        return job_answer(c, await self.batcher.record(c))

    async def replay(self, batch: Sequence[VerifiedDelivery]) -> list[Recorded | Exception]:
        """Record spooled deliveries in journal order, exactly as live intake records them
        (`classify`, then `record_jobs` or `record_plain`): one result or exception each.
        From the first sign that the database is unreachable on, all get that error."""
        results: list[Recorded | Exception] = []
        run: list[JobDelivery] = []  # consecutive job deliveries share a transaction
        for v in batch:
            try:
                c = classify(v, self._pools, self._scope)
            except Exception as exc:  # never block the journal: the drainer quarantines it
                results += await self._record_run(run)
                run = []
                results.append(exc)
                continue
            if isinstance(c, JobDelivery):
                run.append(c)
                continue
            results += await self._record_run(run)
            run = []
            if _unavailable(results) is None:
                try:
                    results.append(await record_plain(self._db, c.delivery, c.outcome, c.detail))
                except Exception as exc:
                    results.append(exc)
            if _unavailable(results) is not None:
                break
        results += await self._record_run(run)
        first = _unavailable(results)
        if first is not None:
            results = results[:first] + [results[first]] * (len(batch) - first)
        return results

    async def _record_run(self, run: list[JobDelivery]) -> list[Recorded | Exception]:
        if not run:
            return []
        try:
            return await record_jobs(self._db, run, self._node)
        except UNAVAILABLE as exc:
            return [exc] * len(run)


def _unavailable(results: list[Recorded | Exception]) -> int | None:
    return next((i for i, r in enumerate(results) if isinstance(r, UNAVAILABLE)), None)


def _late(recording: asyncio.Future[Answer]) -> None:
    """A recording the delivery's answer did not wait for: how it ended, for the log."""
    if recording.cancelled():
        return
    exc = recording.exception()
    if exc is None:
        log.info("a slow recording landed after its delivery was spooled")
    else:
        log.warning("a slow recording failed; its spooled copy stands", error=type(exc).__name__)
