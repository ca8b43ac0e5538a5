"""The runner backend interface: provision, list what it manages, terminate.

A backend knows nothing of GitHub or the database: it starts a runner with a JIT config
under a name, reports which of its runners are alive, and stops them. Docker and
Kubernetes backends implement the same three operations (container / pod per runner,
labelled with the runner name so a restarted node can find and adopt them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class BackendError(Exception):
    """The backend could not do what was asked (the message is for the operator)."""


@dataclass(frozen=True)
class RunnerSpec:
    name: str
    pool: str
    labels: tuple[str, ...]
    job_id: int | None
    jit_config: str = field(repr=False)  # a credential: never logged, never shown
    attempt: int = 1  # the scheduler's attempt at provisioning it
    epoch: int | None = None  # the leader's that asked (None: no election)


@dataclass(frozen=True)
class BackendRunner:
    name: str
    pool: str
    ref: str  # the backend's own handle (pid, container id, pod name)
    alive: bool
    started_at: datetime
    exit_code: int | None = None  # when known (a restarted node cannot know it)


class RunnerBackend(Protocol):
    kind: str

    async def provision(self, spec: RunnerSpec) -> str:
        """Start the runner; return its ref. Idempotent: a live runner of that name is kept."""
        ...

    async def list(self) -> list[BackendRunner]:
        """Every runner this backend manages, alive or exited but not yet forgotten."""
        ...

    async def terminate(self, name: str) -> None:
        """Stop the runner (gracefully, then forcibly) and forget it. Unknown names are fine."""
        ...

    async def forget(self, name: str) -> None:
        """Drop what the backend keeps about an exited runner."""
        ...

    async def close(self) -> None:
        """Let go of connections (at the node's stop)."""
        ...

    def unreachable(self, ref: str | None) -> bool:
        """The runner `ref` names is where the last `list` could not look (a runner host
        that did not answer): it may be running there, unseen."""
        ...
