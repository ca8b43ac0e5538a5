"""Fuzzing the intake's parsing and classification (hypothesis): GitHub's real payload
shapes with mutations, at the JSON level (values replaced by any JSON, keys dropped, nesting
added) and at the byte level. Whatever arrives, `classify` answers (never raises) with a
status the endpoint may give: 200, 202 or 400; a job delivery only for a payload that holds
a job in the right shape."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runnerhub.domain.pools import Pool
from runnerhub.domain.scope import Scope
from runnerhub.intake.spool import VerifiedDelivery
from runnerhub.intake.webhook import JobDelivery, Plain, classify
from tests.fuzzing import EVENTS, mutated

POOLS = [Pool.of("linux", ["self-hosted", "linux", "x64"], 0, 5)]
SCOPES = [Scope([], []), Scope(["acme/app"], []), Scope([], ["other"])]


def delivery(body: bytes, event: str) -> VerifiedDelivery:
    return VerifiedDelivery("guid-1", event, 1, body, 1.0, "node-1")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), EVENTS, st.sampled_from(SCOPES))
def test_any_mutation_of_a_real_payload_is_classified_never_raised(
    body: bytes, event: str, scope: Scope
) -> None:
    c = classify(delivery(body, event), POOLS, scope)
    if isinstance(c, JobDelivery):
        assert event == "workflow_job" and scope.covers(c.obs.repository)
        assert isinstance(c.obs.job_id, int) and c.obs.job_id > 0
    else:
        assert isinstance(c, Plain) and c.status in (200, 202, 400)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), EVENTS)
def test_any_bytes_at_all_are_classified_never_raised(body: bytes, event: str) -> None:
    c = classify(delivery(body, event), POOLS, SCOPES[0])
    assert isinstance(c, (Plain, JobDelivery))


def test_nesting_past_the_parser_is_malformed_not_an_exception() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    c = classify(delivery(deep, "workflow_job"), POOLS, SCOPES[0])
    assert isinstance(c, Plain) and (c.status, c.outcome) == (400, "malformed")
