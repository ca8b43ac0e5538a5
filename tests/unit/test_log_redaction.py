"""No secret in a log line (I9): fields named like secrets are blanked however deep they
sit, secrets inside text are scrubbed, and the standard library's loggers (psycopg_pool,
uvicorn) get the same treatment."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from runnerhub import logs

DSN = "host=db.internal port=5432 user=runnerhub password=hunter2-secret dbname=runnerhub"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
SECRETS = (
    "hunter2-secret",
    "ghp_abcdefghijklmnop1234",
    "s3cr3t-bearer",
    "MIIEvQIBADANBgkq",
    "pa55",
)


@pytest.fixture
def rendered(capsys: pytest.CaptureFixture[str]) -> str:
    logs.setup("debug", "json")
    log = structlog.get_logger("test")
    log.warning(
        f"could not connect with {DSN}",
        detail={"auth": {"token": "ghp_abcdefghijklmnop1234", "user": "x"}},
        headers=[{"Authorization": "Bearer s3cr3t-bearer"}],
        error=f"request failed: Authorization: Bearer s3cr3t-bearer; key {PEM}",
        url="https://runnerhub:pa55@github.example/api",
    )
    logging.getLogger("psycopg.pool").warning("error connecting in 'pool-1': %s", DSN)
    structlog.reset_defaults()
    return capsys.readouterr().err


def test_no_secret_survives_in_any_field_or_text(rendered: str) -> None:
    for secret in SECRETS:
        assert secret not in rendered, secret
    line = json.loads(rendered.splitlines()[0])
    assert line["detail"]["auth"] == {"token": "[redacted]", "user": "x"}
    assert line["headers"] == [{"Authorization": "[redacted]"}]
    assert "password=[redacted]" in line["event"] and "user=runnerhub" in line["event"]
    assert line["url"] == "https://runnerhub:[redacted]@github.example/api"


def test_the_standard_librarys_loggers_are_scrubbed_too(rendered: str) -> None:
    handlers = logging.getLogger().handlers
    assert handlers and all(
        any(isinstance(f, logs.ScrubFilter) for f in h.filters) for h in handlers
    )
    record = logging.LogRecord(
        "psycopg.pool", logging.WARNING, __file__, 1, "error connecting in %r: %s", ("p", DSN), None
    )
    assert logs.ScrubFilter().filter(record)
    message = record.getMessage()
    assert "password=[redacted]" in message and "hunter2" not in message
