"""The leader key in etcd v3 (aetcd: asyncio over gRPC, the maintained python-etcd3 fork).

Keys: `<prefix>/leader` (JSON {node, url, era}, bound to the leader's lease; its create
revision under its era is the epoch), `<prefix>/handoff` (a step-down request, bound to a short
lease) and `<prefix>/era` (absent: 0; set once per region promotion, `runnerhub dr promote`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aetcd
import grpc
from aetcd import rpc

from runnerhub.ha.dcs import Handoff, LeaderRecord, LeaderStore, StoreUnavailable, Term
from runnerhub.ha.leadership import era_epoch

_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ClientError,
    grpc.RpcError,
    ConnectionError,
    TimeoutError,
)


def _record(value: bytes, create_revision: int) -> LeaderRecord | None:
    try:
        data = json.loads(value)
        epoch = era_epoch(int(data.get("era", 0)), create_revision)
        return LeaderRecord(str(data["node"]), data.get("url"), epoch)
    except (ValueError, KeyError, TypeError):
        return None


class EtcdLeaderStore(LeaderStore):
    def __init__(
        self, endpoints: Sequence[str], prefix: str = "/runnerhub", timeout_s: float = 1.0
    ) -> None:
        self._endpoints = list(endpoints)
        self._prefix = prefix.rstrip("/")
        self._timeout = timeout_s
        self._client: aetcd.Client | None = None
        self._next = 0
        self.leader_key = f"{self._prefix}/leader".encode()
        self.handoff_key = f"{self._prefix}/handoff".encode()
        self.era_key = f"{self._prefix}/era".encode()

    async def _c(self) -> aetcd.Client:
        if self._client is None:
            host, _, port = self._endpoints[self._next % len(self._endpoints)].rpartition(":")
            self._client = aetcd.Client(host=host, port=int(port), timeout=self._timeout)
            await self._client.connect()
        return self._client

    async def _failed(self, exc: BaseException) -> StoreUnavailable:
        """Drop the connection and move to the next member for the next call."""
        client, self._client = self._client, None
        self._next += 1
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                await client.close()
        return StoreUnavailable(f"etcd: {type(exc).__name__}: {exc}")

    async def _call(self, op: str, *args: Any, **kw: Any) -> Any:
        try:
            c = await self._c()
            return await getattr(c, op)(*args, **kw)
        except _ERRORS as exc:
            raise await self._failed(exc) from exc

    async def campaign(self, node: str, url: str | None, ttl_s: float) -> Term | None:
        try:
            c = await self._c()
            era, era_revision = await self._era(c)
            lease = await c.lease(max(1, round(ttl_s)))
            value = json.dumps({"node": node, "url": url, "era": era}).encode()
            ok, responses = await c.transaction(
                compare=[
                    c.transactions.create(self.leader_key) == 0,
                    c.transactions.mod(self.era_key) == era_revision,  # no promotion since
                ],
                success=[c.transactions.put(self.leader_key, value, lease=lease)],
                failure=[],
            )
            if not ok:
                await lease.revoke()
                return None
            # The put's revision is the key's create revision: our epoch, in our era.
            revision = int(responses[0].response_put.header.revision)
            return Term(era_epoch(era, revision), int(lease.id), ttl_s)
        except _ERRORS as exc:
            raise await self._failed(exc) from exc

    async def _era(self, c: aetcd.Client) -> tuple[int, int]:
        """This etcd's era and the revision it was set at (0, 0 when never set)."""
        got = await c.get(self.era_key)
        if got is None:
            return 0, 0
        return int(got.value), int(got.mod_revision)

    async def era(self) -> int:
        try:
            return (await self._era(await self._c()))[0]
        except _ERRORS as exc:
            raise await self._failed(exc) from exc

    async def start_era(self, era: int) -> None:
        """Begin `era` (a promoted region's): only forwards, and only while nobody leads, so
        no leadership spans two eras."""
        try:
            c = await self._c()
            current, revision = await self._era(c)
            if era <= current:
                raise ValueError(f"era {era} is not after this etcd's era {current}")
            ok, _ = await c.transaction(
                compare=[
                    c.transactions.mod(self.era_key) == revision,
                    c.transactions.create(self.leader_key) == 0,
                ],
                success=[c.transactions.put(self.era_key, str(era).encode())],
                failure=[],
            )
        except _ERRORS as exc:
            raise await self._failed(exc) from exc
        if not ok:
            raise StoreUnavailable("the era changed or a leader was elected meanwhile: retry")

    async def keepalive(self, term: Term) -> bool:
        resp = await self._call("refresh_lease", term.lease_id)
        return int(getattr(resp, "TTL", 0)) > 0

    async def resign(self, term: Term) -> None:
        with contextlib.suppress(StoreUnavailable):  # else the lease expires on its own
            await self._call("revoke_lease", term.lease_id)

    async def leader(self) -> tuple[LeaderRecord | None, int]:
        # A raw range request: its header carries the store revision even when the key is
        # missing, and watching from there misses nothing.
        try:
            c = await self._c()
            resp = await c.kvstub.Range(
                rpc.RangeRequest(key=self.leader_key), timeout=self._timeout, metadata=c.metadata
            )
        except _ERRORS as exc:
            raise await self._failed(exc) from exc
        revision = int(resp.header.revision)
        if not resp.kvs:
            return None, revision
        kv = resp.kvs[0]
        return _record(kv.value, int(kv.create_revision)), revision

    async def changes(self, after_revision: int) -> AsyncIterator[LeaderRecord | None]:
        try:
            c = await self._c()
            watch = await c.watch(self.leader_key, start_revision=after_revision + 1)
        except _ERRORS as exc:
            raise await self._failed(exc) from exc
        try:
            async for event in watch:
                if event.kind == aetcd.rtypes.EventKind.DELETE:
                    yield None
                else:
                    yield _record(event.kv.value, event.kv.create_revision)
        except _ERRORS as exc:
            raise await self._failed(exc) from exc
        finally:
            with contextlib.suppress(*_ERRORS):
                await watch.cancel()

    async def put_handoff(self, request: Handoff, ttl_s: float) -> None:
        value = json.dumps({"from_epoch": request.from_epoch, "to": request.target}).encode()
        try:
            c = await self._c()
            lease = await c.lease(max(1, round(ttl_s)))
            await c.put(self.handoff_key, value, lease=lease)
        except _ERRORS as exc:
            raise await self._failed(exc) from exc

    async def handoff(self) -> Handoff | None:
        got = await self._call("get", self.handoff_key)
        if got is None:
            return None
        try:
            data = json.loads(got.value)
            target = data.get("to")
            return Handoff(int(data["from_epoch"]), target if isinstance(target, str) else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                await client.close()
