"""When a replica counts as behind (pure rules; the real lag is read in the integration test)."""

from __future__ import annotations

from runnerhub.domain.replicas import Replica, ReplicationStatus, is_lagging, lag_seconds


def test_cleared_lag_columns_mean_caught_up_only_when_no_bytes_are_missing() -> None:
    assert lag_seconds(None, 0) == 0.0
    assert lag_seconds(None, 4096) is None
    assert lag_seconds(1.5, 4096) == 1.5


def test_a_replica_is_flagged_past_the_threshold_or_when_not_streaming() -> None:
    assert not is_lagging(4.9, "streaming", 5.0)
    assert is_lagging(5.1, "streaming", 5.0)
    assert not is_lagging(None, "streaming", 5.0)
    assert is_lagging(0.0, "catchup", 5.0)


def test_status_names_the_synchronous_and_the_lagging_replicas() -> None:
    def replica(name: str, sync: str, lagging: bool) -> Replica:
        return Replica(name, "127.0.0.1", "streaming", sync, 0.0, 0.0, 0.0, 0, lagging)

    s = ReplicationStatus(
        "127.0.0.1:5432", False, 3, [replica("a", "sync", False), replica("b", "async", True)]
    )
    assert s.synchronous == ["a"] and s.lagging == ["b"]
    assert s.as_dict()["replicas"][1]["name"] == "b"


async def test_the_health_check_names_a_replica_that_runs_without_a_stream() -> None:
    from runnerhub.health.checks import replication

    streaming = Replica("pg-3", "127.0.0.1", "streaming", "sync", 0.0, 0.0, 0.0, 0, False)
    status = ReplicationStatus("127.0.0.1:5432", False, 3, [streaming])
    members = [
        {"name": "pg-1", "role": "leader", "state": "running"},
        {"name": "pg-2", "role": "replica", "state": "running"},  # runs, streams nothing
        {"name": "pg-3", "role": "sync_standby", "state": "running"},
        {"name": "pg-4", "role": "replica", "state": "starting"},  # on its way: not yet
    ]
    outcome = await replication(lambda: status, lambda: members)()
    assert outcome.status == "degraded"
    assert outcome.message == "replicas running without a WAL stream: pg-2"
    assert outcome.detail["not_streaming"] == ["pg-2"]
    healthy = [m for m in members if m["name"] != "pg-2"]
    assert (await replication(lambda: status, lambda: healthy)()).status == "ok"
    assert (await replication(lambda: status)()).status == "ok"  # no Patroni configured
