"""`GET /api/v1/events/stream`: live events as Server-Sent Events (SSE).

A client that reconnects (to any node: HAProxy may pick another) sends the last id it saw
as `Last-Event-ID`; the stream first replays what it missed from the events table, then
goes live. A comment line every `KEEPALIVE_S` keeps proxies from closing an idle stream
(our HAProxy gives up on a silent server after 4 s).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from runnerhub.live.hub import LiveHub, encode_event, kind_matches
from runnerhub.store import events as event_store
from runnerhub.store.db import Pool

KEEPALIVE_S = 2.0
# At most this much history is replayed on reconnect; older is for GET /api/v1/events.
REPLAY_LIMIT = 1000


def sse(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"), default=str)
    return f"id: {event['id']}\nevent: {event['kind']}\ndata: {data}\n\n".encode()


async def event_stream(
    db: Pool, live: LiveHub, kinds: tuple[str, ...], after: int | None
) -> AsyncIterator[bytes]:
    # Subscribe before reading history, so nothing falls between the two.
    with live.subscribe(kinds, after) as sub:
        yield b": runnerhub live events\n\n"
        replayed: set[int] = set()
        if after is not None:
            async with db.connection() as conn:
                rows = await event_store.read_after(conn, after, REPLAY_LIMIT)
            for row in rows:
                replayed.add(row.id)
                if kind_matches(kinds, row.kind):
                    yield sse(encode_event(row))
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if event["id"] not in replayed:
                yield sse(event)
