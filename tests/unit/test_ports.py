"""Free ports come from below the kernel's ephemeral range (where no client's connection can
take them before the server binds), are bindable, and are not handed out twice."""

from __future__ import annotations

import socket

from runnerhub.dev.cluster.ports import LOWEST, _ephemeral_start, free_port


def test_ports_are_below_the_ephemeral_range_bindable_and_distinct() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(LOWEST <= p < _ephemeral_start() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
