"""Free loopback ports for the local cluster and the tests.

Chosen below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999 by
default). Outgoing connections take their local ports from that range, so a port picked
there — as binding port 0 does — can be taken by any client's connection between the
moment it is chosen and the moment the server binds it: a Sentinel once failed to start
with "Address already in use" that way. Below the range only another listener can take it,
and the bind check sees one that already has.
"""

from __future__ import annotations

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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the range clients take their ports from."""
    high = _ephemeral_start() - 1
    if high - LOWEST >= 1000:
        for _ in range(200):
            port = LOWEST + secrets.randbelow(high - LOWEST + 1)
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
