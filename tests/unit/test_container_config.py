"""The container backend's create body and its settings (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runnerhub.backends.base import RunnerSpec
from runnerhub.backends.container import ENGINE_SOCKET, JIT_ENV, container_config
from runnerhub.backends.ssh_tunnel import ssh_argv
from runnerhub.config import ContainerBackendSettings, SshTarget, ssh_target

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
        ({"endpoint": "http://host"}, "String should match pattern"),
        ({"endpoint": "ssh://host:22x"}, "the port is not a number"),
        ({"endpoint": "ssh://:22/sock"}, r"ssh://\[user@\]host"),
        ({"endpoint": "ssh://u:pw@host"}, r"ssh://\[user@\]host"),
        ({"ssh_identity": "/id"}, "for an ssh:// endpoint"),
        ({"endpoint": "tcp://h:2376", "engine_socket": True}, "engine_socket"),
        (
            {"hosts": [{"endpoint": "unix:///a.sock"}], "ssh_identity": "/id"},
            r"each host's tls_\* and ssh_\* settings are its own",
        ),
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


def test_an_ssh_endpoint_is_forwarded_by_openssh_with_the_hosts_key_required() -> None:
    target = ssh_target("ssh://ops@runners-3:2222/run/podman/podman.sock")
    assert target == SshTarget("runners-3", 2222, "ops", "/run/podman/podman.sock")
    assert ssh_target("ssh://runners-3") == SshTarget(
        "runners-3", None, None, "/var/run/docker.sock"
    )
    argv = ssh_argv(
        "/usr/bin/ssh", target, Path("/tmp/rh-ssh-x/engine.sock"), Path("/id"), Path("/kh")
    )
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[argv.index("-i") + 1] == "/id" and "UserKnownHostsFile=/kh" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "ops"
    assert argv[-4:] == [
        "-L",
        "/tmp/rh-ssh-x/engine.sock:/run/podman/podman.sock",
        "--",
        "runners-3",
    ]
    # The engine's socket inside a runner is the remote host's own path.
    s = ContainerBackendSettings(
        image="runner:1", endpoint="ssh://runners-3/run/podman/podman.sock", engine_socket=True
    )
    assert container_config(SPEC, s)["HostConfig"]["Binds"] == [
        f"/run/podman/podman.sock:{ENGINE_SOCKET}"
    ]
