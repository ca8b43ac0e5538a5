"""The node's HAProxy agent (lb/agent.py): what it answers, and its setting's errors. Its
effect on a real HAProxy is in tests/integration/test_local_haproxy.py."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from runnerhub.config import ConfigError, load_settings
from runnerhub.lb.agent import LoadBalancerAgent, reply
from tests.unit.test_config import VALID, write


def test_the_leader_asks_for_one_percent_and_the_others_for_all() -> None:
    # HAProxy's agent protocol: a percentage of the configured weight, then a newline.
    # Not 0%: that is "drain", which takes nothing even when the leader is the only node.
    assert reply(leading=True) == b"1%\n"
    assert reply(leading=False) == b"100%\n"


async def test_each_connection_gets_the_answer_of_that_moment() -> None:
    leading = [False]
    with socket.socket() as s:  # a free port, released for the agent
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = LoadBalancerAgent("127.0.0.1", port, lambda: leading[0])
    await agent.start()
    try:

        async def ask() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answer = await reader.read()  # the agent closes after its line
            writer.close()
            return answer

        assert await ask() == b"100%\n"
        leading[0] = True
        assert await ask() == b"1%\n"
    finally:
        await agent.close()


async def test_a_port_in_use_is_named_as_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = LoadBalancerAgent("127.0.0.1", port, lambda: False)
        where = rf"node.lb_agent_port: cannot listen on 127.0.0.1:{port}"
        with pytest.raises(OSError, match=where):
            await agent.start()


def test_the_agent_port_must_not_be_the_api_port(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "node: {port: 8080, lb_agent_port: 8080}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value) and "lb_agent_port must differ" in str(info.value)
    assert load_settings(write(tmp_path, VALID)).node.lb_agent_port is None  # off by default
