"""GitHub JSON shapes, pagination and the fault-injection settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import URL

from runnerhub.dev.sim.errors import ApiError
from runnerhub.dev.sim.faults import Faults
from runnerhub.dev.sim.model import Job, Runner
from runnerhub.dev.sim.shapes import job_json, page_params, paginate, run_status, runner_json


def job(status: str, conclusion: str | None = None) -> Job:
    return Job(
        id=1,
        run_id=2,
        repository="o/r",
        name="build",
        workflow_name="ci",
        labels=["self-hosted"],
        duration_s=0,
        planned_conclusion="success",
        head_sha="abc",
        head_branch="main",
        created_at=0,
        updated_at=0,
        status=status,
        conclusion=conclusion,
    )


def test_runner_labels_keep_what_was_asked_and_type_default_ones_read_only() -> None:
    runner = Runner(
        id=7,
        name="r",
        scope="repo:o/r",
        labels=["self-hosted", "Linux", "x64", "gpu"],
        runner_group_id=1,
        work_folder="_work",
        token="secret",
        created_at=0,
    )
    ids = {"self-hosted": 1, "linux": 2, "x64": 3, "gpu": 4}
    body = runner_json(runner, lambda name: ids[name.lower()])
    assert body["labels"] == [
        {"id": 1, "name": "self-hosted", "type": "read-only"},
        {"id": 2, "name": "Linux", "type": "read-only"},
        {"id": 3, "name": "x64", "type": "read-only"},
        {"id": 4, "name": "gpu", "type": "custom"},
    ]
    assert body["ephemeral"] is True and body["os"] == "linux"
    assert "secret" not in str(body)


def test_job_json_has_github_fields_and_null_runner_until_taken() -> None:
    body = job_json(job("queued"), "http://sim")
    for key in ("runner_id", "runner_name", "runner_group_id", "runner_group_name"):
        assert body[key] is None
    assert body["url"] == "http://sim/repos/o/r/actions/jobs/1"
    assert body["run_url"] == "http://sim/repos/o/r/actions/runs/2"
    assert body["started_at"] == body["created_at"] == "1970-01-01T00:00:00Z"
    assert body["steps"] == [] and body["labels"] == ["self-hosted"]


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        ([job("queued"), job("queued")], ("queued", None)),
        ([job("queued"), job("in_progress")], ("in_progress", None)),
        ([job("queued"), job("completed", "success")], ("in_progress", None)),
        ([job("completed", "success"), job("completed", "skipped")], ("completed", "success")),
        ([job("completed", "success"), job("completed", "failure")], ("completed", "failure")),
        ([job("completed", "cancelled"), job("completed", "success")], ("completed", "cancelled")),
    ],
)
def test_run_status_is_derived_from_jobs(jobs: list[Job], expected: tuple[str, str]) -> None:
    assert run_status(jobs) == expected


def test_page_params_defaults_and_clamps() -> None:
    assert page_params({}) == (30, 1)
    assert page_params({"per_page": "500", "page": "0"}) == (100, 1)
    assert page_params({"per_page": "junk", "page": "3"}) == (30, 3)


def test_paginate_links() -> None:
    url = URL("http://sim/repos/o/r/actions/runners?name=x")
    chunk, link = paginate(list(range(5)), url, 2, 1)
    assert chunk == [0, 1]
    assert link is not None
    assert 'page=2>; rel="next"' in link and 'page=3>; rel="last"' in link
    assert "name=x" in link
    chunk, link = paginate(list(range(5)), url, 2, 3)
    assert chunk == [4]
    assert link is not None and 'rel="next"' not in link and 'rel="first"' in link
    assert paginate([], url, 30, 1) == ([], None)


@given(st.integers(0, 250), st.integers(1, 100))
def test_pages_cover_every_item_once(total: int, per_page: int) -> None:
    items = list(range(total))
    url = URL("http://sim/x")
    seen: list[int] = []
    page = 1
    while True:
        chunk, link = paginate(items, url, per_page, page)
        seen += chunk
        if link is None or 'rel="next"' not in link:
            break
        page += 1
    assert seen == items


def test_faults_merge_validates_everything_before_changing_anything() -> None:
    faults = Faults()
    faults.merge({"drop_webhooks": 0.5, "responses": {"list-runners": [503]}})
    with pytest.raises(ApiError) as err:
        faults.merge({"drop_webhooks": 0.1, "lose_webhooks": 2})
    assert err.value.status == 422
    assert faults.drop_webhooks == 0.5  # the bad body changed nothing
    bad: object
    for bad in (
        {"responses": {"no-such-endpoint": [500]}},
        {"responses": {"list-runners": ["500"]}},
        {"rate_limit_remaining": -1},
        {"unknown": 1},
        [],
    ):
        with pytest.raises(ApiError):
            faults.merge(bad)


def test_fault_responses_are_consumed_one_per_call() -> None:
    faults = Faults()
    faults.merge({"responses": {"get-job": [502, 429]}})
    faults.merge({"responses": {"list-jobs": [500]}})  # merges per key
    assert [faults.take_response("get-job") for _ in range(3)] == [502, 429, None]
    assert faults.take_response("list-jobs") == 500
    faults.merge({"responses": {"get-job": [503]}})
    faults.clear()
    assert faults.take_response("get-job") is None


def test_webhook_fates_follow_the_fractions_and_the_seed() -> None:
    faults = Faults()
    assert {faults.webhook_fate() for _ in range(50)} == {"send"}
    faults.merge({"drop_webhooks": 1})
    assert {faults.webhook_fate() for _ in range(50)} == {"drop"}
    faults.merge({"drop_webhooks": 0, "lose_webhooks": 1})
    assert {faults.webhook_fate() for _ in range(50)} == {"lose"}

    def draws(seed: int) -> list[str]:
        f = Faults()
        f.merge({"drop_webhooks": 0.3, "lose_webhooks": 0.3, "seed": seed})
        return [f.webhook_fate() for _ in range(200)]

    assert draws(7) == draws(7)
    assert set(draws(7)) == {"send", "drop", "lose"}
