"""What to change in HAProxy's server slots so that they hold the cluster's nodes: pure,
so every case is a unit test (tests/unit/test_lb_plan.py).

A slot is a server of a `server-template`: its name is fixed (`node3`) but its address,
port and state are set at run time. A slot in maintenance is free; a node's slot is found
by its address and port, so the plan needs no memory of its own and a restarted syncer,
or two of them, reach the same result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

State = Literal["ready", "drain", "maint"]


@dataclass(frozen=True)
class Slot:
    backend: str
    name: str
    addr: str
    port: int
    state: State


@dataclass(frozen=True)
class Member:
    """A node HAProxy should send traffic to (`draining`: finish what it has, take nothing
    new)."""

    node: str
    addr: str  # an IP address: HAProxy's runtime API takes no name
    port: int
    draining: bool


@dataclass(frozen=True)
class Change:
    backend: str
    slot: str
    state: State
    addr: str | None = None  # set with the port when the slot takes a new node
    port: int | None = None
    node: str | None = None  # who the slot now holds, for the log

    def commands(self) -> list[str]:
        server = f"{self.backend}/{self.slot}"
        moved = [f"set server {server} addr {self.addr} port {self.port}"] if self.addr else []
        return [*moved, f"set server {server} state {self.state}"]


@dataclass(frozen=True)
class Plan:
    changes: list[Change]
    unplaced: list[str]  # nodes left out: their backend has no free slot


def plan(slots: Sequence[Slot], members: Sequence[Member]) -> Plan:
    """Per backend: each member keeps its slot (its state set to ready or drain), takes a
    free one if it has none, and slots holding an address no member has are freed."""
    changes: list[Change] = []
    unplaced: set[str] = set()
    for backend in dict.fromkeys(s.backend for s in slots):
        own = [s for s in slots if s.backend == backend]
        wanted = {(m.addr, m.port): m for m in members}
        # A node in two slots (an operator's doing): the one in service keeps it (later
        # entries win, and free slots sort first).
        held = {(s.addr, s.port): s for s in sorted(own, key=lambda s: s.state != "maint")}
        kept: set[str] = set()
        for key, m in wanted.items():
            slot = held.get(key)
            if slot is None:
                continue
            kept.add(slot.name)
            state: State = "drain" if m.draining else "ready"
            if slot.state != state:
                changes.append(Change(backend, slot.name, state, node=m.node))
        free = [s for s in own if s.name not in kept and s.state == "maint"]
        for s in own:
            if s.name not in kept and s.state != "maint":
                changes.append(Change(backend, s.name, "maint"))  # its node is gone
                free.append(s)
        for key, m in wanted.items():
            if key in held and held[key].name in kept:
                continue
            if not free:
                unplaced.add(m.node)
                continue
            slot = free.pop(0)
            state = "drain" if m.draining else "ready"
            changes.append(Change(backend, slot.name, state, m.addr, m.port, m.node))
    return Plan(changes, sorted(unplaced))


def is_member(url: str | None, silent_s: float, forget_after_s: float) -> bool:
    """A node is in HAProxy's list while it has a URL and was heard from lately; a node
    that died stays (its health check takes it out of service at once) until it has been
    silent `forget_after_s`, so a restart does not shuffle slots. Draining ones stay, in
    the drain state."""
    return url is not None and silent_s < forget_after_s
