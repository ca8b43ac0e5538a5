"""When `runnerhub up` restarts an exited process (dev.cluster.supervise): after a growing
delay, and never in a loop: one that keeps exiting is given up on."""

from __future__ import annotations

from runnerhub.dev.cluster.supervise import RestartPolicy


def test_an_exited_process_is_restarted_after_a_delay_that_grows() -> None:
    policy = RestartPolicy(burst=5, window_s=60, first_delay_s=1, max_delay_s=30)
    assert policy.decide("node-2", 0.0) == "wait"  # found dead: wait a second first
    assert policy.decide("node-2", 1.0) == "restart"
    assert policy.decide("node-2", 2.0) == "wait"  # dead again: now two seconds
    assert policy.decide("node-2", 3.5) == "wait"
    assert policy.decide("node-2", 4.0) == "restart"
    assert policy.restarts("node-2") == 2
    assert policy.decide("etcd-0", 4.0) == "wait"  # each process has its own record


def test_a_process_that_keeps_exiting_is_given_up_on() -> None:
    policy = RestartPolicy(burst=3, window_s=60, first_delay_s=1, max_delay_s=4)
    t, restarts = 0.0, 0
    while (decision := policy.decide("node-1", t)) != "give_up":
        restarts += decision == "restart"
        t += 0.5
    assert restarts == 3 and t < 60
    assert policy.decide("node-1", t + 3600) == "give_up"  # and stays so: a person looks


def test_restarts_long_ago_do_not_count() -> None:
    policy = RestartPolicy(burst=2, window_s=60, first_delay_s=1, max_delay_s=1)
    for start in (0.0, 100.0, 200.0, 300.0):  # one crash every 100 s: always restarted
        assert policy.decide("redis-0", start) == "wait"
        assert policy.decide("redis-0", start + 1) == "restart"
    assert policy.given_up == set()
