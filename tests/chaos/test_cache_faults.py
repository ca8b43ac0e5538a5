"""Cache chaos (I7): Redis holds only what may be lost. Under a continuous webhook load
through HAProxy, SIGKILL the Redis primary (Sentinel promotes the replica and the nodes
follow), then kill every Redis process and Sentinel: no delivery is answered other than 2xx,
every job runs exactly once, and scheduling never stops."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runnerhub.cluster.local import LocalCluster
from runnerhub.cluster.redis import LocalRedis
from runnerhub.cluster.workload import Load
from runnerhub.waiting import wait_until_sync
from tests import checks

pytestmark = pytest.mark.chaos

RATE = 4.0


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster.for_faults(tmp_path / "state")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.pg.destroy()


def cache_view(c: LocalCluster, node: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(
            f"{c.node_urls[node]}/api/v1/cluster",
            timeout=3,
            headers={"Authorization": f"Bearer {c.secrets.read_token}"},
        )
        return dict(r.json()["cache"]) if r.status_code == 200 else None
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None


def test_losing_redis_loses_nothing(ha: LocalCluster) -> None:
    redis = ha.redis
    assert isinstance(redis, LocalRedis)
    nodes = list(ha.node_urls)
    with Load(ha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 15, "some load")
        old = redis.primary()
        old_name = redis.name_of("primary")
        assert old_name is not None
        for n in nodes:  # every node reads Redis's primary and its replica's lag
            wait_until_sync(
                lambda n=n: (v := cache_view(ha, n)) and v["available"] and len(v["replicas"]) == 1,
                15,
                f"{n} to see Redis and its replica",
            )

        # 1. SIGKILL the primary: Sentinel promotes the replica; the nodes follow by themselves.
        redis.kill(old_name, signal.SIGKILL)
        new = redis.wait_failover(old, 30)
        for n in nodes:
            wait_until_sync(
                lambda n=n: (
                    (v := cache_view(ha, n))
                    and v["available"]
                    and v["primary"] == f"{new[0]}:{new[1]}"
                ),
                20,
                f"{n} to use the new Redis primary",
            )
        before = len(load.ids)
        wait_until_sync(lambda: len(load.ids) >= before + 20, 30, "load after the failover")

        # 2. Kill every Redis process and every Sentinel: only slower, never refused.
        for name in list(redis.pids()):
            redis.kill(name, signal.SIGKILL)
        assert redis.pids() == {}
        for n in nodes:
            wait_until_sync(
                lambda n=n: (v := cache_view(ha, n)) and not v["available"],
                20,
                f"{n} to notice Redis is gone",
            )
        before = len(load.ids)
        wait_until_sync(lambda: len(load.ids) >= before + 40, 30, "load without Redis")
    ids = list(load.ids)
    assert not load.errors, load.errors[:3]

    def all_done() -> bool:
        jobs = checks.sim_jobs(ha.sim_url)
        return all(jobs[i]["status"] == "completed" for i in ids)

    wait_until_sync(all_done, 120, "every job to complete without Redis", interval_s=0.25)
    checks.assert_each_ran_once(ha.sim_url, ha.dsn, ids, deliveries_ok=True)
