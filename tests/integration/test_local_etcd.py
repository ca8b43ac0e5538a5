"""A real etcd cluster on loopback: it starts healthy, replicates, keeps serving writes with
a member killed, heals when it returns, resumes from its directory, and fails clearly."""

from __future__ import annotations

import base64
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runnerhub.dev.cluster.etcd import EtcdError, LocalEtcd
from runnerhub.dev.waiting import wait_until_sync


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    cluster = LocalEtcd(tmp_path / "etcd")
    try:
        began = time.monotonic()
        cluster.start()
        print(f"3-member etcd healthy in {time.monotonic() - began:.2f}s")
        yield cluster
    finally:
        cluster.destroy()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def gateway_get(client_url: str, key: str) -> str | None:
    """A linearizable read through etcd's v3 JSON gateway."""
    r = httpx.post(f"{client_url}/v3/kv/range", json={"key": b64(key)}, timeout=5)
    r.raise_for_status()
    kvs = r.json().get("kvs", [])
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def local_get(cluster: LocalEtcd, i: int, key: str) -> str:
    """What member `i` itself has (a serializable read: no round trip to the leader)."""
    endpoint = [cluster.endpoints[i]]
    return cluster.etcdctl("get", key, "--print-value-only", "--consistency=s", endpoints=endpoint)


def test_a_three_member_cluster_is_healthy_and_replicates(etcd: LocalEtcd) -> None:
    health = json.loads(etcd.etcdctl("endpoint", "health", "-w", "json"))
    assert sorted(h["endpoint"] for h in health if h["health"]) == sorted(etcd.endpoints)
    assert len(set(etcd.endpoints)) == 3 and all(e.startswith("127.0.0.1:") for e in etcd.endpoints)
    assert etcd.client_urls == [f"http://{e}" for e in etcd.endpoints]
    assert etcd.leader_index() in (0, 1, 2)

    etcd.etcdctl("put", "/rh/greeting", "hello", endpoints=[etcd.endpoints[0]])
    assert gateway_get(etcd.client_urls[2], "/rh/greeting") == "hello"

    r = httpx.post(
        f"{etcd.client_urls[1]}/v3/kv/put",
        json={"key": b64("/rh/other"), "value": b64("via the gateway")},
        timeout=5,
    )
    r.raise_for_status()
    got = etcd.etcdctl("get", "/rh/other", "--print-value-only", endpoints=[etcd.endpoints[0]])
    assert got.strip() == "via the gateway"


def test_the_cluster_keeps_a_quorum_without_its_leader_and_heals(etcd: LocalEtcd) -> None:
    old = etcd.leader_index()
    assert old is not None
    victim = etcd.member(old)
    victim.kill(signal.SIGKILL)
    assert not victim.alive()
    survivors = [i for i in range(3) if i != old]

    began = time.monotonic()

    def written() -> bool:
        try:
            etcd.etcdctl("put", "/rh/after", "quorum", timeout_s=2)
        except EtcdError:
            return False
        return True

    wait_until_sync(written, 10, "a write without the old leader", interval_s=0.05)
    print(f"writes resumed {time.monotonic() - began:.2f}s after the leader was killed")
    assert etcd.leader_index() in survivors
    etcd.wait_healthy(5, members=survivors)

    victim.start()
    etcd.wait_healthy(10)
    assert victim.pid is not None and victim.alive()
    # The returning member caught up with the write it missed.
    wait_until_sync(lambda: local_get(etcd, old, "/rh/after").strip() == "quorum", 5, "catch-up")


def test_a_paused_follower_does_not_stop_writes_and_stop_wakes_it(etcd: LocalEtcd) -> None:
    leader = etcd.leader_index()
    follower = etcd.member(next(i for i in range(3) if i != leader))
    follower.kill(signal.SIGSTOP)
    etcd.etcdctl("put", "/rh/paused", "yes", timeout_s=5)
    follower.kill(signal.SIGCONT)
    etcd.wait_healthy(10)
    follower.kill(signal.SIGSTOP)
    began = time.monotonic()
    etcd.stop()  # SIGCONT after SIGTERM: a paused member still stops gracefully
    assert not any(m.alive() for m in etcd.members)
    assert time.monotonic() - began < 5
    # etcd re-raises SIGTERM once it has shut down; -SIGKILL would mean we had to force it.
    assert follower.popen is not None and follower.popen.returncode == -signal.SIGTERM


def test_stop_and_start_on_the_same_directory_resumes_the_data(tmp_path: Path) -> None:
    first = LocalEtcd(tmp_path / "etcd")
    again: LocalEtcd | None = None
    try:
        first.start()
        first.etcdctl("put", "/rh/durable", "kept")
        began = time.monotonic()
        first.stop()
        print(f"stopped in {time.monotonic() - began:.2f}s")
        assert not any(m.alive() for m in first.members)

        again = LocalEtcd(tmp_path / "etcd")
        assert again.endpoints == first.endpoints
        assert again.cluster_token == first.cluster_token
        began = time.monotonic()
        again.start()
        print(f"resumed in {time.monotonic() - began:.2f}s")
        got = again.etcdctl("get", "/rh/durable", "--print-value-only")
        assert got.strip() == "kept"
    finally:
        first.stop()
        if again is not None:
            again.destroy()
    assert not (tmp_path / "etcd" / "etcd-1.data").exists()


def test_a_single_member_cluster_works(tmp_path: Path) -> None:
    one = LocalEtcd(tmp_path / "etcd", members=1)
    try:
        one.start()
        assert one.leader_index() == 0 and len(one.endpoints) == 1
        one.etcdctl("put", "/rh/solo", "1")
        assert gateway_get(one.client_urls[0], "/rh/solo") == "1"
    finally:
        one.destroy()


def test_a_directory_of_another_size_is_refused(tmp_path: Path) -> None:
    one = LocalEtcd(tmp_path / "etcd", members=1)
    try:
        one.start()
    finally:
        one.stop()
    with pytest.raises(EtcdError, match="1-member cluster, not 3"):
        LocalEtcd(tmp_path / "etcd", members=3)


def test_a_member_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    cluster = LocalEtcd(tmp_path / "etcd")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cluster.member(1).client_port))
        squatter.listen()
        with pytest.raises(EtcdError, match=r"etcd-2 is not running[\s\S]*address already in use"):
            cluster.start(timeout_s=10)
    assert not any(m.alive() for m in cluster.members)
    cluster.destroy()


def test_a_missing_etcd_binary_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RUNNERHUB_ETCD_BIN", raising=False)
    with pytest.raises(EtcdError, match="install etcd-server"):
        LocalEtcd(tmp_path / "etcd").start()
