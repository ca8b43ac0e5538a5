"""A runner backend behind a circuit breaker: the same interface, with `provision` failing
fast as `BackendCircuitOpen` (a BackendError, which the scheduler already retries later)
once the backend has failed to start runners repeatedly.

Only provisioning is guarded. Listing, terminating and forgetting are never refused, since
adoption and cleanup must go on whatever the state of the circuit, and they do not count
either way: a backend that lists its runners fine may still be unable to start one (a
missing image or binary, a quota), and that is what the circuit is about."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from runnerhub.backends.base import BackendError, BackendRunner, RunnerBackend, RunnerSpec
from runnerhub.breakers import CircuitBreaker, CircuitOpen

T = TypeVar("T")


class BackendCircuitOpen(BackendError):
    """The backend's circuit is open: not called."""


class GuardedBackend:
    def __init__(self, backend: RunnerBackend, breaker: CircuitBreaker) -> None:
        self.inner = backend
        self.kind = backend.kind
        self.breaker = breaker

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        try:  # whatever the backend raises, it did not work: a failure
            return await self.breaker.call(call)
        except CircuitOpen as exc:
            raise BackendCircuitOpen(str(exc)) from None

    async def provision(self, spec: RunnerSpec) -> str:
        return await self._guard(lambda: self.inner.provision(spec))

    async def list(self) -> list[BackendRunner]:
        return await self.inner.list()

    async def terminate(self, name: str) -> None:
        await self.inner.terminate(name)

    async def forget(self, name: str) -> None:
        await self.inner.forget(name)

    async def close(self) -> None:
        await self.inner.close()

    def unreachable(self, ref: str | None) -> bool:
        return self.inner.unreachable(ref)
