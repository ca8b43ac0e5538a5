"""Free ports come from below the kernel's ephemeral range (where no client's connection can
take them before the server binds), are bindable, and are not handed out twice."""

from __future__ import annotations

import socket

import pytest

from runnerhub.dev.cluster.ports import LOWEST, _ephemeral_start, free_port


def test_ports_are_below_the_ephemeral_range_bindable_and_distinct() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(LOWEST <= p < _ephemeral_start() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_each_xdist_worker_takes_its_ports_from_a_lane_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    for lane in range(3):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{lane}")
        ports = [free_port() for _ in range(20)]
        assert {(p - LOWEST) % 3 for p in ports} == {lane}, ports
        assert all(LOWEST <= p < _ephemeral_start() for p in ports)
