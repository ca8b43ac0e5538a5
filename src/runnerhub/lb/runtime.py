"""HAProxy's runtime API (its admin-level `stats socket`): read a backend's servers, change
one. One command per connection, as HAProxy's non-interactive mode expects."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from runnerhub.lb.plan import Slot, State

# srv_admin_state bits (HAProxy's SRV_ADMF_*): forced, inherited, resolver and
# health-check maintenance; forced and inherited drain. CMAINT (0x04, `disabled` in the
# file) stays set after `state ready` although the server serves: it is not counted.
MAINT_BITS = 0x01 | 0x02 | 0x20 | 0x40
DRAIN_BITS = 0x08 | 0x10
TIMEOUT_S = 5.0
OK_NOTE = "by 'stats socket command'"


class HAProxyRuntimeError(Exception):
    """The socket cannot be reached, or HAProxy refused a command (its answer is the text)."""


class HAProxyRuntime:
    def __init__(self, socket: str, timeout_s: float = TIMEOUT_S) -> None:
        self.socket = socket  # a unix socket path, or host:port for a TCP one
        self.timeout_s = timeout_s

    async def command(self, line: str) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.socket.startswith("/"):
                    reader, writer = await asyncio.open_unix_connection(self.socket)
                else:
                    host, _, port = self.socket.rpartition(":")
                    reader, writer = await asyncio.open_connection(host, int(port))
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    return (await reader.read()).decode(errors="replace")
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError) as exc:
            why = str(exc) or type(exc).__name__
            raise HAProxyRuntimeError(
                f"HAProxy's runtime API at {self.socket} does not answer: {why}"
            ) from None

    async def slots(self, backend: str) -> list[Slot]:
        text = await self.command(f"show servers state {backend}")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        header = next((ln for ln in lines if ln.startswith("# be_id")), None)
        if header is None:
            raise HAProxyRuntimeError(f"no backend {backend!r} in HAProxy: {text.strip()!r}")
        cols = header[2:].split()
        out = []
        for ln in lines[lines.index(header) + 1 :]:
            row = dict(zip(cols, ln.split(), strict=False))
            out.append(
                Slot(
                    backend,
                    row["srv_name"],
                    row["srv_addr"],
                    int(row["srv_port"]),
                    admin_state(int(row["srv_admin_state"])),
                )
            )
        return out

    async def apply(self, commands: Sequence[str]) -> None:
        """Run each in order. `set server ... state` answers nothing when it worked, `set
        server ... addr` a note of what changed "by 'stats socket command'"; anything else
        is HAProxy's refusal."""
        for line in commands:
            answer = (await self.command(line)).strip()
            if answer and not (answer.startswith("No need to change") or OK_NOTE in answer):
                raise HAProxyRuntimeError(f"HAProxy refused {line!r}: {answer}")


def admin_state(bits: int) -> State:
    if bits & MAINT_BITS:
        return "maint"
    if bits & DRAIN_BITS:
        return "drain"
    return "ready"
