"""Which replica to reinitialise (domain.replicas): only a running replica without a stream
from the leader for the whole limit, one at a time, and never on a confused picture; and
what a node writes of the lag for the dashboard's chart."""

from __future__ import annotations

from runnerhub.domain.replicas import LagMinutes, Member, PrimaryView, Replica, StalledReplicas


def member(name: str, role: str = "replica", state: str = "running", port: int = 0) -> Member:
    return Member(name, role, state, f"10.0.0.1:{port or hash(name) % 1000}", f"http://{name}", 3)


LEADER = member("pg-1", "leader", port=5432)
R2, R3 = member("pg-2"), member("pg-3")


def view(*streaming: str, server: str = "10.0.0.1:5432", timeline: int | None = 3) -> PrimaryView:
    return PrimaryView(set(streaming), server, timeline)


def run(watch: StalledReplicas, members: list[Member], primary: PrimaryView, until: float):
    """Observe once a second from t=0 to `until`; the (time, name) of every decision."""
    decisions = []
    for t in range(int(until) + 1):
        d = watch.observe(members, primary, float(t))
        if d is not None:
            decisions.append((t, d.member.name))
    return decisions


def test_replicas_that_stream_or_catch_up_are_left_alone() -> None:
    watch = StalledReplicas(after_s=30)
    assert run(watch, [LEADER, R2, R3], view("pg-2", "pg-3"), 300) == []
    assert watch.stalled(300.0) == {}


def test_a_running_replica_without_a_stream_is_due_after_the_limit_and_once() -> None:
    watch = StalledReplicas(after_s=30)
    # t=0 learns the leader; pg-3 is timed from t=1, due at t=31, then timed afresh.
    assert run(watch, [LEADER, R2, R3], view("pg-2"), 70) == [(31, "pg-3"), (61, "pg-3")]
    assert watch.stalled(70.0) == {"pg-3": 9.0}


def test_a_replica_that_streams_again_is_no_longer_timed() -> None:
    watch = StalledReplicas(after_s=30)
    run(watch, [LEADER, R2], view(), 20)
    assert watch.observe([LEADER, R2], view("pg-2"), 21.0) is None
    assert watch.stalled(21.0) == {}
    assert run(watch, [LEADER, R2], view(), 25) == []  # timed from 0 again: not yet due


def test_members_that_are_not_running_are_not_timed() -> None:
    watch = StalledReplicas(after_s=5)
    members = [LEADER, member("pg-2", state="stopped"), member("pg-3", state="starting")]
    assert run(watch, members, view(), 60) == []


def failing_start(t: int) -> str:
    """Patroni's states for a replica whose PostgreSQL never starts, one per second."""
    return ("starting", "start failed", "restarting after failure")[t % 3]


def test_a_replica_that_keeps_failing_to_start_is_due_after_the_limit() -> None:
    # A rewind cut short by the next failover leaves a data directory that never starts.
    watch = StalledReplicas(after_s=30)
    decisions = []
    for t in range(70):
        members = [LEADER, R2, member("pg-3", state=failing_start(t))]
        d = watch.observe(members, view("pg-2"), float(t))
        if d is not None:
            decisions.append((t, d.member.name, d.failing_to_start, d.reason))
    # Timed from its first failed start (t=1): due at 31, then timed afresh.
    assert decisions == [
        (31, "pg-3", True, "PostgreSQL has failed to start again and again for 30 s"),
        (61, "pg-3", True, "PostgreSQL has failed to start again and again for 30 s"),
    ]
    assert watch.stalled(69.0) == {"pg-3": 8.0}


def test_a_replica_that_starts_after_failing_is_no_longer_timed() -> None:
    watch = StalledReplicas(after_s=30)
    for t in range(20):
        members = [LEADER, member("pg-2", state=failing_start(t))]
        assert watch.observe(members, view(), float(t)) is None
    assert watch.stalled(20.0) == {"pg-2": 19.0}
    assert watch.observe([LEADER, R2], view("pg-2"), 21.0) is None
    assert watch.stalled(21.0) == {}
    assert run(watch, [LEADER, R2], view("pg-2"), 100) == []


def test_one_crash_then_a_long_recovery_is_left_alone() -> None:
    watch = StalledReplicas(after_s=30)
    decisions = []
    for t in range(120):
        state = "crashed" if t == 1 else "starting"  # recovering after one crash
        d = watch.observe([LEADER, member("pg-2", state=state)], view(), float(t))
        if d is not None:
            decisions.append(t)
    assert decisions == []
    assert watch.stalled(119.0) == {}


def test_nothing_is_asked_while_a_rebuild_runs() -> None:
    watch = StalledReplicas(after_s=5)
    members = [LEADER, member("pg-2", state="creating replica"), R3]
    assert run(watch, members, view(), 60) == []


def test_one_at_a_time_the_longest_stalled_first() -> None:
    watch = StalledReplicas(after_s=10)
    run(watch, [LEADER, R2, R3], view("pg-3"), 5)  # pg-2 timed from 1
    assert watch.observe([LEADER, R2, R3], view(), 6.0) is None  # pg-3 timed from 6
    due = watch.observe([LEADER, R2, R3], view(), 11.0)
    assert due is not None and due.member.name == "pg-2" and due.for_s == 10.0
    due = watch.observe([LEADER, R2, R3], view(), 16.0)
    assert due is not None and due.member.name == "pg-3"


def test_no_leader_or_two_leaders_time_nothing() -> None:
    watch = StalledReplicas(after_s=5)
    assert run(watch, [member("pg-1"), R2], view(), 60) == []
    two = [LEADER, member("pg-2", "leader"), R3]
    assert run(watch, two, view(), 60) == []
    assert run(watch, None, view(), 60) == []  # type: ignore[arg-type]


def test_a_new_leader_starts_the_timing_over() -> None:
    watch = StalledReplicas(after_s=10)
    run(watch, [LEADER, R2], view(), 8)
    new_leader = member("pg-3", "leader", port=6000)
    members = [member("pg-1"), R2, new_leader]
    primary = view(server="10.0.0.1:6000")
    # pg-1 and pg-2 reconnect to the new primary: the first ten seconds decide nothing.
    assert run(watch, members, primary, 10) == []


def test_a_view_read_on_another_server_decides_nothing() -> None:
    watch = StalledReplicas(after_s=5)
    elsewhere = view(server="10.0.0.9:5432", timeline=2)
    assert run(watch, [LEADER, R2], elsewhere, 60) == []
    assert run(watch, [LEADER, R2], None, 60) == []  # type: ignore[arg-type]


def test_the_leader_is_recognised_by_timeline_when_its_address_is_a_name() -> None:
    watch = StalledReplicas(after_s=5)
    named = Member("pg-1", "leader", "running", "db-1.internal:5432", "http://pg-1", 3)
    assert run(watch, [named, R2], view(server="10.0.0.1:5432", timeline=3), 10)[0][1] == "pg-2"


def test_patroni_credentials_go_only_to_a_configured_url() -> None:
    """The member list comes from etcd: an api_url there that the settings do not name
    (another host, port or scheme) gets no reinitialize and no credentials."""
    from runnerhub.control.reinit import configured_base

    mine = ["http://10.0.0.21:8008", "http://10.0.0.22:8008/"]
    assert configured_base("http://10.0.0.22:8008/patroni", mine) == "http://10.0.0.22:8008"
    for other in (
        "http://10.6.6.6:8008/patroni",
        "http://10.0.0.22:9999/patroni",
        "https://10.0.0.22:8008/patroni",
        "not a url",
    ):
        assert configured_base(other, mine) is None


# -- what a node writes for the replication-lag chart ------------------------------------


def replica(name: str, lag: float | None) -> Replica:
    return Replica(name, None, "streaming", "async", lag, lag, lag, 0, False)


def test_a_minute_is_written_once_per_replica_and_again_only_when_its_lag_grows() -> None:
    chart = LagMinutes()
    first = [replica("pg-2", 0.1), replica("pg-3", None)]
    assert chart.due(100, first) == first  # a new minute: every replica
    chart.written(100, first)
    assert chart.due(100, [replica("pg-2", 0.1), replica("pg-3", 0.0)]) == []
    assert chart.due(100, [replica("pg-2", 0.05)]) == []  # less than written: nothing
    grew = [replica("pg-2", 3.0)]
    assert chart.due(100, grew) == grew
    chart.written(100, grew)
    assert chart.due(100, grew) == []
    assert chart.due(101, [replica("pg-2", 0.0)]) == [replica("pg-2", 0.0)]  # the next minute
    # A write that failed is not remembered: the same reading is due again.
    assert chart.due(101, [replica("pg-4", 1.0)]) == [replica("pg-4", 1.0)]
