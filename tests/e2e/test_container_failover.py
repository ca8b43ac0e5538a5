"""Runners in containers through a leader's SIGKILL: two nodes electing through etcd, a pool
whose runners are containers on a Podman API service. While every job's container runs, the
leader is SIGKILLed; the new leader adopts the containers it finds (by their runner names
and labels) instead of starting second ones, and every job runs exactly once."""

from __future__ import annotations

import signal
import threading

import pytest

from runnerhub.dev.cluster.etcd import LocalEtcd
from runnerhub.dev.cluster.podman import RUNNER_IMAGE, RUNNER_SCRIPT, LocalPodman, PodmanError
from runnerhub.dev.waiting import wait_until_sync
from tests.e2e.harness import Cluster
from tests.e2e.test_end_to_end import LINUX, assert_each_ran_once
from tests.e2e.test_failover import move_leadership_off, wait_leader

pytestmark = pytest.mark.e2e


def containers(engine: LocalPodman) -> dict[str, str]:
    """Runner containers now: name → id."""
    out = engine.podman(
        "ps", "--all", "--filter", "label=io.runnerhub.runner", "--format", "{{.Names}} {{.ID}}"
    )
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_a_leader_killed_while_containers_run_is_replaced_and_none_starts_twice(
    cluster: Cluster,
    etcd: LocalEtcd,
    podman: LocalPodman,
) -> None:
    cluster.start_sim()
    pool = {
        "name": "linux",
        "labels": LINUX,
        "max_runners": 10,
        "backend": "container",
        "container": {
            "image": RUNNER_IMAGE,
            "endpoint": podman.endpoint,
            "network": "host",  # the simulated GitHub listens on this host's loopback
            "command": ["python3", RUNNER_SCRIPT, "--idle-timeout", "120"],
            "stop_timeout_s": 2,
        },
    }
    nodes = cluster.start_ha_nodes(2, etcd.endpoints, pools=[pool])
    leader, epoch = move_leadership_off(cluster, nodes, nodes[0])
    ids = cluster.enqueue("acme/web", LINUX, count=4, duration_s=4)

    seen: dict[str, set[str]] = {}  # every container id each runner name ever had
    done = threading.Event()

    failures: list[str] = []  # a sample that could not be taken leaves a hole: say so

    def watch() -> None:
        while not done.is_set():
            try:
                now = containers(podman)
            except PodmanError as exc:
                failures.append(str(exc)[:300])
                now = {}
            for name, cid in now.items():
                seen.setdefault(name, set()).add(cid)
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        wait_until_sync(
            lambda: sum(j["status"] == "in_progress" for j in cluster.sim_jobs().values()) == 4,
            60,
            "every job running in its container",
        )
        leader.popen.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        wait_leader(cluster, nodes, nodes[0], newer_than=epoch)
        cluster.wait_all_completed(ids, timeout_s=90)
        assert_each_ran_once(cluster, ids)
        wait_until_sync(lambda: not containers(podman), 60, "the exited containers removed")
    finally:
        done.set()
        watcher.join(5)
    assert not failures, failures
    assert len(seen) >= 4 and all(len(cids) == 1 for cids in seen.values()), seen
