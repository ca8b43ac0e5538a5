"""Configuration: one YAML file plus environment overrides; every error names the file, the
field and the problem; secrets never show in reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from runnerhub.config import ConfigError, load_settings

VALID = """
database: {dsn: "host=db dbname=runnerhub password=hunter2"}
webhook: {secrets: [whsec-one]}
github:
  auth: {token: ghp_abcdef}
  organizations: [acme]
pools:
  - name: linux
    labels: [self-hosted, linux]
    process: {command: [./run.sh]}
api_tokens:
  - {name: ops, token: admin-token-0123456789, role: admin}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runnerhub.yaml"
    path.write_text(text)
    return path


def test_a_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, VALID))
    assert s.pools[0].max_runners == 10
    assert s.scheduler.runner_name_prefix == "rh"
    assert s.webhook.max_body_bytes == 5 * 1024 * 1024


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNERHUB_DATABASE__DSN", "host=other")
    monkeypatch.setenv("RUNNERHUB_SCHEDULER__TICK_S", "2.5")
    s = load_settings(write(tmp_path, VALID))
    assert s.database.dsn.get_secret_value() == "host=other"
    assert s.scheduler.tick_s == 2.5


def test_errors_name_the_file_and_every_bad_field(tmp_path: Path) -> None:
    bad = (
        VALID.replace("labels: [self-hosted, linux]", "labels: []").replace(
            "role: admin", "role: superuser"
        )
        + "surprise: true\n"
    )
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "pools.0.labels" in msg
    assert "api_tokens.0.role" in msg
    assert "surprise: unknown field" in msg
    assert "Traceback" not in msg


def test_a_missing_required_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"webhook: required field is missing"):
        load_settings(write(tmp_path, VALID.replace("webhook: {secrets: [whsec-one]}", "")))


def test_both_or_neither_auth_method_is_refused(tmp_path: Path) -> None:
    both = VALID.replace(
        "auth: {token: ghp_abcdef}",
        "auth: {token: x, app: {app_id: 1, installation_id: 2, private_key: k}}",
    )
    with pytest.raises(ConfigError, match=r"github\.auth: give exactly one of token"):
        load_settings(write(tmp_path, both))


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3"):
        load_settings(write(tmp_path, "database:\n  dsn: x\n webhook: [\n"))


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_settings(tmp_path / "absent.yaml")


def test_pool_rules(tmp_path: Path) -> None:
    spare_without_home = VALID.replace(
        "labels: [self-hosted, linux]", "labels: [self-hosted, linux]\n    min_idle: 1"
    )
    with pytest.raises(ConfigError, match="min_idle > 0 needs organization or repository"):
        load_settings(write(tmp_path, spare_without_home))
    twice = VALID.replace(
        "pools:\n", "pools:\n  - {name: linux, labels: [x], process: {command: [y]}}\n"
    )
    with pytest.raises(ConfigError, match="pool names must be unique; repeated: linux"):
        load_settings(write(tmp_path, twice))


def test_short_api_tokens_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings(write(tmp_path, VALID.replace("admin-token-0123456789", "short")))


def test_secrets_do_not_show_in_reprs(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, VALID))
    shown = repr(s) + str(s.model_dump())
    for secret in ("hunter2", "whsec-one", "ghp_abcdef", "admin-token-0123456789"):
        assert secret not in shown


def test_health_settings_default_and_a_bad_patroni_url_is_named(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, VALID))
    assert (s.health.interval_s, s.health.timeout_s, s.health.patroni_urls) == (1.0, 0.5, [])
    path = write(tmp_path, VALID + "health: {patroni_urls: [10.0.0.1:8008]}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "health.patroni_urls" in str(info.value) and "must start with http" in str(info.value)


def test_patroni_credentials_go_together_and_stay_secret(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "health: {patroni_username: patroni}\n")
    with pytest.raises(ConfigError, match="patroni_username and patroni_password go together"):
        load_settings(path)
    auth = "health: {patroni_username: patroni, patroni_password: pat-r0ni-pw}\n"
    s = load_settings(write(tmp_path, VALID + auth))
    assert s.health.patroni_password is not None
    assert "pat-r0ni-pw" not in repr(s) + str(s.model_dump())
    assert (s.remediation.reinit_stalled_replicas, s.remediation.reinit_after_s) == (True, 120.0)


def test_a_file_the_settings_name_that_cannot_be_read_stops_the_server_clearly(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    config = tmp_path / "node.yaml"
    config.write_text(
        "database: {dsn: 'postgresql://x@127.0.0.1:1/x'}\n"
        "webhook: {secrets: ['s3cret-0123456789']}\n"
        "github: {auth: {token: 'ghp_x'}}\n"
        f"node: {{state_dir: '{tmp_path / 'state'}'}}\n"
        f"ha: {{etcd_endpoints: ['127.0.0.1:1'], etcd_ca_file: '{tmp_path / 'no-ca.pem'}'}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{config}: ha.etcd_ca_file: cannot read {tmp_path / 'no-ca.pem'}" in done.stderr
    assert "Traceback" not in done.stderr
