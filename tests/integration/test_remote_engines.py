"""Runner hosts reached the two ways a remote engine is: over TCP with TLS client
certificates (HAProxy's TLS in front of a Podman API service, as `dockerd --tlsverify`
would be), and over SSH (OpenSSH's server on a loopback port; the backend forwards the
engine's socket with OpenSSH's client). Only a client with the CA's certificate, or with
the authorised key and the host's known key, gets in; a forward that dies is made again and
finds the same containers; a host whose SSH server is gone is unreachable, with ssh's
reason, until it is back."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerhub.backends.base import BackendError, RunnerSpec
from runnerhub.backends.container import ContainerBackend
from runnerhub.config import ContainerBackendSettings
from runnerhub.dev.cluster.podman import RUNNER_IMAGE, LocalPodman
from runnerhub.dev.cluster.remote_engine import LocalSshd, TlsEngineFront
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.dev.waiting import wait_until
from tests.github_process import LINUX

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sshd runs as root")


def settings(endpoint: str, **access: object) -> ContainerBackendSettings:
    return ContainerBackendSettings(
        image=RUNNER_IMAGE,
        endpoint=endpoint,
        network="host",
        command=["sleep", "300"],
        stop_timeout_s=1,
        **access,  # type: ignore[arg-type]
    )


POOL = "remote"  # a pool of its own: the shared engine may run other tests' runners


def spec(name: str, job: int) -> RunnerSpec:
    return RunnerSpec(name, POOL, tuple(LINUX), job, "not-a-real-jit-config", 1, 7)


def names(engine: LocalPodman) -> list[str]:
    """This pool's containers on the engine, running or not."""
    out = engine.podman(
        "ps", "--all", "--filter", f"label=io.runnerhub.pool={POOL}", "--format", "{{.Names}}"
    )
    return out.split()


@pytest.fixture
def tls_front(podman: LocalPodman, tmp_path: Path) -> Iterator[TlsEngineFront]:
    front = TlsEngineFront(tmp_path / "tls", podman.socket)
    front.start()
    yield front
    front.stop()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[LocalSshd]:
    server = LocalSshd(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


async def test_a_tcp_runner_host_takes_only_a_client_with_the_cas_certificate(
    podman: LocalPodman, tls_front: TlsEngineFront, tmp_path: Path
) -> None:
    client = tls_front.client
    good = settings(
        tls_front.endpoint, tls_ca=tls_front.ca.cert, tls_cert=client.cert, tls_key=client.key
    )
    stranger = LocalCA(tmp_path / "other-ca").issue("mallory", client=True)
    refused = {
        "no certificate": settings(tls_front.endpoint),
        "another CA's certificate": settings(
            tls_front.endpoint,
            tls_ca=tls_front.ca.cert,
            tls_cert=stranger.cert,
            tls_key=stranger.key,
        ),
    }
    b = ContainerBackend({POOL: good})
    try:
        ref = await b.provision(spec("rh-950-1", 950))
        assert ref.endswith(f"@{tls_front.endpoint}")
        assert names(podman) == ["rh-950-1"]
        [seen] = await b.list()
        assert seen.name == "rh-950-1" and seen.alive and seen.ref == ref
        for why, s in refused.items():
            other = ContainerBackend({POOL: s})
            try:
                with pytest.raises(BackendError, match="did not answer"):
                    await other.provision(spec("rh-951-1", 951))
                assert await other.list() == [], why  # it saw nothing
            finally:
                await other.close()
        assert names(podman) == ["rh-950-1"]  # nothing was started by the refused
        await b.terminate("rh-950-1")
        assert names(podman) == []
    finally:
        for r in await b.list():
            await b.terminate(r.name)
        await b.close()


async def test_an_ssh_runner_host_is_reached_through_a_forward_that_is_made_again(
    podman: LocalPodman, sshd: LocalSshd
) -> None:
    endpoint = f"ssh://root@127.0.0.1:{sshd.port}{podman.socket}"
    s = settings(endpoint, ssh_identity=sshd.client_key, ssh_known_hosts=sshd.known_hosts)
    b = ContainerBackend({POOL: s}, failure_threshold=2, open_s=0.2)
    tunnel = b._hosts[endpoint].tunnel
    assert tunnel is not None
    try:
        ref = await b.provision(spec("rh-960-1", 960))
        assert ref.endswith(f"@{endpoint}") and names(podman) == ["rh-960-1"]
        first = tunnel.pid
        assert first is not None

        # The forward dies: the next call makes it again and sees the same container.
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: tunnel._proc is None or tunnel._proc.returncode is not None)

        async def listed() -> list[str]:
            return [r.ref for r in await b.list() if r.alive]

        assert await wait_until(listed, 10, "the runner seen again") == [ref]
        assert tunnel.pid not in (None, first)

        # The host's SSH server goes and the forward with it: unreachable, with ssh's
        # reason; its runner is not started elsewhere nor again, and is seen once it is back.
        sshd.kill()
        sshd.wait_exit()
        assert tunnel.pid is not None
        os.kill(tunnel.pid, signal.SIGKILL)
        await wait_until(lambda: tunnel._proc is None or tunnel._proc.returncode is not None)
        assert await b.list() == [] and b.unreachable(ref)  # the breaker's first failure
        with pytest.raises(BackendError, match="Connection refused"):
            await b.provision(spec("rh-961-1", 961))
        sshd.start()
        assert await wait_until(listed, 10, "the runner seen again") == [ref]
        assert names(podman) == ["rh-960-1"]
    finally:
        for r in await b.list():
            await b.terminate(r.name)
        await b.close()
    assert tunnel.pid is None and not tunnel.socket.exists()  # closed: no forward left


async def test_an_ssh_runner_host_whose_key_is_not_known_is_refused(
    podman: LocalPodman, sshd: LocalSshd, tmp_path: Path
) -> None:
    """Never trusted on first use: with a known_hosts that does not hold the host's key,
    nothing is done there."""
    strangers = tmp_path / "known_hosts"
    strangers.write_text("")
    endpoint = f"ssh://root@127.0.0.1:{sshd.port}{podman.socket}"
    s = settings(endpoint, ssh_identity=sshd.client_key, ssh_known_hosts=strangers)
    b = ContainerBackend({POOL: s})
    try:
        with pytest.raises(BackendError, match="Host key verification failed"):
            await b.provision(spec("rh-962-1", 962))
        assert names(podman) == []
    finally:
        await b.close()
