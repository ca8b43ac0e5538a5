"""Asking the running `runnerhub up` to change the cluster's shape, from another process
(the CLI: `dr failback`, `dr restore --in-place`). `up` owns the processes it supervises: a
change made behind its back would be undone by its restarts. The request is a file in the
state directory, the answer another; both are private to its owner."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from runnerhub.dev.waiting import wait_until_sync
from runnerhub.paths import write_private

REQUEST = "up.request"
RESULT = "up.result"


class RequestFailed(Exception):
    """`up` tried and could not; the message is its reason."""


def ask_up(
    state_dir: Path, action: str, what: str, timeout_s: float, **params: Any
) -> dict[str, Any]:
    """Ask `up` for `action` and wait for its answer (Timeout when `up` does not answer:
    it is not running on `state_dir`, or the change takes longer)."""
    result = state_dir / RESULT
    result.unlink(missing_ok=True)
    write_private(state_dir / REQUEST, json.dumps({"action": action, **params}))
    wait_until_sync(result.exists, timeout_s, f"`runnerhub up` to {what}", 0.5)
    outcome: dict[str, Any] = json.loads(result.read_text())
    if not outcome.get("ok"):
        raise RequestFailed(str(outcome.get("error")))
    return outcome


def take_request(state_dir: Path) -> dict[str, Any] | None:
    """The request waiting for `up`, taken (None: there is none)."""
    path = state_dir / REQUEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    path.unlink()
    with contextlib.suppress(ValueError):
        request = json.loads(text)
        if isinstance(request, dict):
            return request
    return {"action": text.strip()}


def answer(state_dir: Path, outcome: dict[str, Any]) -> None:
    write_private(state_dir / RESULT, json.dumps(outcome))
