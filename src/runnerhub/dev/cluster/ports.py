"""Free loopback ports for the local cluster and the tests.

Chosen below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999 by
default). Outgoing connections take their local ports from that range, so a port picked
there — as binding port 0 does — can be taken by any client's connection between the
moment it is chosen and the moment the server binds it: a Sentinel once failed to start
with "Address already in use" that way. Below the range only another listener can take it,
and the bind check sees one that already has.

Under pytest-xdist each worker (and what it starts) takes its ports from a lane of its own:
another worker's server can then never bind a port between this one's choice and its bind.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

LOWEST = 20000  # well above the well-known ports and the services this machine runs
_handed_out: set[int] = set()  # never the same port twice from one process


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _lane() -> tuple[int, int]:
    """(this process's lane, how many): one per pytest-xdist worker ("gw0", "gw1", ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker[:2] == "gw" and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return int(worker[2:]) % int(count), int(count)
    return 0, 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the range clients take their ports from."""
    high = _ephemeral_start() - 1
    lane, lanes = _lane()
    if high - LOWEST >= 1000:
        for _ in range(200):
            port = LOWEST + lane + lanes * secrets.randbelow((high - LOWEST) // lanes + 1)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    # An unusual port range (or everything taken): the kernel's choice, with its race.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
