"""Chaos against the local HA cluster (`runnerhub up --ha` minus the demo): 3 etcd members,
PostgreSQL, HAProxy, 3 nodes, the GitHub simulator and runners, under a continuous webhook
load through HAProxy. Each test injects one real fault and then checks that no delivery was
answered other than 2xx, every job ran exactly once and completed, and no job ever had two
runners of its own at once. The tests share one cluster, healed (paused processes resumed,
dead ones restarted, a leader elected) before each."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runnerhub.cluster.local import LocalCluster, Service
from runnerhub.cluster.workload import Load
from runnerhub.waiting import wait_until_sync
from tests import checks

pytestmark = pytest.mark.chaos

RATE = 5.0  # jobs a second, each three webhooks (queued, in_progress, completed)
TTL = 2.0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster for the module (starting one takes a while); see `ha`."""
    cluster = LocalCluster.for_faults(tmp_path_factory.mktemp("ha") / "state", TTL)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.pg.destroy()  # its data may live outside the test's directory


@pytest.fixture
def ha(shared: LocalCluster) -> LocalCluster:
    """The shared cluster, made whole again after the previous test's fault."""
    shared.heal()
    return shared


def node(c: LocalCluster, name: str) -> Service:
    return next(s for s in c.node_services if s.name == name)


def cluster_info(c: LocalCluster, via: str | None = None) -> dict[str, Any]:
    base = via or c.api_url
    r = httpx.get(
        f"{base}/api/v1/cluster",
        timeout=3,
        headers={"Authorization": f"Bearer {c.secrets.admin_token}"},
    )
    r.raise_for_status()
    return dict(r.json())


def new_leader(c: LocalCluster, old_epoch: int, timeout_s: float = 15) -> tuple[str, int]:
    def elected() -> tuple[str, int] | None:
        try:
            info = cluster_info(c)
        except httpx.HTTPError:
            return None
        epoch = info["epoch"] or 0
        return (info["leader"], epoch) if info["leader"] and epoch > old_epoch else None

    return wait_until_sync(elected, timeout_s, "a new leader", interval_s=0.05)


def settle_and_check(c: LocalCluster, load: Load) -> None:
    ids = list(load.ids)
    assert len(ids) >= 10 and not load.errors, load.errors[:3]

    def all_done() -> bool:
        jobs = checks.sim_jobs(c.sim_url)
        return all(jobs[i]["status"] == "completed" for i in ids)

    wait_until_sync(all_done, 120, "every job under load to complete", interval_s=0.25)
    checks.assert_each_ran_once(c.sim_url, c.dsn, ids, deliveries_ok=True)


def current(c: LocalCluster) -> tuple[str, int]:
    info = cluster_info(c)
    return str(info["leader"]), int(info["epoch"])


def test_sigkill_the_leader_under_load(ha: LocalCluster) -> None:
    with Load(ha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 10, "some load")
        leader, epoch = current(ha)
        node(ha, leader).popen.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed = time.monotonic()
        successor, _ = new_leader(ha, epoch)
        assert successor != leader
        assert time.monotonic() - killed < TTL + 3
        wait_until_sync(lambda: len(load.ids) >= 40, 30, "load after the failover")
    settle_and_check(ha, load)


def test_sigterm_the_leader_under_load(ha: LocalCluster) -> None:
    with Load(ha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 10, "some load")
        leader, epoch = current(ha)
        stopped = time.monotonic()
        node(ha, leader).stop()
        new_leader(ha, epoch)
        assert time.monotonic() - stopped < TTL  # a revoked lease: no waiting for expiry
        wait_until_sync(lambda: len(load.ids) >= 40, 30, "load after the handover")
    settle_and_check(ha, load)


def test_sigstop_the_leader_past_its_lease_then_sigcont(ha: LocalCluster) -> None:
    with Load(ha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 10, "some load")
        leader, epoch = current(ha)
        frozen = node(ha, leader)
        assert frozen.popen is not None
        frozen.popen.send_signal(signal.SIGSTOP)
        try:
            _, new_epoch = new_leader(ha, epoch)
            time.sleep(2 * TTL)  # the fault being injected: frozen for twice the lease
        finally:
            frozen.popen.send_signal(signal.SIGCONT)
        wait_until_sync(lambda: len(load.ids) >= 50, 30, "load after the wake-up")
    settle_and_check(ha, load)
    # The woken leader wrote nothing after its successor took office but the record that it
    # stepped down, and its fencing refused whatever its loops still tried.
    since = checks.query(
        ha.dsn,
        "SELECT min(id) AS id FROM events WHERE kind = "
        "'leader.elected' AND (detail->>'epoch')::bigint = %s",
        new_epoch,
    )
    # (Deliveries it took are not control-loop writes: every node serves intake.)
    writes = checks.query(
        ha.dsn,
        "SELECT kind, detail FROM events WHERE node = %s AND id > %s "
        "AND NOT (kind LIKE 'job.%%' AND detail->>'source' = 'webhook')",
        leader,
        since[0]["id"],
    )
    assert {w["kind"] for w in writes} <= {"leader.stepped_down"}, writes
    metrics = httpx.get(f"{ha.node_urls[leader]}/metrics", timeout=5).text
    assert "runnerhub_leader 0.0" in metrics


def test_sigkill_a_follower_under_load(ha: LocalCluster) -> None:
    with Load(ha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 10, "some load")
        leader, epoch = current(ha)
        follower = next(n for n in ha.node_urls if n != leader)
        node(ha, follower).popen.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        wait_until_sync(lambda: len(load.ids) >= 40, 30, "load after the kill")
        assert current(ha) == (leader, epoch)  # leadership untouched
    settle_and_check(ha, load)


def test_sigkill_an_etcd_member_under_load(ha: LocalCluster) -> None:
    assert ha.etcd is not None
    with Load(ha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 10, "some load")
        before = current(ha)
        victim = ha.etcd.leader_index() or 0  # the raft leader: the hardest one to lose
        ha.etcd.member(victim).kill(signal.SIGKILL)
        wait_until_sync(lambda: len(load.ids) >= 40, 30, "load after the kill")
        leader, epoch = current(ha)
        assert leader == before[0] or epoch > before[1]  # a leader still holds office
    settle_and_check(ha, load)
