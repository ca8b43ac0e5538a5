"""How often an automatic action may run: at most `limit` in any `window_s`. Pure."""

from __future__ import annotations

from collections import deque


class ActionBudget:
    def __init__(self, limit: int, window_s: float = 3600.0) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("an action budget needs a positive limit and window")
        self.limit = limit
        self.window_s = window_s
        self._taken: deque[float] = deque()

    def take(self, now: float) -> bool:
        """Spend one action now if the budget allows it."""
        while self._taken and self._taken[0] <= now - self.window_s:
            self._taken.popleft()
        if len(self._taken) >= self.limit:
            return False
        self._taken.append(now)
        return True
