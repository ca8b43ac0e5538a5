"""Schemathesis against a running node's own OpenAPI description: every operation, with
generated parameters and bodies, called without a token, with a read token and with an admin
token. No answer is a 5xx; no operation answers without the role it needs (401 without a
token, 403 with too low a role); every answer matches the schema it documents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from runnerhub.dev.cluster.postgres import LocalPostgres
from tests.conftest import TEMPLATE_DB
from tests.e2e.harness import Cluster

READ_TOKEN = "schema-read-token-0123456789"
STREAM = "/api/v1/events/stream"  # endless by design: its own tests read it


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, postgres: LocalPostgres) -> Iterator[Cluster]:
    dsn = postgres.create_database(f"schema_{int(time.time())}", TEMPLATE_DB)
    c = Cluster(Path(tmp_path_factory.mktemp("schema")), dsn)
    try:
        c.start_sim()
        c.start_node(
            # Bugs are what this looks for, not speed: a slow machine's 503 is not one.
            api={"answer_within_s": 30},
            api_tokens=[
                {"name": "admin", "token": c.admin_token, "role": "admin"},
                {"name": "reader", "token": READ_TOKEN, "role": "read"},
            ],
        )
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def api_schema(node: Cluster) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(
        f"{node.api_url}/openapi.json",
        headers={"Authorization": f"Bearer {node.admin_token}"},
    )
    return schema.exclude(path=STREAM)


def needed_role(method: str, path: str) -> str | None:
    if not path.startswith("/api/v1/"):
        return None  # the probes: anyone
    if method.upper() != "GET" or path.startswith("/api/v1/tokens"):
        return "admin"
    return "read"


def check_case(case: schemathesis.Case, node: Cluster) -> None:
    role = needed_role(case.method, case.operation.path)
    where = (case.method, case.formatted_path)
    anonymous = case.call(base_url=node.api_url, headers={})
    # 400: a request the node refuses before anyone is asked for a token (a NUL in it).
    if role is not None:
        assert anonymous.status_code in (400, 401), (*where, anonymous.status_code)
    else:
        assert anonymous.status_code not in (401, 403) and anonymous.status_code < 500, where
    reader = case.call(base_url=node.api_url, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    if role == "admin":
        assert reader.status_code in (400, 403), (*where, reader.status_code)
    else:  # let in, whatever it then answers
        assert reader.status_code not in (401, 403), (*where, reader.status_code)
        assert reader.status_code < 500, (*where, reader.text)
    case.call_and_validate(
        base_url=node.api_url,
        headers={"Authorization": f"Bearer {node.admin_token}"},
        checks=[
            checks.not_a_server_error,
            checks.response_schema_conformance,
            checks.content_type_conformance,
        ],
    )


def test_every_operation_answers_by_its_schema_and_only_to_its_role(
    api_schema: schemathesis.BaseSchema, node: Cluster
) -> None:
    """Hypothesis drives each operation's strategy here rather than through schemathesis's
    pytest plugin (`parametrize`), which does not run under pytest 9.2."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    for op in operations:

        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def examples(case: schemathesis.Case) -> None:
            check_case(case, node)

        examples()
