"""Placing runners on a pool's hosts, named after what goes wrong otherwise."""

from __future__ import annotations

from runnerhub.domain.placement import HostLoad, placement_order


def test_the_host_with_the_most_room_goes_first_and_a_full_one_never() -> None:
    hosts = [HostLoad("a", 1, 2), HostLoad("b", 1, 4), HostLoad("c", 3, 3)]
    assert placement_order(hosts) == ["b", "a"]


def test_hosts_without_a_limit_share_evenly_and_come_before_limited_ones() -> None:
    hosts = [HostLoad("a", 5), HostLoad("b", 2), HostLoad("c", 0, 10)]
    assert placement_order(hosts) == ["b", "a", "c"]


def test_ties_keep_the_pools_order_so_placement_is_predictable() -> None:
    hosts = [HostLoad("a", 1, 3), HostLoad("b", 1, 3)]
    assert placement_order(hosts) == ["a", "b"]


def test_filling_two_hosts_one_runner_at_a_time_alternates_and_stops_when_full() -> None:
    running = {"a": 0, "b": 0}
    placed = []
    for _ in range(5):
        order = placement_order([HostLoad(h, n, 2) for h, n in running.items()])
        if not order:
            break
        running[order[0]] += 1
        placed.append(order[0])
    assert placed == ["a", "b", "a", "b"]
