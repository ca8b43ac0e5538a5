"""HAProxy follows the nodes (`runnerhub lb sync`, lb/): a real HAProxy with empty server
slots and two real nodes (HTTP servers, etcd election) on one PostgreSQL. A node that
starts is added to HAProxy through its runtime API and gets traffic, a drained one gets
none, one long silent loses its slot; no file is edited and HAProxy is never reloaded."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from runnerhub.config import Settings
from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.haproxy import find_haproxy
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.waiting import wait_until
from runnerhub.lb.runtime import HAProxyRuntime
from runnerhub.lb.sync import LoadBalancerSync, SyncError
from runnerhub.node import Node
from runnerhub.render.haproxy import BACKEND, SLOT_PREFIX, WEBHOOKS
from tests.integration.test_step_down import node_settings, serving

READ_TOKEN = "read-token-0123456789"
ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
RUNNERHUB = str(Path(sys.executable).parent / "runnerhub")
SLOTS = 4


def haproxy_config(port: int, admin_socket: Path) -> str:
    backend = [
        "    option httpchk GET /readyz",
        "    default-server check inter 200ms fastinter 100ms downinter 500ms fall 2 rise 1",
        f"    server-template {SLOT_PREFIX} 1-{SLOTS} 0.0.0.0:0 disabled",
    ]
    return "\n".join(
        [
            "global",
            f"    stats socket {admin_socket} mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 5s",
            "    timeout server 5s",
            "frontend f",
            f"    bind 127.0.0.1:{port}",
            f"    use_backend {WEBHOOKS} if {{ path /webhooks/github }}",
            f"    default_backend {BACKEND}",
            f"backend {WEBHOOKS}",
            *backend,
            f"backend {BACKEND}",
            *backend,
            "",
        ]
    )


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[tuple[str, HAProxyRuntime, subprocess.Popen[bytes]]]:
    port, socket = free_port(), tmp_path / "admin.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, socket))
    proc = subprocess.Popen(
        [str(find_haproxy()), "-W", "-db", "-f", str(cfg)],  # master-worker: it reloads
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "haproxy.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}", HAProxyRuntime(str(socket)), proc
    finally:
        proc.kill()
        proc.wait(10)


async def answered_by(front: str, n: int = 8) -> set[str]:
    """Which nodes answered `n` requests through HAProxy (round robin)."""
    async with httpx.AsyncClient(timeout=5) as c:
        got = [await c.get(f"{front}/health") for _ in range(n)]
    return {r.json()["node"] for r in got if r.status_code in (200, 503)}


async def serves(front: str, want: set[str]) -> bool:
    return await answered_by(front) == want


async def test_haproxy_follows_nodes_that_start_drain_and_go(
    dsn: str,
    etcd: LocalEtcd,
    tmp_path: Path,
    settings_factory: Callable[..., Settings],
    haproxy: tuple[str, HAProxyRuntime, subprocess.Popen[bytes]],
) -> None:
    front, runtime, proc = haproxy
    await wait_until(lambda: _answers(runtime), 10, "HAProxy's runtime API")
    a = Node(node_settings(settings_factory, "a", dsn, etcd, tmp_path))
    b = Node(node_settings(settings_factory, "b", dsn, etcd, tmp_path))
    token_file = tmp_path / "token"
    token_file.write_text(READ_TOKEN + "\n")
    async with serving(a):
        # The command, once: a is placed in a free slot of both backends.
        command = [RUNNERHUB, "lb", "sync", "--once", "--api", a.settings.node.url]
        command += ["--token-file", str(token_file), "--haproxy-socket", str(runtime.socket)]
        done = await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        for backend in (WEBHOOKS, BACKEND):
            held = {s.name: (s.port, s.state) for s in await runtime.slots(backend)}
            assert held[f"{SLOT_PREFIX}1"] == (a.settings.node.port, "ready"), held
            assert all(held[f"{SLOT_PREFIX}{i}"][1] == "maint" for i in range(2, SLOTS + 1)), held
        await wait_until(lambda: serves(front, {"a"}), 10, "a to answer through HAProxy")

        # b starts: the next round adds it, and both get traffic.
        syncer = LoadBalancerSync(
            [f"http://127.0.0.1:{free_port()}", a.settings.node.url],  # the first is down
            READ_TOKEN,
            runtime,
            forget_after_s=2.0,
        )
        async with serving(b):
            await wait_until(lambda: _knows(a, "b"), 10, "b's heartbeat")
            placed = await syncer.once()
            assert [(c.backend, c.node, c.state) for c in placed.changes] == [
                (WEBHOOKS, "b", "ready"),
                (BACKEND, "b", "ready"),
            ]
            await wait_until(lambda: serves(front, {"a", "b"}), 10, "a and b to get traffic")
            assert (await syncer.once()).changes == []  # in step: nothing to do

            # b is drained through the API: HAProxy stops sending it anything new.
            async with httpx.AsyncClient(timeout=5) as c:
                r = await c.post(f"{a.settings.node.url}/api/v1/nodes/b/drain", headers=ADMIN)
                assert r.status_code == 202, r.text
            drained = await syncer.once()
            assert {(c.node, c.state) for c in drained.changes} == {("b", "drain")}
            assert await answered_by(front, 12) == {"a"}

        # b stopped: once silent past forget_after_s, its slots are freed.
        async def freed() -> bool:
            await syncer.once()
            return all(
                s.state == "maint"
                for s in await runtime.slots(WEBHOOKS)
                if s.port == b.settings.node.port
            )

        await wait_until(freed, 15, "b's slot to be freed", interval_s=0.5)
        assert await answered_by(front) == {"a"}

        # A reload starts a worker with the file's empty slots (HAProxy 2.6 does not restore
        # a server's address from a state file: haproxy/haproxy#3265); the next round puts
        # a back.
        proc.send_signal(signal.SIGUSR2)

        async def reloaded() -> bool:
            return all(s.state == "maint" for s in await runtime.slots(WEBHOOKS))

        await wait_until(reloaded, 10, "HAProxy to reload")
        await syncer.once()
        await wait_until(lambda: serves(front, {"a"}), 10, "a to answer after the reload")


async def test_a_round_that_cannot_work_says_why(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    nowhere = HAProxyRuntime(str(tmp_path / "no.sock"), timeout_s=1)
    with pytest.raises(SyncError, match=f"no node's API answered: {dead}"):
        await LoadBalancerSync([dead], READ_TOKEN, nowhere).once()


async def _answers(runtime: HAProxyRuntime) -> bool:
    try:
        return bool(await runtime.slots(WEBHOOKS))
    except Exception:
        return False


async def _knows(node: Node, other: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as c:
        r = await c.get(
            f"{node.settings.node.url}/api/v1/cluster",
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
        )
    return other in {n["id"] for n in r.json()["nodes"]}
