"""Strategies for fuzzing the intake: GitHub's real payload shapes with mutations, at the
JSON level (values replaced by any JSON, keys dropped, nesting added) and the byte level."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.payloads import workflow_job

EVENTS = st.sampled_from(["workflow_job", "ping", "push", "", "workflow_run", "WORKFLOW_JOB"])

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def real_shapes() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        workflow_job,
        st.integers(min_value=1, max_value=2**53),
        st.sampled_from(["queued", "in_progress", "completed", "waiting", "requested"]),
        st.none() | st.lists(st.text(max_size=12), max_size=4),
        st.sampled_from(["acme/app", "other/x", "a/b"]),
        runner_name=st.none() | st.text(max_size=10),
        conclusion=st.none() | st.sampled_from(["success", "failure"]),
    )


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    payload: Any = draw(real_shapes())
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(paths(payload)))
        kind = draw(st.sampled_from(["replace", "drop", "nest"]))
        if not where:
            payload = draw(JSON) if kind == "replace" else [payload]
            continue
        parent = payload
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        if kind == "drop" and isinstance(parent, dict):
            del parent[last]
        elif kind == "nest":
            parent[last] = {"x": [parent[last]]}
        else:
            parent[last] = draw(JSON)
    body = json.dumps(payload).encode()
    if draw(st.booleans()):  # byte-level: flips, cuts, insertions
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 3))):
            if not data:
                break
            i = draw(st.integers(0, len(data) - 1))
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip":
                data[i] ^= draw(st.integers(1, 255))
            elif op == "cut":
                del data[i:]
            else:
                data[i:i] = draw(st.binary(min_size=1, max_size=4))
        body = bytes(data)
    return body
