"""The node's state told to systemd (sd_notify(3)), for `Type=notify` units: READY=1 once it
serves, STOPPING=1 when it begins to stop, STATUS=... for `systemctl status`.

No libsystemd: the protocol is one datagram of `KEY=value` lines to the AF_UNIX socket in
$NOTIFY_SOCKET, a path or, starting with '@', a name in the abstract namespace. Without
$NOTIFY_SOCKET (not started by systemd, or not Type=notify) every call does nothing. A
notification never raises and never blocks: the service manager is told, or it is not.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

READY = "READY=1"
STOPPING = "STOPPING=1"


def status(text: str) -> str:
    """A STATUS= line: one line, whatever `text` holds."""
    return "STATUS=" + " ".join(text.split())


def address(value: str) -> bytes | None:
    """The socket address $NOTIFY_SOCKET names; None for a kind not handled (vsock:...)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value.encode()
    return None


def message(fields: tuple[str, ...]) -> bytes:
    return "\n".join(fields).encode()


def notify(*fields: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `fields` (READY, STOPPING, status(...)) to the service manager; whether it was
    sent. Safe from a signal handler: one non-blocking send."""
    target = address(environ.get("NOTIFY_SOCKET", ""))
    if target is None or not fields:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message(fields), socket.MSG_DONTWAIT, target)
    except OSError:  # no listener, or its queue is full: systemd times the start out
        return False
    return True
