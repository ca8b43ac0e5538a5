"""The container image's recipe (deploy/container/) and the evaluation compose file
(deploy/compose/), read as files: what a build or a `podman-compose up` would do with them,
without building or starting anything (tests/e2e/test_compose.py does that)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from runnerhub.config import load_settings
from runnerhub.dev.cluster.node_image import (
    INFRA_IMAGE,
    NODE_IMAGE,
    locked_subset,
    marker_env,
)

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
INFRA_CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile.infra"
COMPOSE_DIR = ROOT / "deploy" / "compose"
PG_MEMBERS = ("pg1", "pg2", "pg3")
NODES = ("node1", "node2", "node3")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("path", [CONTAINERFILE, INFRA_CONTAINERFILE], ids=lambda p: p.name)
def test_an_image_pulls_nothing_from_a_registry(path: Path) -> None:
    steps = instructions(path)
    bases = {args.split()[0] for word, args in steps if word == "FROM"}
    assert bases == {"${BASE}"}, bases
    base_default = next(a for w, a in steps if w == "ARG" and a.startswith("BASE="))
    assert base_default.startswith("BASE=localhost/"), base_default


@pytest.mark.parametrize("path", [CONTAINERFILE, INFRA_CONTAINERFILE], ids=lambda p: p.name)
def test_an_image_runs_as_a_user_who_is_not_root(path: Path) -> None:
    users = [args for word, args in final_stage(path) if word == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), users


def test_the_node_image_checks_its_health_and_runs_the_server() -> None:
    stage = dict(final_stage(CONTAINERFILE))
    health = stage["HEALTHCHECK"]
    assert "CMD" in health and not health.startswith("NONE"), health
    # The liveness probe: a draining or standby node must not look broken to the engine.
    assert "/livez" in health and "urllib.request" in health, health
    assert json.loads(stage["ENTRYPOINT"]) == ["runnerhub"]
    assert json.loads(stage["CMD"]) == ["server", "--config", "/etc/runnerhub/config.yaml"]
    assert stage["STOPSIGNAL"] == "SIGTERM"
    volumes = json.loads(stage["VOLUME"])
    assert "/var/lib/runnerhub" in volumes and "/var/lib/runnerhub/spool" in volumes
    assert stage["USER"] == "10001:10001"


def compose() -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_every_service_of_the_compose_file_uses_an_image_make_image_builds() -> None:
    services = compose()["services"]
    assert set(services) == {
        "etcd1", "etcd2", "etcd3", *PG_MEMBERS, "haproxy-pg", "github-sim", *NODES, "haproxy"
    }  # fmt: skip
    for name, service in services.items():
        assert service["image"] in (NODE_IMAGE, INFRA_IMAGE), name
        assert "build" not in service, name
    for name in (*NODES, "github-sim"):
        assert services[name]["image"] == NODE_IMAGE, name


def test_no_compose_service_runs_as_root_and_only_loopback_is_published() -> None:
    for name, service in compose()["services"].items():
        if service["image"] == INFRA_IMAGE:  # its default user is nobody; say which
            assert service.get("user") not in (None, "root", "0"), name
        else:
            assert "user" not in service, name  # the node image's own, 10001
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    for name in NODES:
        assert compose()["services"][name]["read_only"] is True


def test_haproxy_and_etcd_name_every_member_of_the_compose_stack() -> None:
    haproxy = (COMPOSE_DIR / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server (\S+) (\S+):8080", haproxy, re.M)
    assert sorted(servers) == sorted([(n, n) for n in NODES] * 2)
    for name in ("etcd1", "etcd2", "etcd3"):
        args = compose()["services"][name]["command"]
        assert (
            "--initial-cluster=etcd1=http://etcd1:2380,etcd2=http://etcd2:2380,"
            "etcd3=http://etcd3:2380" in args
        )
        assert f"--name={name}" in args


def test_patroni_members_and_their_haproxy_agree_on_every_member() -> None:
    """Each member says its own name and addresses; the primary's HAProxy checks each on
    Patroni's port; the nodes go through that HAProxy to whichever is primary."""
    services = compose()["services"]
    for name in PG_MEMBERS:
        env = services[name]["environment"]
        assert env["PATRONI_NAME"] == name
        assert env["PATRONI_RESTAPI_CONNECT_ADDRESS"] == f"{name}:8008"
        assert env["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == f"{name}:5432"
        assert services[name]["command"] == ["patroni", "/etc/runnerhub-compose/patroni.yml"]
    haproxy = (COMPOSE_DIR / "haproxy-pg.cfg").read_text()
    assert re.findall(r"^\s*server (\S+) (\S+):5432", haproxy, re.M) == [(n, n) for n in PG_MEMBERS]
    assert "check port 8008" in haproxy and "GET /primary" in haproxy
    patroni = yaml.safe_load((COMPOSE_DIR / "patroni.yml").read_text())
    dcs = patroni["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]  # Patroni's own rule
    assert patroni["etcd3"]["hosts"] == "etcd1:2379,etcd2:2379,etcd3:2379"
    # Replicas made at once, not after a spread checkpoint (minutes): as render/patroni.py.
    assert {"checkpoint": "fast"} in patroni["postgresql"]["basebackup"]
    node_env = services["node1"]["environment"]
    assert "host=haproxy-pg port=5000" in node_env["RUNNERHUB_DATABASE__DSN"]


def test_the_compose_nodes_configuration_is_valid_with_their_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = {
        "RH_DB_PASSWORD": "0" * 32,
        "RH_WEBHOOK_SECRET": "1" * 64,
        "RH_GITHUB_TOKEN": "2" * 40,
        "RH_ADMIN_TOKEN": "3" * 64,
    }
    service = compose()["services"]["node2"]
    for key, value in service["environment"].items():
        value = re.sub(r"\$\{(\w+)(?::[?-][^}]*)?\}", lambda m: given[m.group(1)], str(value))
        monkeypatch.setenv(key, value)
    mounts = dict(v.split(":")[1::-1] for v in service["volumes"] if v.startswith("./"))
    config = COMPOSE_DIR / mounts["/etc/runnerhub/config.yaml"]
    settings = load_settings(config)
    assert settings.node.id == "node2"
    assert settings.node.host == "0.0.0.0"
    assert settings.ha.etcd_endpoints and settings.ha.enabled
    assert [s.get_secret_value() for s in settings.webhook.secrets] == [given["RH_WEBHOOK_SECRET"]]
    assert "password=" + given["RH_DB_PASSWORD"] in settings.database.dsn.get_secret_value()
    assert [t.token.get_secret_value() for t in settings.api_tokens] == [given["RH_ADMIN_TOKEN"]]


LOCK = """\
async-timeout==5.0.1 ; python_full_version < '3.11.3' \\
    --hash=sha256:aa
    # via redis
colorama==0.4.6 ; sys_platform == 'win32' \\
    --hash=sha256:bb
    # via click
redis==8.2.0 \\
    --hash=sha256:cc \\
    --hash=sha256:dd
    # via runnerhub (pyproject.toml)
pytest==9.0.0 \\
    --hash=sha256:ee
"""


def test_locked_dependencies_are_chosen_for_the_images_python_not_the_hosts() -> None:
    names = {"async-timeout", "colorama", "redis"}
    old = locked_subset(LOCK, names, marker_env("3.11.2"))
    assert old.splitlines() == [
        "async-timeout==5.0.1 \\",
        "    --hash=sha256:aa",
        "redis==8.2.0 \\",
        "    --hash=sha256:cc \\",
        "    --hash=sha256:dd",
    ]
    new = locked_subset(LOCK, names, marker_env("3.11.7"))
    assert "async-timeout" not in new and "redis==8.2.0" in new
    assert "colorama" not in old + new and "pytest" not in old + new
