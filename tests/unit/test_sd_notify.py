"""sd_notify against real AF_UNIX datagram sockets, bound here the way systemd binds its
own: a path, and a name in the abstract namespace ('@' in $NOTIFY_SOCKET)."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerhub.health import sd_notify


def receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


@pytest.fixture
def abstract() -> Iterator[tuple[str, socket.socket]]:
    name = f"runnerhub-test-{secrets.token_hex(6)}"
    with receiver(b"\0" + name.encode()) as sock:
        yield "@" + name, sock


def test_ready_reaches_a_socket_bound_to_a_path(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with receiver(str(path)) as sock:
        sent = sd_notify.notify(
            sd_notify.READY, sd_notify.status("serving"), environ={"NOTIFY_SOCKET": str(path)}
        )
        assert sent
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_stopping_reaches_an_abstract_socket(abstract: tuple[str, socket.socket]) -> None:
    name, sock = abstract
    assert sd_notify.notify(sd_notify.STOPPING, environ={"NOTIFY_SOCKET": name})
    assert sock.recv(4096) == b"STOPPING=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    assert not sd_notify.notify(sd_notify.READY, environ={})
    assert not sd_notify.notify(sd_notify.READY, environ={"NOTIFY_SOCKET": ""})


def test_the_process_environment_is_read_by_default(
    abstract: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, sock = abstract
    monkeypatch.setitem(os.environ, "NOTIFY_SOCKET", name)
    assert sd_notify.notify(sd_notify.READY)
    assert sock.recv(4096) == b"READY=1"


def test_a_socket_nobody_listens_on_is_not_an_error(tmp_path: Path) -> None:
    gone = {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}
    assert not sd_notify.notify(sd_notify.READY, environ=gone)
    absent = {"NOTIFY_SOCKET": f"@runnerhub-nobody-{secrets.token_hex(6)}"}
    assert not sd_notify.notify(sd_notify.READY, environ=absent)


def test_unknown_socket_kinds_are_left_alone() -> None:
    assert sd_notify.address("vsock:2:1234") is None
    assert not sd_notify.notify(sd_notify.READY, environ={"NOTIFY_SOCKET": "vsock:2:1234"})


def test_a_status_is_one_line() -> None:
    """A newline in STATUS= would start a new assignment (READY=1 from a status text)."""
    assert sd_notify.status("waiting\nREADY=1  for\tPostgreSQL") == (
        "STATUS=waiting READY=1 for PostgreSQL"
    )


def test_a_full_receiver_does_not_block_the_sender(abstract: tuple[str, socket.socket]) -> None:
    name, _ = abstract  # never read: its queue fills up
    results = [
        sd_notify.notify("X=" + "y" * 1000, environ={"NOTIFY_SOCKET": name}) for _ in range(2000)
    ]
    assert results[0] and not results[-1]
