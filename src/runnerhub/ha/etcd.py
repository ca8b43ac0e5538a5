"""The leader key in etcd v3 (aetcd: asyncio over gRPC, the maintained python-etcd3 fork).

Keys: `<prefix>/leader` (JSON {node, url, era}, bound to the leader's lease; its create
revision under its era is the epoch), `<prefix>/handoff` (a step-down request, bound to a short
lease) and `<prefix>/era` (absent: 0; set once per region promotion, `runnerhub dr promote`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aetcd
import grpc
from aetcd import rpc

from runnerhub.config import ConfigError, HASettings
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


@dataclass(frozen=True)
class EtcdAccess:
    """How to reach etcd: a user, and TLS (the CA to check etcd against; a client
    certificate and key to show it). Empty: plain gRPC, no authentication."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, ha: HASettings) -> EtcdAccess:
        """From the settings; the files are read now (a missing one fails the node's start
        with its name, not the first election)."""

        def read(path: Path | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"ha.{what}: cannot read {path}: {exc.strerror}") from None

        return cls(
            ha.etcd_username,
            ha.etcd_password.get_secret_value() if ha.etcd_password else None,
            read(ha.etcd_ca_file, "etcd_ca_file"),
            read(ha.etcd_cert_file, "etcd_cert_file"),
            read(ha.etcd_key_file, "etcd_key_file"),
        )

    def client(self, host: str, port: int, timeout_s: float) -> aetcd.Client:
        if self.ca is None:
            return aetcd.Client(host, port, self.username, self.password, timeout=timeout_s)
        creds = grpc.ssl_channel_credentials(self.ca, self.key, self.cert)
        return _TlsClient(creds, host, port, self.username, self.password, timeout=timeout_s)


class MemberStatusReader:
    """Each member's status over gRPC, with the node's access: what the health check reads
    when etcd has TLS or users (etcd's HTTP gateway refuses a request that carries a client
    certificate once authentication is on). One connection per member, made again after
    an error."""

    def __init__(self, access: EtcdAccess, timeout_s: float) -> None:
        self._access = access
        self._timeout = timeout_s
        self._clients: dict[str, aetcd.Client] = {}

    async def __call__(self, endpoint: str) -> dict[str, Any]:
        client = self._clients.get(endpoint)
        try:
            if client is None:
                host, _, port = endpoint.rpartition(":")
                client = self._access.client(host, int(port), self._timeout)
                await client.connect()  # stored once connected: never half made
                self._clients[endpoint] = client
            resp = await client.maintenancestub.Status(
                rpc.StatusRequest(), timeout=self._timeout, metadata=client.metadata
            )
        except _ERRORS as exc:
            self._clients.pop(endpoint, None)
            if client is not None:
                with contextlib.suppress(*_ERRORS):
                    await client.close()
            raise StoreUnavailable(f"etcd {endpoint}: {type(exc).__name__}") from None
        return {
            "member_id": str(resp.header.member_id),
            "leader": str(resp.leader),
            "raft_term": int(resp.raftTerm),
            "db_size": int(resp.dbSize),
        }

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(*_ERRORS):
                await client.close()


class _TlsClient(aetcd.Client):  # type: ignore[misc]  # aetcd has no type hints
    """aetcd 1.0 opens only plain gRPC channels: this is its `connect` over TLS (the same
    steps: channel, authentication, stubs, watcher), with the channel made secure."""

    def __init__(self, credentials: grpc.ChannelCredentials, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            self.channel = rpc.secure_channel(
                target, self._credentials, options=self._options.items()
            )
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                resp = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


class EtcdLeaderStore(LeaderStore):
    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/runnerhub",
        timeout_s: float = 1.0,
        access: EtcdAccess | None = None,
    ) -> None:
        self._access = access or EtcdAccess()
        self._endpoints = list(endpoints)
        self._prefix = prefix.rstrip("/")
        self._timeout = timeout_s
        self._client: aetcd.Client | None = None
        self._connecting = asyncio.Lock()
        self._next = 0
        self.leader_key = f"{self._prefix}/leader".encode()
        self.handoff_key = f"{self._prefix}/handoff".encode()
        self.era_key = f"{self._prefix}/era".encode()

    async def _c(self) -> aetcd.Client:
        """The connected client. Callers run concurrently (the election, the health
        check) and a connection over TLS with a user takes a few round trips: one connects
        while the others wait, and none is handed a client that is not connected yet."""
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is None:
                host, _, port = self._endpoints[self._next % len(self._endpoints)].rpartition(":")
                client = self._access.client(host, int(port), self._timeout)
                try:
                    await client.connect()
                except BaseException:
                    with contextlib.suppress(*_ERRORS):
                        await client.close()
                    raise
                self._client = client
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
        if int(getattr(resp, "TTL", 0)) <= 0:
            return False
        # A live lease proves only the lease: the key itself may have been deleted (by hand,
        # or by an etcd restored from a snapshot) and taken by another node since.
        held, _ = await self._leader_kv()
        return held is not None and int(held.lease) == term.lease_id

    async def resign(self, term: Term) -> None:
        with contextlib.suppress(StoreUnavailable):  # else the lease expires on its own
            await self._call("revoke_lease", term.lease_id)

    async def _leader_kv(self) -> tuple[Any, int]:
        """The leader key as etcd keeps it (None when missing), and the store revision."""
        # A raw range request: its header carries the store revision even when the key is
        # missing, and watching from there misses nothing.
        try:
            c = await self._c()
            resp = await c.kvstub.Range(
                rpc.RangeRequest(key=self.leader_key), timeout=self._timeout, metadata=c.metadata
            )
        except _ERRORS as exc:
            raise await self._failed(exc) from exc
        return (resp.kvs[0] if resp.kvs else None), int(resp.header.revision)

    async def leader(self) -> tuple[LeaderRecord | None, int]:
        kv, revision = await self._leader_kv()
        if kv is None:
            return None, revision
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
            # AttributeError: aetcd's cancel after the client was closed (by `_failed`).
            with contextlib.suppress(*_ERRORS, AttributeError):
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
