"""`runnerhub doctor`'s verdicts at their thresholds, each test named after what it keeps an
operator from missing (or from being woken for)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runnerhub.config import Settings
from runnerhub.domain import doctor as v
from runnerhub.domain.doctor import Finding, GiB
from runnerhub.health.doctor import Scrubber, describe_dsn, holds_secrets

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("skew", "uncertainty", "level"),
    [
        (0.0, 0, "ok"),
        (0.9, 0, "ok"),
        (-1.5, 0, "warn"),
        (1.2, 0.3, "ok"),
        (4.9, 0, "warn"),
        (5.1, 0, "fail"),
        (-30, 0, "fail"),
    ],
)
def test_clock_skew_warns_past_a_second_and_fails_past_five(
    skew: float, uncertainty: float, level: str
) -> None:
    assert v.clock_skew(skew, uncertainty).level == level


def test_clock_skew_says_which_clock_is_behind_and_why_it_matters() -> None:
    behind = v.clock_skew(2.0)
    assert "behind PostgreSQL" in behind.detail and "NTP" in behind.detail
    assert "ahead of PostgreSQL" in v.clock_skew(-2.0).detail


@pytest.mark.parametrize(
    ("left", "level"),
    [
        (timedelta(days=-1), "fail"),
        (timedelta(0), "fail"),
        (timedelta(days=29), "warn"),
        (timedelta(hours=1), "warn"),
        (timedelta(days=30), "ok"),
        (timedelta(days=400), "ok"),
    ],
)
def test_a_certificate_fails_once_expired_and_warns_a_month_ahead(
    left: timedelta, level: str
) -> None:
    found = v.certificate("redis.ca_file", "/etc/ca.pem", NOW + left, NOW)
    assert found.level == level
    assert "/etc/ca.pem" in found.detail


@pytest.mark.parametrize(
    ("mode", "level"),
    [
        (0o100600, "ok"),
        (0o100400, "ok"),
        (0o100640, "warn"),
        (0o100644, "fail"),
        (0o100604, "fail"),
        (0o100620, "fail"),
        (0o100602, "fail"),
    ],
)
def test_a_secret_file_readable_by_others_fails(mode: int, level: str) -> None:
    found = v.secret_file("ha.etcd_key_file", "/etc/k.pem", mode, "runnerhub")
    assert found.level == level
    if level != "ok":
        assert "chmod 600 /etc/k.pem" in found.detail


@pytest.mark.parametrize(
    ("free", "total", "level"),
    [
        (1 * GiB, 100 * GiB, "fail"),
        (1.9 * GiB, 100 * GiB, "fail"),
        (5 * GiB, 100 * GiB, "warn"),
        (9.9 * GiB, 100 * GiB, "warn"),
        (10 * GiB, 100 * GiB, "ok"),
        (0.5 * GiB, 1 * GiB, "warn"),
        (0, 0, "fail"),
    ],
)
def test_disk_headroom_warns_under_ten_percent_or_a_gibibyte_and_fails_under_two(
    free: float, total: float, level: str
) -> None:
    assert v.disk_headroom("spool disk", "/var/lib/runnerhub", int(free), int(total)).level == level


def test_a_schema_behind_is_a_warning_with_the_command_to_run() -> None:
    assert v.schema(7, 7).level == "ok"
    behind = v.schema(5, 7)
    assert behind.level == "warn" and "2 migration(s)" in behind.detail
    assert "runnerhub db migrate" in behind.detail
    ahead = v.schema(8, 7)
    assert ahead.level == "warn" and "upgrade this node" in ahead.detail


def test_an_older_postgres_than_tested_warns() -> None:
    assert v.postgres_version(150004, "15.4").level == "ok"
    assert v.postgres_version(160002, "16.2").level == "ok"
    assert v.postgres_version(140011, "14.11").level == "warn"


def test_etcd_without_a_majority_fails_and_one_member_down_warns() -> None:
    up = {"a:2379": "3.4.23", "b:2379": "3.4.23"}
    assert v.etcd_members({**up, "c:2379": "3.4.23"}, {}).level == "ok"
    assert v.etcd_members(up, {"c:2379": "refused"}).level == "warn"
    assert v.etcd_members({"a:2379": "3.4.23"}, {"b:2379": "x", "c:2379": "x"}).level == "fail"
    assert v.etcd_members({"a:2379": "3.4.23"}, {"b:2379": "x"}).level == "fail"  # 1 of 2


def test_etcd_members_down_for_the_same_reason_are_named_once() -> None:
    found = v.etcd_members({}, {"a:1": "UNAVAILABLE", "b:1": "UNAVAILABLE", "c:1": "DEADLINE"})
    assert "a:1, b:1: UNAVAILABLE" in found.detail and "c:1: DEADLINE" in found.detail


def test_only_a_failure_makes_doctor_exit_1() -> None:
    ok, warn, skip = Finding("a", "ok", ""), Finding("b", "warn", ""), Finding("c", "skip", "")
    assert v.exit_code([ok, warn, skip]) == 0
    assert v.exit_code([ok, Finding("d", "fail", "")]) == 1


def test_a_dsn_is_described_without_its_password() -> None:
    assert describe_dsn("host=db1 port=5433 dbname=rh user=rh password=hunter22") == (
        "db1:5433/rh as rh"
    )
    assert "hunter22" not in describe_dsn("postgresql://rh:hunter22@db1/rh")
    assert describe_dsn("host=a,b port=5432,5432 dbname=rh") == "a,b:5432,5432/rh"
    assert "cannot be parsed" in describe_dsn("this is = = not a dsn '")


def test_every_secret_of_the_settings_is_scrubbed_from_an_error_text() -> None:
    settings = Settings(
        database={"dsn": "host=db dbname=rh user=rh password=pg-pass-123"},
        webhook={"secrets": ["hook-secret-456"]},
        github={"auth": {"token": "plain-token-789"}},
        redis={"sentinels": ["s:26379"], "password": "redis-pass-000"},
    )
    clean = Scrubber(settings)
    text = "pg-pass-123 hook-secret-456 plain-token-789 redis-pass-000 password=other"
    assert clean(text) == "[redacted] [redacted] [redacted] [redacted] password=[redacted]"


def test_a_configuration_with_secrets_in_it_is_recognised() -> None:
    assert holds_secrets({"database": {"dsn": "host=x"}, "webhook": {"secrets": ["s"]}})
    assert holds_secrets({"api_tokens": [{"name": "a", "token": "t" * 16}]})
    assert holds_secrets({"ha": {"etcd_password": "p"}})
    # Secrets from the environment: the file holds none.
    assert not holds_secrets({"node": {"id": "n"}, "pools": [{"name": "linux"}]})
    assert not holds_secrets({"redis": {"password": None}})
