"""A degraded leader hands over (remediation): two real nodes (HTTP servers, etcd election,
health checks) share a PostgreSQL server, the leader through a TCP proxy. While both reach
the database nothing happens; once the proxy's port is closed — the leader cut off from
the database, the follower not — the leader asks the follower to take over, and it does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import uvicorn
from prometheus_client import REGISTRY

from runnerhub.config import Settings
from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.waiting import wait_until
from runnerhub.node import Node


class Proxy:
    """A TCP forwarder whose port can be closed, cutting every connection through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int | None = None) -> int:
        # Below the ephemeral range (free_port): a port the kernel chose there may be some
        # client's by the time the proxy is started on it again.
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port or free_port())
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()


def node_settings(
    factory: Callable[..., Settings], name: str, dsn: str, etcd: LocalEtcd, tmp: Path
) -> Settings:
    return factory(
        node={"id": name, "host": "127.0.0.1", "port": free_port(), "state_dir": str(tmp / name)},
        database={"dsn": dsn, "pool_min_size": 1, "pool_max_size": 4, "connect_timeout_s": 1},
        ha={"etcd_endpoints": etcd.endpoints, "heartbeat_s": 0.5},
        health={"interval_s": 0.2, "timeout_s": 0.3, "github_interval_s": 30},
        remediation={"step_down_after_s": 1.0},
        pools=[],
    )


@contextlib.asynccontextmanager
async def serving(node: Node) -> AsyncIterator[Node]:
    s = node.settings.node
    server = uvicorn.Server(
        uvicorn.Config(node.app, host=s.host, port=s.port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, 20, f"{s.id} to serve")
        yield node
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def step_downs() -> float:
    return REGISTRY.get_sample_value("runnerhub_remediations_total", {"action": "step_down"}) or 0


async def test_a_leader_cut_off_from_the_database_hands_over_to_a_follower(
    dsn: str, etcd: LocalEtcd, tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    host_port = dsn.split("port=")[1].split()[0] if "port=" in dsn else None
    assert host_port is not None, dsn
    proxy = Proxy(int(host_port))
    proxied = dsn.replace(f"port={host_port}", f"port={await proxy.start()}")
    a = Node(node_settings(settings_factory, "a", proxied, etcd, tmp_path))
    b = Node(node_settings(settings_factory, "b", dsn, etcd, tmp_path))
    before = step_downs()
    async with serving(a):
        await wait_until(lambda: a.ctx.leadership.is_leader, 20, "a to lead")
        async with serving(b):

            def healthy(n: Node) -> bool:
                r = n.health.result("database")
                return r is not None and r.status == "ok"

            await wait_until(lambda: healthy(a) and healthy(b), 20, "both to reach PostgreSQL")
            await wait_until(lambda: "b" in a.ctx.state.peers, 10, "the leader to know b")
            # Healthy: well past step_down_after_s, the leader stays where it is.
            await wait_until(lambda: a.step_down.cycles >= 5, 10, "the check to run a while")
            assert a.ctx.leadership.is_leader and step_downs() == before

            await proxy.cut()  # the leader's path to PostgreSQL is gone, b's is not
            await wait_until(lambda: b.ctx.leadership.is_leader, 20, "b to take over")
            assert not a.ctx.leadership.is_leader
            assert step_downs() == before + 1
