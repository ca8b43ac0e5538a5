"""HAProxy's agent check (`agent-check agent-port N` on a server line): a TCP port on each
node that answers every connection with one line, the share of deliveries the node asks
for, and closes. The webhook backend draws nodes at random by weight (`balance random(2)`),
so the leader, asking for 1%, gets almost none while another node is up, and all of them
when it is the only one: its control loops (a backlog provisioned at once after a database
failover, say) and its own faults (a frozen leader) then keep no delivery waiting. HAProxy
does not count an agent it cannot reach as a failure: the regular health check decides
whether a node is up, and the last weight stays (docs/load-balancer.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from prometheus_client import Gauge

log = structlog.get_logger("runnerhub.lb")

LEADER_PERCENT = 1  # not 0: a node of weight 0 gets nothing, even with no other node up
FOLLOWER_PERCENT = 100

WEIGHT = Gauge(
    "runnerhub_lb_agent_weight_percent",
    "The share of HAProxy's configured weight this node asks for in the webhook backend "
    "(1 while it leads, 100 otherwise).",
)


def weight_percent(leading: bool) -> int:
    """What a node asks HAProxy for: the leader runs the control loops, the others only
    take deliveries."""
    return LEADER_PERCENT if leading else FOLLOWER_PERCENT


def reply(leading: bool) -> bytes:
    """The agent's answer, in HAProxy's agent protocol: a weight in percent, then a newline."""
    return f"{weight_percent(leading)}%\n".encode()


class LoadBalancerAgent:
    """Serves `reply(leading())` on host:port until closed."""

    def __init__(self, host: str, port: int, leading: Callable[[], bool]) -> None:
        self.host, self.port = host, port
        self._leading = leading
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._answer, self.host, self.port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"node.lb_agent_port: cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        log.info("load balancer agent listening", host=self.host, port=self.port)

    async def _answer(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        leading = self._leading()
        WEIGHT.set(weight_percent(leading))
        try:
            writer.write(reply(leading))
            await writer.drain()
        except OSError:
            pass  # HAProxy went away first: it asks again at the next interval
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
