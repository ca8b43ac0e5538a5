"""I3: whatever order and however often GitHub's events arrive, a job ends in the state of
its most advanced event, and completed is final."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from runnerhub.domain.jobs import JobFacts, JobState, Outcome, apply


def obs(state: JobState, runner: str | None = None, conclusion: str | None = None) -> JobFacts:
    return JobFacts(
        job_id=1,
        run_id=10,
        run_attempt=1,
        repository="acme/app",
        labels=("self-hosted",),
        state=state,
        runner_name=runner,
        conclusion=conclusion,
    )


LIFECYCLE = [
    obs(JobState.WAITING),
    obs(JobState.QUEUED),
    obs(JobState.IN_PROGRESS, runner="rh-1-1"),
    obs(JobState.COMPLETED, runner="rh-1-1", conclusion="success"),
]


def run(events: list[JobFacts]) -> tuple[JobFacts | None, list[Outcome]]:
    current: JobFacts | None = None
    outcomes = []
    for e in events:
        tr = apply(current, e)
        outcomes.append(tr.outcome)
        current = tr.facts
    return current, outcomes


def test_every_order_of_the_lifecycle_ends_completed() -> None:
    for order in itertools.permutations(LIFECYCLE):
        final, _ = run(list(order))
        assert final is not None
        assert final.state is JobState.COMPLETED
        assert final.conclusion == "success"
        assert final.runner_name == "rh-1-1"


@given(st.lists(st.sampled_from(range(len(LIFECYCLE))), min_size=1, max_size=20))
def test_random_orders_with_duplicates_end_in_the_most_advanced_state(picks: list[int]) -> None:
    events = [LIFECYCLE[i] for i in picks]
    final, outcomes = run(events)
    assert final is not None
    assert final.state is max((e.state for e in events), key=lambda s: s.rank)
    if final.state is JobState.COMPLETED:
        assert final.conclusion == "success"
    ranks = []
    current: JobFacts | None = None
    for e in events:  # the state never goes down along the way
        current = apply(current, e).facts
        ranks.append(current.state.rank)
    assert ranks == sorted(ranks)
    assert outcomes[0] is Outcome.CREATED


@given(st.lists(st.sampled_from(range(len(LIFECYCLE))), min_size=1, max_size=10))
def test_replaying_the_same_events_again_changes_nothing(picks: list[int]) -> None:
    events = [LIFECYCLE[i] for i in picks]
    first, _ = run(events)
    current = first
    for e in events:
        tr = apply(current, e)
        assert not tr.changed
        current = tr.facts
    assert current == first


def test_completed_is_final_even_for_a_second_completion() -> None:
    done = apply(None, obs(JobState.COMPLETED, conclusion="success")).facts
    tr = apply(done, obs(JobState.COMPLETED, conclusion="failure", runner="late"))
    assert tr.outcome is Outcome.DUPLICATE
    assert tr.facts.conclusion == "success"
    assert tr.facts.runner_name is None


def test_a_queued_job_carries_no_conclusion() -> None:
    tr = apply(None, obs(JobState.QUEUED, conclusion="success"))
    assert tr.facts.conclusion is None


def test_same_state_with_new_facts_is_an_update_not_a_duplicate() -> None:
    started = apply(None, obs(JobState.IN_PROGRESS)).facts
    tr = apply(started, obs(JobState.IN_PROGRESS, runner="rh-9"))
    assert tr.outcome is Outcome.UPDATED
    assert tr.facts.runner_name == "rh-9"


def test_stale_event_is_recorded_not_obeyed() -> None:
    running = apply(None, obs(JobState.IN_PROGRESS, runner="a")).facts
    tr = apply(running, obs(JobState.QUEUED))
    assert tr.outcome is Outcome.STALE
    assert tr.facts == running
