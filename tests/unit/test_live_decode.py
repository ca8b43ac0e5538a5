"""Live events that arrive through Redis are checked before any stream sees them: one
malformed event (anyone who can write to Redis can publish one) used to raise in the SSE
encoder and end every stream it reached."""

from __future__ import annotations

import json

from runnerhub.api.sse import sse
from runnerhub.live.hub import decode_batch

GOOD = {
    "id": 7,
    "at": "2026-11-30T20:00:00+00:00",
    "node": "node-1",
    "kind": "job.created",
    "subject": "job:1",
    "detail": {},
}


def test_only_events_in_the_published_shape_pass() -> None:
    bad = [
        {k: v for k, v in GOOD.items() if k != "kind"},
        {**GOOD, "id": "7"},
        {**GOOD, "id": True},
        {**GOOD, "kind": 3},
        {**GOOD, "detail": "x"},
        {**GOOD, "subject": []},
        "not an object",
        None,
    ]
    batch = json.dumps([*bad, GOOD, {**GOOD, "id": 8, "subject": None}]).encode()
    assert [e["id"] for e in decode_batch(batch)] == [7, 8]
    for event in decode_batch(batch):
        assert sse(event).startswith(b"id: ")  # each can be sent


def test_garbage_is_an_empty_batch() -> None:
    for payload in (b"{", b"{}", b"\xff", b"[" * 100_000 + b"]" * 100_000):
        assert decode_batch(payload) == []
