"""The job state machine (invariant I3): pure, no I/O.

GitHub's events arrive late, twice and out of order. A job only ever moves forward:
waiting → queued → in_progress → completed, and completed is final. An event that would
move it backwards is recorded by the caller, not obeyed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class JobState(StrEnum):
    WAITING = "waiting"  # held by an environment protection rule; no runner yet
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    JobState.WAITING: 0,
    JobState.QUEUED: 1,
    JobState.IN_PROGRESS: 2,
    JobState.COMPLETED: 3,
}


class Outcome(StrEnum):
    """What applying an observation did to a job; stored with each delivery."""

    CREATED = "created"
    ADVANCED = "advanced"
    UPDATED = "updated"  # same state, new facts (runner name, conclusion) filled in
    DUPLICATE = "duplicate_event"
    STALE = "stale"  # older than what we know: recorded, not obeyed


@dataclass(frozen=True)
class JobFacts:
    """What GitHub says about a job: one observation (webhook or API), or what we hold."""

    job_id: int
    run_id: int
    run_attempt: int
    repository: str
    labels: tuple[str, ...]
    state: JobState
    name: str | None = None
    workflow_name: str | None = None
    conclusion: str | None = None
    runner_name: str | None = None
    runner_id: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    outcome: Outcome
    facts: JobFacts

    @property
    def changed(self) -> bool:
        return self.outcome in (Outcome.CREATED, Outcome.ADVANCED, Outcome.UPDATED)


def _fill(current: JobFacts, obs: JobFacts) -> JobFacts:
    """Fill facts we did not know yet; never overwrite a known fact with a missing one."""
    return replace(
        current,
        name=current.name or obs.name,
        workflow_name=current.workflow_name or obs.workflow_name,
        runner_name=current.runner_name or obs.runner_name,
        runner_id=current.runner_id or obs.runner_id,
        created_at=current.created_at or obs.created_at,
        started_at=current.started_at or obs.started_at,
        completed_at=current.completed_at or obs.completed_at,
    )


def apply(current: JobFacts | None, obs: JobFacts) -> Transition:
    """Apply an observation to what we know; the heart of I3."""
    if current is None:
        conclusion = obs.conclusion if obs.state is JobState.COMPLETED else None
        facts = replace(obs, conclusion=conclusion)
        return Transition(Outcome.CREATED, facts)

    if obs.state.rank > current.state.rank:
        advanced = _fill(replace(current, state=obs.state), obs)
        if obs.state is JobState.COMPLETED:
            # The completing event decides the conclusion, whatever an earlier one said.
            advanced = replace(advanced, conclusion=obs.conclusion)
        return Transition(Outcome.ADVANCED, advanced)

    if obs.state.rank < current.state.rank:
        return Transition(Outcome.STALE, current)

    # Same state: a duplicate, unless it fills in something we did not know.
    filled = current if current.state is JobState.COMPLETED else _fill(current, obs)
    if filled != current:
        return Transition(Outcome.UPDATED, filled)
    return Transition(Outcome.DUPLICATE, current)
