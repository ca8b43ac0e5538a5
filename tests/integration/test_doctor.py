"""`runnerhub doctor` against real services: the session's PostgreSQL, the GitHub simulator,
etcd and Redis with Sentinels, each started here on free loopback ports. The command runs
as an operator runs it (a process of its own); each test names the failure it catches."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from psycopg.conninfo import conninfo_to_dict

from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.redis import LocalRedis
from tests.github_process import PAT, github_sim

DB_PASSWORD = "pw-" + "9" * 20  # never printed, whatever fails


def write_config(tmp_path: Path, dsn: str, **sections: Any) -> Path:
    data: dict[str, Any] = {
        "node": {"id": "node-doctor", "state_dir": str(tmp_path / "state")},
        "database": {"dsn": dsn},
        "webhook": {"secrets": ["s3cret-current"]},
        "github": {"api_url": "http://127.0.0.1:9", "auth": {"token": PAT}},
    }
    data.update(sections)
    path = tmp_path / "runnerhub.yaml"
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)
    return path


def doctor(config: Path, *extra: str) -> tuple[int, dict[str, Any], float]:
    """Exit status, the --json answer and how long it took."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "runnerhub.cli.main", "doctor", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - began
    assert done.stdout, done.stderr
    for secret in secrets_of(config):
        assert secret not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout), took


def secrets_of(config: Path) -> list[str]:
    """The database password and the webhook secret a configuration holds."""
    try:
        data = yaml.safe_load(config.read_text())
        password = conninfo_to_dict(data["database"]["dsn"]).get("password")
    except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
        return []
    return [str(password), *data["webhook"]["secrets"]] if password else data["webhook"]["secrets"]


def by_check(answer: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {f["check"]: f for f in answer["findings"]}


def test_a_healthy_node_gets_exit_0_and_every_dependency_ok(tmp_path: Path, dsn: str) -> None:
    with github_sim(tmp_path / "sim", "http://127.0.0.1:9/webhooks/github") as gh:
        config = write_config(
            tmp_path,
            dsn,
            github={"api_url": gh.url, "auth": {"token": PAT}},
        )
        code, answer, _ = doctor(config)
    found = by_check(answer)
    assert code == 0, answer
    for check in ("config", "postgres", "postgres version", "postgres schema", "clock skew"):
        assert found[check]["level"] == "ok", found[check]
    assert found["github"]["level"] == "ok", found["github"]
    assert found["config file"]["level"] == "ok"
    assert found["spool disk"]["level"] in ("ok", "warn")  # a small /tmp may be short of 1 GiB
    assert found["etcd"]["level"] == found["redis"]["level"] == "skip"
    # The session's PostgreSQL runs here as us: its WAL directory is measured.
    assert found["postgres WAL disk"]["level"] in ("ok", "warn"), found["postgres WAL disk"]
    assert "pg_wal" in found["postgres WAL disk"]["detail"]


def test_postgres_down_fails_quickly_with_a_clear_line(tmp_path: Path) -> None:
    closed = free_port()
    config = write_config(
        tmp_path, f"host=127.0.0.1 port={closed} dbname=rh user=rh password={DB_PASSWORD}"
    )
    code, answer, took = doctor(config)
    found = by_check(answer)
    assert code == 1
    assert found["postgres"]["level"] == "fail"
    assert f"cannot connect to 127.0.0.1:{closed}/rh as rh" in found["postgres"]["detail"]
    assert "database.dsn" in found["postgres"]["detail"]
    assert "postgres schema" not in found  # nothing is claimed about what was not reached
    assert took < 10, f"doctor took {took:.1f}s"


def test_a_postgres_that_never_answers_is_given_up_on_in_time(tmp_path: Path) -> None:
    """A listening socket that never accepts the handshake: a hung server, not a closed
    port. The network checks' timeouts keep doctor from hanging."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        config = write_config(tmp_path, f"host=127.0.0.1 port={port} dbname=rh user=rh")
        code, answer, took = doctor(config)
    assert code == 1
    assert by_check(answer)["postgres"]["level"] == "fail"
    assert took < 10, f"doctor took {took:.1f}s"


def make_cert(path: Path, not_after: datetime) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runnerhub-test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def test_an_expired_certificate_fails_and_a_near_one_warns(tmp_path: Path, dsn: str) -> None:
    now = datetime.now(UTC)
    expired = make_cert(tmp_path / "ca.pem", now - timedelta(days=1))
    soon = make_cert(tmp_path / "client.pem", now + timedelta(days=10))
    key = tmp_path / "client.key"
    key.write_text("not a real key\n")
    key.chmod(0o600)
    redis = {"ca_file": str(expired), "cert_file": str(soon), "key_file": str(key)}
    code, answer, _ = doctor(write_config(tmp_path, dsn, redis=redis))
    found = by_check(answer)
    assert code == 1
    assert found["redis.ca_file"]["level"] == "fail"
    assert "expired on" in found["redis.ca_file"]["detail"]
    assert found["redis.cert_file"]["level"] == "warn"
    assert "expires in" in found["redis.cert_file"]["detail"]
    assert found["redis.key_file"]["level"] == "ok"


def test_a_world_readable_secret_file_fails(tmp_path: Path, dsn: str) -> None:
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("*:*:*:*:secret\n")
    pgpass.chmod(0o644)
    config = write_config(tmp_path, dsn, backup={"pgpass_file": str(pgpass)})
    code, answer, _ = doctor(config)
    found = by_check(answer)
    assert code == 1
    assert found["backup.pgpass_file"]["level"] == "fail"
    assert f"chmod 600 {pgpass}" in found["backup.pgpass_file"]["detail"]
    # The configuration itself holds the webhook secret: the same rule.
    config.chmod(0o644)
    _, answer, _ = doctor(config)
    assert by_check(answer)["config file"]["level"] == "fail"


def test_a_missing_secret_file_fails(tmp_path: Path, dsn: str) -> None:
    app = {"app_id": 1, "installation_id": 2, "private_key_file": str(tmp_path / "nope.pem")}
    config = write_config(tmp_path, dsn, github={"auth": {"app": app}})
    code, answer, _ = doctor(config)
    assert code == 1
    assert "No such file" in by_check(answer)["github.auth.app.private_key_file"]["detail"]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read configuration file"),
        ("database: [unclosed\n", "not valid YAML"),
        ("database: {}\n", "database.dsn"),
    ],
    ids=["missing", "not-yaml", "invalid-field"],
)
def test_a_configuration_that_cannot_be_loaded_exits_2(
    tmp_path: Path, content: str | None, said: str
) -> None:
    config = tmp_path / "runnerhub.yaml"
    if content is not None:
        config.write_text(content)
    code, answer, _ = doctor(config)
    assert code == 2
    [finding] = answer["findings"]
    assert finding["check"] == "config" and finding["level"] == "fail"
    assert str(config) in finding["detail"] and said in finding["detail"]


def test_the_table_names_what_failed_and_keeps_the_password_out(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, f"postgresql://rh:{DB_PASSWORD}@127.0.0.1:{free_port()}/rh?connect_timeout=2"
    )
    done = subprocess.run(
        [sys.executable, "-m", "runnerhub.cli.main", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "postgres" in done.stdout and "fail" in done.stdout
    assert DB_PASSWORD not in done.stdout + done.stderr


def test_etcd_and_redis_are_checked_when_configured(tmp_path: Path, dsn: str) -> None:
    etcd = LocalEtcd(tmp_path / "etcd", members=1)
    redis = LocalRedis(tmp_path / "redis")
    try:
        etcd.start()
        redis.start()
        sentinels = [f"{h}:{p}" for h, p in redis.sentinels]
        config = write_config(
            tmp_path,
            dsn,
            ha={"etcd_endpoints": etcd.endpoints},
            redis={
                "sentinels": sentinels,
                "master_name": redis.master_name,
                "password": redis.password,
                "sentinel_password": redis.password,
            },
        )
        _, answer, _ = doctor(config)
        found = by_check(answer)
        assert found["etcd"]["level"] == "ok", found["etcd"]
        assert "1 of 1 members answer (etcd 3." in found["etcd"]["detail"]
        assert found["redis"]["level"] == "ok", found["redis"]
        assert redis.password not in json.dumps(answer)

        etcd.stop()
        redis.stop()
        code, answer, took = doctor(config)
        found = by_check(answer)
        assert code == 1
        assert found["etcd"]["level"] == "fail"  # no quorum: no leader, no control loops
        assert found["redis"]["level"] == "warn"  # a cache: the node runs on without it
        assert took < 10, f"doctor took {took:.1f}s"
    finally:
        redis.destroy()
        etcd.destroy()
