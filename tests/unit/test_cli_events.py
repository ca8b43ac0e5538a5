"""`runnerhub events`: Server-Sent Events parsed as a browser's EventSource would, and one
readable line per event."""

from __future__ import annotations

from runnerhub.cli.events import format_event, parse_sse


def test_parse_sse_yields_each_event_and_skips_comments_and_garbage() -> None:
    lines = [
        ": runnerhub live events",
        "",
        "id: 7",
        "event: job.created",
        'data: {"id": 7, "kind": "job.created"}',
        "",
        ": keepalive",
        "",
        "data: not json",
        "",
        "data: [1, 2]",  # JSON, but not an event
        "",
        "id: 8",
        'data: {"id": 8,',
        'data:  "kind": "runner.busy"}',
        "",
    ]
    assert list(parse_sse(iter(lines))) == [
        {"id": 7, "kind": "job.created"},
        {"id": 8, "kind": "runner.busy"},
    ]


def test_format_event_is_one_line_with_the_detail_as_pairs() -> None:
    line = format_event(
        {
            "id": 3,
            "at": "2026-11-30T08:00:01.123456+00:00",
            "node": "node-2",
            "kind": "leader.elected",
            "subject": "cluster",
            "detail": {"epoch": 4, "previous_leader": "node-1"},
        }
    )
    assert line.startswith("2026-11-30 08:00:01.123  node-2")
    assert "leader.elected" in line and "cluster" in line
    assert line.endswith('epoch=4 previous_leader="node-1"')
    assert "\n" not in line
