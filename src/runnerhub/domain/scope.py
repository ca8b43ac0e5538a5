"""Which repositories RunnerHub serves, and where a job's runner registers: pure."""

from __future__ import annotations

from collections.abc import Collection, Sequence


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


def job_scope(repository: str, organizations: Collection[str]) -> str:
    """Where a runner for a job registers: the org when it is ours, else the repository.
    `organizations` are lower-case."""
    owner = repository.split("/", 1)[0]
    return f"org:{owner}" if owner.lower() in organizations else f"repo:{repository}"
