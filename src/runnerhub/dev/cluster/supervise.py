"""When `runnerhub up` restarts a process of the local cluster that exited: pure decision.

What systemd's `Restart=on-failure` with a start limit does for a production install: a
process that exits is started again after a short, growing delay (1 s, 2 s, 4 s… up to
`max_delay_s`), and one that keeps exiting — `burst` restarts within `window_s` — is given
up on and reported, rather than restarted in a loop that hides the fault.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["restart", "wait", "give_up"]


@dataclass
class RestartPolicy:
    burst: int = 5
    window_s: float = 60.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    _restarts: dict[str, deque[float]] = field(default_factory=dict)
    _dead_since: dict[str, float] = field(default_factory=dict)
    given_up: set[str] = field(default_factory=set)

    def decide(self, name: str, now: float) -> Decision:
        """`name` is found exited at `now`: restart it now, wait, or give up on it."""
        if name in self.given_up:
            return "give_up"
        recent = self._restarts.setdefault(name, deque())
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.burst:
            self.given_up.add(name)
            return "give_up"
        since = self._dead_since.setdefault(name, now)
        delay = min(self.first_delay_s * 2 ** len(recent), self.max_delay_s)
        if now - since < delay:
            return "wait"
        recent.append(now)
        del self._dead_since[name]
        return "restart"

    def restarts(self, name: str) -> int:
        """Restarts within the window."""
        return len(self._restarts.get(name, ()))
