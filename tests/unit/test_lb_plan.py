"""lb/plan.py: HAProxy's server slots follow the cluster's nodes."""

from __future__ import annotations

from runnerhub.lb.plan import Change, Member, Slot, is_member, plan

FREE = ("127.0.0.1", 1)


def slots(*held: tuple[str, int, str], backend: str = "webhooks", n: int = 4) -> list[Slot]:
    out = [Slot(backend, f"node{i + 1}", a, p, st) for i, (a, p, st) in enumerate(held)]  # type: ignore[arg-type]
    out += [Slot(backend, f"node{i + 1}", *FREE, "maint") for i in range(len(held), n)]
    return out


def member(node: str, last: int, draining: bool = False) -> Member:
    return Member(node, f"10.0.0.{last}", 8080, draining)


def test_new_nodes_take_free_slots_in_every_backend() -> None:
    current = slots() + slots(backend="runnerhub")
    p = plan(current, [member("a", 1), member("b", 2)])
    assert p.unplaced == []
    assert p.changes == [
        Change("webhooks", "node1", "ready", "10.0.0.1", 8080, "a"),
        Change("webhooks", "node2", "ready", "10.0.0.2", 8080, "b"),
        Change("runnerhub", "node1", "ready", "10.0.0.1", 8080, "a"),
        Change("runnerhub", "node2", "ready", "10.0.0.2", 8080, "b"),
    ]
    assert p.changes[0].commands() == [
        "set server webhooks/node1 addr 10.0.0.1 port 8080",
        "set server webhooks/node1 state ready",
    ]


def test_in_step_nothing_changes() -> None:
    current = slots(("10.0.0.1", 8080, "ready"), ("10.0.0.2", 8080, "drain"))
    assert plan(current, [member("a", 1), member("b", 2, draining=True)]).changes == []


def test_a_draining_node_is_drained_and_a_gone_one_frees_its_slot() -> None:
    current = slots(("10.0.0.1", 8080, "ready"), ("10.0.0.2", 8080, "ready"))
    p = plan(current, [member("a", 1, draining=True)])
    assert p.changes == [
        Change("webhooks", "node1", "drain", node="a"),
        Change("webhooks", "node2", "maint"),
    ]


def test_a_returning_node_reuses_its_old_slot() -> None:
    current = slots(("10.0.0.9", 8080, "maint"), ("10.0.0.1", 8080, "ready"))
    p = plan(current, [member("a", 1), member("z", 9)])
    assert p.changes == [Change("webhooks", "node1", "ready", node="z")]


def test_a_node_in_two_slots_keeps_the_one_in_service() -> None:
    current = slots(("10.0.0.1", 8080, "maint"), ("10.0.0.1", 8080, "ready"))
    assert plan(current, [member("a", 1)]).changes == []
    current = slots(("10.0.0.1", 8080, "ready"), ("10.0.0.1", 8080, "ready"))
    assert plan(current, [member("a", 1)]).changes == [Change("webhooks", "node1", "maint")]


def test_nodes_beyond_the_slots_are_named_not_dropped_silently() -> None:
    p = plan(slots(n=1), [member("a", 1), member("b", 2)])
    assert [c.node for c in p.changes] == ["a"] and p.unplaced == ["b"]


def test_membership_forgets_only_the_long_silent() -> None:
    assert is_member("http://10.0.0.1:8080", 5.0, 300.0)
    assert not is_member("http://10.0.0.1:8080", 300.0, 300.0)
    assert not is_member(None, 0.0, 300.0)
