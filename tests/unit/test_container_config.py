"""The container backend's create body and its settings (no engine needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runnerhub.backends.base import RunnerSpec
from runnerhub.backends.container import ENGINE_SOCKET, JIT_ENV, container_config
from runnerhub.config import ContainerBackendSettings

SPEC = RunnerSpec("rh-42-1", "linux", ("self-hosted",), 42, "SECRET-JIT", 2, 99)


def test_the_jit_config_is_in_the_environment_only_and_nothing_is_mounted_by_default() -> None:
    body = container_config(SPEC, ContainerBackendSettings(image="runner:1"))
    assert f"{JIT_ENV}=SECRET-JIT" in body["Env"]
    assert "SECRET-JIT" not in str(body["Labels"]) and "Cmd" not in body
    assert body["Labels"] == {
        "io.runnerhub.runner": "rh-42-1",
        "io.runnerhub.pool": "linux",
        "io.runnerhub.job": "42",
        "io.runnerhub.attempt": "2",
        "io.runnerhub.epoch": "99",
    }
    host = body["HostConfig"]
    assert host["Binds"] == [] and host["PidsLimit"] == 1024
    assert host["SecurityOpt"] == ["no-new-privileges"] and not host["ReadonlyRootfs"]


def test_the_pool_says_what_goes_in_limits_mounts_and_the_engine_socket() -> None:
    s = ContainerBackendSettings(
        image="runner:1",
        endpoint="unix:///run/podman/podman.sock",
        command=["./run.sh"],
        env={"RUNNER_ALLOW_RUNASROOT": "0"},
        user="1001",
        cpus=1.5,
        memory_mb=2048,
        read_only=True,
        mounts=["/srv/cache:/cache:ro"],
        engine_socket=True,
    )
    body = container_config(SPEC, s)
    host = body["HostConfig"]
    assert body["Cmd"] == ["./run.sh"] and body["User"] == "1001"
    assert host["NanoCpus"] == 1_500_000_000 and host["Memory"] == 2048 << 20
    assert host["Binds"] == ["/srv/cache:/cache:ro", f"/run/podman/podman.sock:{ENGINE_SOCKET}"]
    assert host["ReadonlyRootfs"] and "/tmp" in host["Tmpfs"]
    assert body["Env"][-1] == f"{JIT_ENV}=SECRET-JIT"  # nothing of the pool's overrides it


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mounts": ["/srv"]}, "a mount is source:/target"),
        ({"mounts": ["/srv:/x:rx"]}, "the mode is ro or rw"),
        ({"endpoint": "ssh://host"}, "String should match pattern"),
        ({"tls_ca": "/ca.pem"}, "go together"),
        (
            {"tls_ca": "/ca", "tls_cert": "/c", "tls_key": "/k"},
            "TLS client certificates are for a tcp:// endpoint",
        ),
        (
            {"hosts": [{"endpoint": "unix:///a.sock"}, {"endpoint": "unix:///a.sock"}]},
            "each runner host's endpoint once",
        ),
        ({"hosts": [{"endpoint": "tcp://h:2376", "tls_ca": "/ca"}]}, "go together"),
        ({"hosts": [{"endpoint": "unix:///a.sock", "max_runners": 0}]}, "greater than or equal"),
    ],
)
def test_bad_settings_say_what_is_wrong(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ContainerBackendSettings(image="runner:1", **change)  # type: ignore[arg-type]


def test_one_endpoint_is_one_runner_host_and_hosts_replace_it() -> None:
    one = ContainerBackendSettings(image="runner:1", endpoint="unix:///a.sock")
    assert [h.endpoint for h in one.engines()] == ["unix:///a.sock"]
    two = ContainerBackendSettings(
        image="runner:1",
        hosts=[{"endpoint": "unix:///a.sock", "max_runners": 2}, {"endpoint": "tcp://b:2375"}],
    )
    assert [(h.endpoint, h.max_runners) for h in two.engines()] == [
        ("unix:///a.sock", 2),
        ("tcp://b:2375", None),
    ]
