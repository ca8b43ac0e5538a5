"""Several nodes, one leader (I4): leadership moves on SIGKILL, SIGTERM and handoff; a leader
frozen past its lease (SIGSTOP, then SIGCONT) writes nothing when it wakes; every job still
runs exactly once. Real etcd (3 members), PostgreSQL, node processes and runners."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.local import Service
from runnerhub.dev.waiting import wait_until_sync
from tests.e2e.harness import Cluster
from tests.e2e.test_end_to_end import LINUX, assert_each_ran_once

pytestmark = pytest.mark.e2e


def leadership(c: Cluster, via: Service) -> dict[str, Any]:
    return c.api("/api/v1/cluster", base=c.node_url(via))


def wait_leader(
    c: Cluster, nodes: list[Service], via: Service, newer_than: int = 0, timeout_s: float = 15
) -> tuple[Service, int]:
    def elected() -> tuple[Service, int] | None:
        info = leadership(c, via)
        if info["leader"] is None or (info["epoch"] or 0) <= newer_than:
            return None
        return next(n for n in nodes if n.name == info["leader"]), int(info["epoch"])

    return wait_until_sync(elected, timeout_s, "a leader", interval_s=0.05)


def move_leadership_off(
    c: Cluster, nodes: list[Service], keep_free: Service
) -> tuple[Service, int]:
    """node-0 receives the webhooks in these tests: keep it a follower to kill others."""
    leader, epoch = wait_leader(c, nodes, keep_free)
    if leader is not keep_free:
        return leader, epoch
    target = next(n for n in nodes if n is not keep_free)
    r = httpx.post(
        f"{c.node_url(keep_free)}/api/v1/leader/handoff",
        json={"to": target.name},
        headers={"Authorization": f"Bearer {c.admin_token}"},
        timeout=5,
    )
    assert r.status_code == 202, r.text
    return wait_leader(c, nodes, keep_free, newer_than=epoch)


def run_jobs(c: Cluster, count: int) -> list[int]:
    ids = c.enqueue("acme/web", LINUX, count=count, duration_s=0.1)
    c.wait_all_completed(ids, timeout_s=90)
    assert_each_ran_once(c, ids)
    return ids


def test_leadership_survives_kill_term_and_freeze(cluster: Cluster, etcd: LocalEtcd) -> None:
    cluster.start_sim()
    nodes = cluster.start_ha_nodes(3, etcd.endpoints)
    entry = nodes[0]
    run_jobs(cluster, 10)

    # SIGKILL the leader: a follower takes over once the 2 s lease expires.
    leader, epoch = move_leadership_off(cluster, nodes, entry)
    killed_at = time.monotonic()
    leader.popen.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    new, new_epoch = wait_leader(cluster, nodes, entry, newer_than=epoch)
    assert new is not leader
    assert time.monotonic() - killed_at < 6
    run_jobs(cluster, 10)

    # SIGTERM the leader: it revokes its lease, the successor is there at once.
    survivors = [n for n in nodes if n is not leader]
    leader, epoch = move_leadership_off(cluster, survivors, entry)
    stopped_at = time.monotonic()
    leader.stop()
    new, new_epoch = wait_leader(cluster, survivors, entry, newer_than=epoch)
    handover = time.monotonic() - stopped_at
    assert new is not leader  # a node shutting down must not win the election it left
    assert handover < 2.0, handover  # far less than a lease: no expiry was waited for
    rows = wait_until_sync(  # written once the new leader has taken office
        lambda: cluster.query(
            "SELECT detail FROM events WHERE kind = 'leader.elected' "
            "AND (detail->>'epoch')::bigint = %s",
            new_epoch,
        ),
        10,
        "the election in the audit log",
    )
    assert rows[0]["detail"]["takeover_s"] < 2.0
    run_jobs(cluster, 10)


def test_a_frozen_leader_writes_nothing_when_it_wakes(cluster: Cluster, etcd: LocalEtcd) -> None:
    cluster.start_sim()
    nodes = cluster.start_ha_nodes(3, etcd.endpoints)
    entry = nodes[0]
    run_jobs(cluster, 5)
    leader, epoch = move_leadership_off(cluster, nodes, entry)
    assert leader.popen is not None
    leader.popen.send_signal(signal.SIGSTOP)
    try:
        new, new_epoch = wait_leader(cluster, nodes, entry, newer_than=epoch)
        assert new is not leader
        # Keep it frozen for twice the lease, with work arriving for the new leader.
        ids = cluster.enqueue("acme/web", LINUX, count=5, duration_s=0.1)
        time.sleep(4)  # the fault being injected: the process stays stopped
    finally:
        leader.popen.send_signal(signal.SIGCONT)
    woke = time.monotonic()
    cluster.wait_all_completed(ids, timeout_s=60)
    assert_each_ran_once(cluster, ids)

    def stepped_down() -> bool:
        rows = cluster.query(
            "SELECT 1 FROM events WHERE kind = 'leader.stepped_down' "
            "AND node = %s AND (detail->>'epoch')::bigint = %s",
            leader.name,
            epoch,
        )
        return bool(rows)

    wait_until_sync(stepped_down, 10, "the woken leader to record that it stepped down")
    assert time.monotonic() - woke < 10
    # Since the new leader took office, the old one wrote nothing but that record.
    since = cluster.query(
        "SELECT id FROM events WHERE kind = 'leader.elected' AND (detail->>'epoch')::bigint = %s",
        new_epoch,
    )[0]["id"]
    writes = cluster.query(  # deliveries it took are intake, which every node serves
        "SELECT kind FROM events WHERE node = %s AND id > %s AND NOT "
        "(kind LIKE 'job.%%' AND detail->>'source' = 'webhook')",
        leader.name,
        since,
    )
    assert {w["kind"] for w in writes} <= {"leader.stepped_down"}, writes
    metrics = httpx.get(f"{cluster.node_url(leader)}/metrics", timeout=5).text
    assert "runnerhub_leader 0.0" in metrics


def run_cli(c: Cluster, via: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """`runnerhub ARGS` with node `via`'s URL and the admin token."""
    where = ("--url", c.node_url(via), "--token", c.admin_token)
    return subprocess.run(
        [sys.executable, "-m", "runnerhub.cli.main", *args, *where],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def cli(c: Cluster, via: Service, *args: str) -> str:
    out = run_cli(c, via, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def cli_fails(c: Cluster, via: Service, *args: str) -> str:
    out = run_cli(c, via, *args)
    assert out.returncode != 0, out.stdout
    return out.stderr


def cli_or_error(c: Cluster, via: Service, *args: str) -> str:
    out = run_cli(c, via, *args)
    return out.stdout + out.stderr


def test_drain_handoff_and_tokens_from_the_command_line(cluster: Cluster, etcd: LocalEtcd) -> None:
    cluster.start_sim()
    nodes = cluster.start_ha_nodes(3, etcd.endpoints)
    entry = nodes[0]
    leader, epoch = move_leadership_off(cluster, nodes, entry)
    target = next(n for n in nodes if n not in (leader, entry))
    assert "hand over to" in cli(cluster, entry, "leader", "handoff", "--to", target.name)
    new, epoch = wait_leader(cluster, nodes, entry, newer_than=epoch)
    assert new is target

    assert "draining=True" in cli(cluster, entry, "node", "drain", target.name)
    successor, _ = wait_leader(cluster, nodes, entry, newer_than=epoch)
    assert successor is not target  # a draining leader steps down and does not come back
    wait_until_sync(
        lambda: httpx.get(f"{cluster.node_url(target)}/readyz").status_code == 503,
        10,
        "the drained node to report not ready",
    )
    info = leadership(cluster, entry)
    assert [n["draining"] for n in info["nodes"] if n["id"] == target.name] == [True]
    cli(cluster, entry, "node", "drain", target.name, "--undo")
    wait_until_sync(
        lambda: httpx.get(f"{cluster.node_url(target)}/readyz").status_code == 200,
        10,
        "the node to be ready again",
    )
    run_jobs(cluster, 5)

    # An API token made on one node is known to all (PostgreSQL); revoked on another, it is
    # refused by every node from the next request on.
    secret = cli(cluster, entry, "token", "create", "dashboard", "--expires-in", "1d").strip()
    assert secret.startswith("rht_")
    bearer = {"Authorization": f"Bearer {secret}"}
    for n in nodes:
        assert httpx.get(f"{cluster.node_url(n)}/api/v1/jobs", headers=bearer).status_code == 200
    listed = cli(cluster, target, "token", "list")
    assert listed.startswith("dashboard\tread\tlive\texpires 20") and secret not in listed
    assert "revoked 'dashboard'" in cli(cluster, target, "token", "revoke", "dashboard")
    for n in nodes:
        assert httpx.get(f"{cluster.node_url(n)}/api/v1/jobs", headers=bearer).status_code == 401

    entry_url = cluster.node_url(entry)
    # Reconcile now, asked of a follower: it reaches the leader (store/listener.py), audited.
    assert "the leader reconciles now" in cli(cluster, entry, "reconcile")
    audit = cluster.api("/api/v1/events?kind=operator.reconcile_requested", base=entry_url)
    assert [e["detail"]["by"] for e in audit["items"]] == ["admin"]

    # A node gone for good is forgotten; one still alive is not.
    alive = cli_fails(cluster, entry, "node", "remove", target.name)
    assert f"node '{target.name}' is alive" in alive, alive
    target.stop()
    wait_until_sync(
        lambda: "removed" in cli_or_error(cluster, entry, "node", "remove", target.name),
        10,
        "the stopped node to be forgotten",
    )
    assert target.name not in [n["id"] for n in leadership(cluster, entry)["nodes"]]
