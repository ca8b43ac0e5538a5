"""A shared cache in Redis, found through Sentinel, that may vanish at any time (I7).

Redis only makes RunnerHub faster or smoother (shared caches, a shared rate-limit budget,
notifications between nodes); PostgreSQL stays the truth. So no method here raises for a
Redis, network or timeout problem, and none waits long: sockets time out after a quarter of
a second, every operation is capped (`op_timeout_s`), and after `failure_threshold` failures
in a row calls are skipped for `cooldown_s` (the circuit is open), then one call tries again
(half-open). A miss and a failure look the same to the caller: None or False.

Failover needs nothing from the caller: every new connection asks Sentinel for the primary
(redis-py's SentinelConnectionPool), a connection to a demoted primary turns its READONLY
answer into a connection error, and after any failure we drop idle connections so that the
next call connects, and so asks Sentinel, afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar

import structlog
from prometheus_client import Counter, Histogram
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from runnerhub.metrics import CACHE_AVAILABLE

if TYPE_CHECKING:
    from runnerhub.config import RedisSettings

log = structlog.get_logger("runnerhub.cache")

T = TypeVar("T")

CACHE_OPERATIONS = Counter(
    "runnerhub_cache_operations_total",
    "Shared cache (Redis) operations, by operation and outcome (ok, error, skipped: the "
    "circuit was open).",
    ["op", "outcome"],
)
CACHE_LATENCY = Histogram(
    "runnerhub_cache_operation_seconds",
    "Time spent in shared cache operations that were attempted, failed ones included.",
    ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

DEFAULT_MASTER_NAME = "runnerhub"
# A subscription checks for messages this often, and pings the primary after this long
# without hearing from it: a hung primary is noticed in about a second and a half.
SUBSCRIPTION_POLL_S = 0.25
SUBSCRIPTION_IDLE_PING_S = 1.0


class CacheUnavailable(Exception):
    """A subscription broke (or could not start): Redis is gone, hung or failing over."""


class CacheStatus(TypedDict):
    available: bool
    primary: str | None
    last_error: str | None
    consecutive_failures: int


class Cache(Protocol):
    """What RunnerHub may ask of a shared cache: every answer may be "nothing"."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool: ...

    async def delete(self, key: str) -> bool: ...

    async def incr_window(self, key: str, amount: int, ttl_s: float) -> int | None: ...

    async def publish(self, channel: str, message: bytes) -> bool: ...

    async def ping(self) -> bool: ...

    def subscribe(
        self, channel: str, on_ready: Callable[[], None] | None = None
    ) -> AsyncIterator[bytes]: ...

    async def replication(self) -> dict[str, Any] | None: ...

    async def sentinels(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...

    def status(self) -> CacheStatus: ...


class NullCache:
    """No Redis configured: remembers nothing, so every caller takes its slow path."""

    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        return False

    async def delete(self, key: str) -> bool:
        return False

    async def incr_window(self, key: str, amount: int, ttl_s: float) -> int | None:
        return None

    async def publish(self, channel: str, message: bytes) -> bool:
        return False

    async def ping(self) -> bool:
        return False

    async def subscribe(
        self, channel: str, on_ready: Callable[[], None] | None = None
    ) -> AsyncIterator[bytes]:
        raise CacheUnavailable("no shared cache is configured")
        yield b""  # pragma: no cover - makes this an async generator

    async def replication(self) -> dict[str, Any] | None:
        return None

    async def sentinels(self) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        return None

    def status(self) -> CacheStatus:
        return {
            "available": False,
            "primary": None,
            "last_error": None,
            "consecutive_failures": 0,
        }


def _ttl_ms(ttl_s: float) -> int:
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, not {ttl_s}")
    return max(1, round(ttl_s * 1000))


@dataclass(frozen=True)
class RedisTls:
    """TLS to Redis and its Sentinels: the CA that signed their certificates, and a client
    certificate and key when they ask for one."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.cert_file) if self.cert_file else None,
            "ssl_keyfile": str(self.key_file) if self.key_file else None,
        }


class SharedCache:
    """The Redis primary behind `sentinels`, under `master_name`, as a best-effort cache.

    `password` is the data nodes'; `sentinel_password` the Sentinels' own (`requirepass` on
    them; LocalRedis uses the same for both), None when they require none. A bad argument
    (a TTL that is not positive) raises ValueError; nothing that Redis does ever raises."""

    @classmethod
    def from_settings(
        cls, r: RedisSettings, timeout_s: float | None = None, **extra: Any
    ) -> SharedCache:
        """The cache a node's `redis` section describes; `timeout_s` instead of the
        section's socket timeout (e.g. `runnerhub doctor`'s), `extra` passed on."""
        timeout = r.socket_timeout_s if timeout_s is None else timeout_s
        return cls(
            [(h, int(port)) for h, _, port in (e.rpartition(":") for e in r.sentinels)],
            r.master_name,
            password=r.password.get_secret_value() if r.password else None,
            sentinel_password=(
                r.sentinel_password.get_secret_value() if r.sentinel_password else None
            ),
            username=r.username,
            tls=RedisTls(r.ca_file, r.cert_file, r.key_file) if r.ca_file else None,
            socket_timeout_s=timeout,
            connect_timeout_s=timeout,
            **extra,
        )

    def __init__(
        self,
        sentinels: Sequence[tuple[str, int]],
        master_name: str = DEFAULT_MASTER_NAME,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        username: str | None = None,
        tls: RedisTls | None = None,
        socket_timeout_s: float = 0.25,
        connect_timeout_s: float = 0.25,
        op_timeout_s: float = 1.0,
        failure_threshold: int = 3,
        cooldown_s: float = 1.0,
        log_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not sentinels:
            raise ValueError("SharedCache needs at least one Sentinel")
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.master_name = master_name
        self._secrets = [s for s in (password, sentinel_password) if s]
        self._op_timeout_s = op_timeout_s
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._log_interval_s = log_interval_s
        self._clock = clock
        # redis-py retries failed commands by default (with backoff up to a second): one try
        # only, the circuit below decides when to try again.
        timeouts: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": connect_timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }
        secure = tls.kwargs() if tls else {}
        self._sentinel = Sentinel(
            [(h, int(p)) for h, p in sentinels],
            sentinel_kwargs={**timeouts, **secure, "password": sentinel_password},
            password=password,
            username=username,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            **secure,
        )
        self._redis: Redis = self._sentinel.master_for(master_name)

        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._available = False
        self._primary: str | None = None
        self._last_error: str | None = None
        self._last_log = -float("inf")
        self._suppressed = 0
        self._closed = False

    # -- operations ------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        async def call() -> bytes | None:
            value = await self._redis.get(key)
            return value.encode() if isinstance(value, str) else value

        return await self._run("get", call)

    async def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        ms = _ttl_ms(ttl_s)

        async def call() -> bool:
            return bool(await self._redis.set(key, value, px=ms))

        return bool(await self._run("set", call))

    async def delete(self, key: str) -> bool:
        """True once the key is gone (whether or not it was there)."""

        async def call() -> bool:
            await self._redis.delete(key)
            return True

        return bool(await self._run("delete", call))

    async def incr_window(self, key: str, amount: int, ttl_s: float) -> int | None:
        """Add `amount` to a counter that lives `ttl_s` from its first increment (a fixed
        window, e.g. a shared rate-limit budget); the new total, or None."""
        ms = _ttl_ms(ttl_s)

        async def call() -> int:
            # MULTI/EXEC: the counter never exists without its expiry. NX keeps the window's
            # end where the first increment put it.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(key, amount)
                pipe.pexpire(key, ms, nx=True)
                total, _ = await pipe.execute()
            return int(total)

        return await self._run("incr_window", call)

    async def publish(self, channel: str, message: bytes) -> bool:
        """True if Redis took the message (whether anyone listened or not)."""

        async def call() -> bool:
            await self._redis.publish(channel, message)
            return True

        return bool(await self._run("publish", call))

    async def ping(self) -> bool:
        async def call() -> bool:
            return bool(await self._redis.ping())

        return bool(await self._run("ping", call))

    async def subscribe(
        self, channel: str, on_ready: Callable[[], None] | None = None
    ) -> AsyncIterator[bytes]:
        """The messages published on `channel` from now on, as they come; `on_ready` is
        called once the subscription is sent on a connection to the primary (a message
        published at that very moment may still be missed).

        Raises CacheUnavailable when the subscription cannot start or breaks: the primary
        died, hung (no answer to a ping within `op_timeout_s` of a second's silence) or was
        demoted (Sentinel closes its clients). Subscribing again asks Sentinel afresh."""
        if self._closed:
            raise CacheUnavailable("the shared cache is closed")
        began = time.monotonic()
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(self._op_timeout_s):
                await pubsub.subscribe(channel)
            CACHE_OPERATIONS.labels("subscribe", "ok").inc()
            CACHE_LATENCY.labels("subscribe").observe(time.monotonic() - began)
            if on_ready is not None:
                on_ready()
            heard = self._clock()
            pinged: float | None = None
            while True:
                message = await pubsub.get_message(timeout=SUBSCRIPTION_POLL_S)
                now = self._clock()
                if message is not None:
                    heard, pinged = now, None
                    if message["type"] == "message":
                        yield message["data"]
                elif pinged is not None and now - pinged > self._op_timeout_s:
                    raise TimeoutError("the primary did not answer a ping on the subscription")
                elif pinged is None and now - heard > SUBSCRIPTION_IDLE_PING_S:
                    await pubsub.ping()
                    pinged = now
        except Exception as exc:
            CACHE_OPERATIONS.labels("subscribe", "error").inc()
            raise CacheUnavailable(self._describe(exc)) from None
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._op_timeout_s):
                    await pubsub.aclose()

    async def replication(self) -> dict[str, Any] | None:
        """The primary's `INFO replication`: each replica's offset lag in bytes (None when
        Redis cannot be reached)."""

        async def call() -> dict[str, Any]:
            info = await self._redis.info("replication")
            offset = int(info.get("master_repl_offset", 0))
            replicas = []
            for key, value in info.items():
                if key.startswith("slave") and isinstance(value, dict):
                    replicas.append(
                        {
                            "address": f"{value.get('ip')}:{value.get('port')}",
                            "state": value.get("state"),
                            "lag_bytes": max(0, offset - int(value.get("offset", 0))),
                        }
                    )
            return {"role": info.get("role"), "offset": offset, "replicas": replicas}

        return await self._run("info", call)

    async def sentinels(self) -> list[dict[str, Any]]:
        """What each Sentinel says about our primary (asked in parallel, each within
        `op_timeout_s`): its address, whether it sees the primary as down, how many other
        Sentinels it knows, and whether they make a quorum. Never raises."""

        async def ask(client: Redis) -> dict[str, Any]:
            kw = client.connection_pool.connection_kwargs
            address = f"{kw.get('host')}:{kw.get('port')}"
            try:
                async with asyncio.timeout(self._op_timeout_s):
                    state: Any = await client.sentinel_master(self.master_name)
                    try:  # answers OK, or an error naming what is missing
                        await client.execute_command(  # type: ignore[no-untyped-call]
                            "SENTINEL CKQUORUM", self.master_name
                        )
                        quorum = True
                    except ResponseError:
                        quorum = False
            except Exception as exc:  # an unreachable or confused Sentinel is a finding
                return {"address": address, "ok": False, "error": self._describe(exc)}
            flags = str(state.get("flags", ""))
            return {
                "address": address,
                "ok": True,
                "primary": f"{state.get('ip')}:{state.get('port')}",
                "primary_down": "down" in flags,
                "other_sentinels": int(state.get("num-other-sentinels", 0)),
                "quorum_ok": quorum,
            }

        return list(await asyncio.gather(*(ask(c) for c in self._sentinel.sentinels)))

    async def close(self) -> None:
        self._closed = True
        for closing in (self._redis.aclose, self._sentinel.aclose):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._op_timeout_s):
                    await closing()

    def status(self) -> CacheStatus:
        return {
            "available": self._available,
            "primary": self._primary if self._available else None,
            "last_error": self._last_error,
            "consecutive_failures": self._failures,
        }

    # -- the circuit -----------------------------------------------------------------------

    def _admit(self) -> tuple[bool, bool]:
        """(may this call go to Redis, is it the half-open trial)."""
        if self._failures < self._threshold:
            return True, False
        if self._clock() < self._open_until or self._probing:
            return False, False
        self._probing = True
        return True, True

    async def _run(self, op: str, call: Callable[[], Awaitable[T]]) -> T | None:
        if self._closed:
            return None
        admitted, trial = self._admit()
        if not admitted:
            CACHE_OPERATIONS.labels(op, "skipped").inc()
            return None
        began = time.monotonic()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                result = await call()
        except Exception as exc:
            # Whatever the client raises, a cache must not fail its caller (I7).
            CACHE_LATENCY.labels(op).observe(time.monotonic() - began)
            await self._failed(op, exc)
            return None
        finally:
            if trial:
                self._probing = False
        CACHE_LATENCY.labels(op).observe(time.monotonic() - began)
        self._succeeded(op)
        return result

    def _succeeded(self, op: str) -> None:
        CACHE_OPERATIONS.labels(op, "ok").inc()
        # Set by the SentinelConnectionPool each time it asks Sentinel.
        master = getattr(self._redis.connection_pool, "master_address", None)
        if master:
            self._primary = f"{master[0]}:{master[1]}"
        if self._failures:
            log.info(
                "shared cache available again",
                primary=self._primary,
                failures=self._failures,
                suppressed_warnings=self._suppressed,
            )
            self._suppressed = 0
            self._last_log = -float("inf")
        self._failures = 0
        self._open_until = 0.0
        self._available = True
        CACHE_AVAILABLE.set(1)

    async def _failed(self, op: str, exc: BaseException) -> None:
        CACHE_OPERATIONS.labels(op, "error").inc()
        self._failures += 1
        self._available = False
        CACHE_AVAILABLE.set(0)
        self._last_error = self._describe(exc)
        now = self._clock()
        if self._failures >= self._threshold:
            self._open_until = now + self._cooldown_s
        # The first failure of an outage, then one line per interval: an outage of Redis
        # must not flood the logs of every node.
        if self._failures == 1 or now - self._last_log >= self._log_interval_s:
            log.warning(
                "shared cache unavailable",
                op=op,
                error=self._last_error,
                failures=self._failures,
                suppressed_warnings=self._suppressed,
            )
            self._last_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1
        # Idle connections may lead to a dead or demoted primary: the next call connects
        # anew, which asks Sentinel where the primary is now.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._op_timeout_s):
                await self._redis.connection_pool.disconnect(inuse_connections=False)

    def _describe(self, exc: BaseException) -> str:
        message = str(exc)
        if isinstance(exc, MasterNotFoundError):
            # What follows " : " is every Sentinel client's repr: long, and says no more.
            message = message.split(" : ", 1)[0]
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text[:300]
