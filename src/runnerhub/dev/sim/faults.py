"""Fault injection, set through `POST /_sim/faults` (merged) and `DELETE /_sim/faults`.

Body keys (all optional):
- `drop_webhooks`: fraction 0..1 of delivery attempts that fail without reaching the
  receiver (recorded "timed out", status_code 0).
- `lose_webhooks`: fraction 0..1 of deliveries never sent but recorded as OK.
- `responses`: {endpoint key: [status, ...]}: the next calls to that endpoint answer these
  statuses, one per call (a key's list replaces the previous one).
- `rate_limit_remaining`: set the remaining primary budget of every token (or only of
  `rate_limit_token`), including tokens first seen after this call.
- `seed`: reseed the random source behind the fractions.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Literal

from runnerhub.dev.sim.errors import invalid

ENDPOINT_KEYS = frozenset(
    {
        "access-token",
        "generate-jitconfig",
        "list-runners",
        "get-runner",
        "delete-runner",
        "list-runs",
        "get-run",
        "list-jobs",
        "get-job",
        "list-repos",
        "deliveries",
        "redeliver",
        "rate-limit",
    }
)

WebhookFate = Literal["send", "drop", "lose"]


def _fraction(body: dict[str, Any], key: str) -> float:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise invalid("Faults", key, f"{key} must be a number from 0 to 1")
    return float(value)


class Faults:
    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.clear()

    def clear(self) -> None:
        self.drop_webhooks = 0.0
        self.lose_webhooks = 0.0
        self.responses: dict[str, deque[int]] = {}
        self.rate_limit_remaining: int | None = None
        self.rate_limit_token: str | None = None

    def merge(self, body: Any) -> None:
        """Validate everything first, so a bad body changes nothing."""
        if not isinstance(body, dict):
            raise invalid("Faults", "body", "the body must be a JSON object")
        known = {
            "drop_webhooks",
            "lose_webhooks",
            "responses",
            "rate_limit_remaining",
            "rate_limit_token",
            "seed",
        }
        for key in body:
            if key not in known:
                raise invalid("Faults", key, f"unknown fault {key!r}")
        drop = _fraction(body, "drop_webhooks") if "drop_webhooks" in body else None
        lose = _fraction(body, "lose_webhooks") if "lose_webhooks" in body else None
        responses = self._responses(body.get("responses", {}))
        remaining = body.get("rate_limit_remaining")
        if remaining is not None and (
            isinstance(remaining, bool) or not isinstance(remaining, int) or remaining < 0
        ):
            raise invalid("Faults", "rate_limit_remaining", "must be an integer >= 0")
        token = body.get("rate_limit_token")
        if token is not None and not isinstance(token, str):
            raise invalid("Faults", "rate_limit_token", "must be a string")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise invalid("Faults", "seed", "must be an integer")

        if drop is not None:
            self.drop_webhooks = drop
        if lose is not None:
            self.lose_webhooks = lose
        self.responses.update(responses)
        if remaining is not None:
            self.rate_limit_remaining = remaining
            self.rate_limit_token = token
        if seed is not None:
            self.rng = random.Random(seed)

    @staticmethod
    def _responses(value: Any) -> dict[str, deque[int]]:
        if not isinstance(value, dict):
            raise invalid("Faults", "responses", "responses must be an object")
        parsed: dict[str, deque[int]] = {}
        for key, statuses in value.items():
            if key not in ENDPOINT_KEYS:
                raise invalid("Faults", "responses", f"unknown endpoint key {key!r}")
            if not isinstance(statuses, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
            ):
                raise invalid("Faults", "responses", f"{key}: a list of HTTP status codes")
            parsed[key] = deque(statuses)
        return parsed

    def take_response(self, key: str) -> int | None:
        queue = self.responses.get(key)
        if not queue:
            return None
        status = queue.popleft()
        if not queue:
            del self.responses[key]
        return status

    def webhook_fate(self) -> WebhookFate:
        if not self.drop_webhooks and not self.lose_webhooks:
            return "send"
        roll = self.rng.random()
        if roll < self.drop_webhooks:
            return "drop"
        if roll < self.drop_webhooks + self.lose_webhooks:
            return "lose"
        return "send"

    def to_json(self) -> dict[str, Any]:
        return {
            "drop_webhooks": self.drop_webhooks,
            "lose_webhooks": self.lose_webhooks,
            "responses": {key: list(q) for key, q in self.responses.items()},
            "rate_limit_remaining": self.rate_limit_remaining,
            "rate_limit_token": None if self.rate_limit_token is None else "<set>",
        }
