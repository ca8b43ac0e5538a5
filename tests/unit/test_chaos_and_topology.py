"""`runnerhub chaos kill` resolution and `runnerhub cluster status` rendering, without a
cluster (the data-layer chaos test drives both against a real one)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from runnerhub.cli.topology import render
from runnerhub.dev.cluster.chaos import (
    ChaosError,
    LiveCluster,
    parse,
    pids_matching,
    signal_by_name,
)


def test_components_parse_and_unknown_ones_list_the_valid_ones() -> None:
    assert parse("postgres-primary") == ("postgres-primary", None)
    assert parse("etcd:2") == ("etcd", "2")
    assert parse("redis-master") == ("redis-primary", None)  # the spelling
    assert parse("node:leader") == ("node", "leader")
    with pytest.raises(ChaosError, match="one of: postgres-primary"):
        parse("mysql-primary")
    with pytest.raises(ChaosError):
        parse("etcd")  # needs a member number
    assert signal_by_name("stop").name == "SIGSTOP"
    with pytest.raises(ChaosError, match="unknown signal"):
        signal_by_name("NOPE")


def test_processes_are_found_by_their_command_line(tmp_path: Path) -> None:
    for pid, argv, state in [
        ("101", b"/usr/bin/patroni\0/x/pg-1.yml\0", "S"),
        ("102", b"/usr/bin/patroni\0/x/pg-2.yml\0", "S"),
        ("103", b"/usr/bin/patroni\0/x/pg-1.yml\0", "Z"),  # a zombie is not alive
        ("104", b"redis-server 127.0.0.1:63790\0", "S"),
        ("105", b"redis-server 127.0.0.1:6379\0", "S"),
        ("self", b"", "S"),
    ]:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(argv)
        (tmp_path / pid / "stat").write_text(f"{pid} (patroni) {state} 1 1")
    assert pids_matching("/x/pg-1.yml", tmp_path) == [101]
    assert pids_matching("/nothing", tmp_path) == []
    assert pids_matching("127.0.0.1:6379", tmp_path) == [105]  # a whole word, not a prefix
    assert os.getpid() not in pids_matching("python", Path("/proc"))


class FakeCluster(LiveCluster):
    def postgres_roles(self) -> dict[str, str]:
        return {"pg-1": "replica", "pg-2": "leader", "pg-3": "sync_standby"}

    def redis_primary(self) -> str:
        return "redis-1"

    def node_leader(self) -> str:
        return "node-2"

    def etcd_leader(self) -> int:
        return 3


def fake(tmp_path: Path) -> FakeCluster:
    info: dict[str, Any] = {
        "state_dir": str(tmp_path),
        "patroni": {
            n: {"api_url": "", "config": f"/x/{n}.yml", "data_dir": str(tmp_path / n)}
            for n in ("pg-1", "pg-2", "pg-3")
        },
        "redis": {
            "processes": {
                n: {"address": f"127.0.0.1:{i}", "config": f"/r/{n}.conf"}
                for i, n in enumerate(["redis-0", "redis-1", "sentinel-0"])
            }
        },
    }
    (tmp_path / "pg-2").mkdir()
    (tmp_path / "pg-2" / "postmaster.pid").write_text("4242\n/x\n")
    pids = {"/x/pg-2.yml": [77], "127.0.0.1:1": [5], "127.0.0.1:0": [6]}
    pids |= {f"{tmp_path}/etcd/etcd-3.data": [33], f"{tmp_path}/node-2.yaml": [22]}
    return FakeCluster(info, find=lambda marker: pids.get(marker, []))


def test_roles_are_resolved_live_to_every_process_of_the_part(tmp_path: Path) -> None:
    c = fake(tmp_path)
    assert c.resolve("postgres-primary").pids == (77, 4242)  # Patroni and its postmaster
    assert c.resolve("redis-primary").pids == (5,)
    assert c.resolve("redis-replica").pids == (6,)
    assert c.resolve("etcd-leader").pids == (33,)
    assert c.resolve("node:leader").pids == (22,)
    with pytest.raises(ChaosError, match="pg-3 is not running"):
        c.resolve("postgres-replica")  # the synchronous one, whose process is gone
    with pytest.raises(ChaosError, match="no PostgreSQL member 'pg-9'"):
        c.resolve("postgres:pg-9")


def test_the_topology_view_shows_roles_lag_and_what_is_down() -> None:
    data = {
        "cluster": {
            "leader": "node-1",
            "epoch": 7,
            "nodes": [
                {
                    "id": "node-1",
                    "role": "leader",
                    "healthy": True,
                    "draining": False,
                    "url": "http://a",
                    "last_seen": "2026-11-30T05:00:00",
                },
                {
                    "id": "node-2",
                    "role": "follower",
                    "healthy": False,
                    "draining": False,
                    "url": "http://b",
                    "last_seen": "2026-11-30T04:59:00",
                },
            ],
            "database": {
                "server": "127.0.0.1:5433",
                "timeline": 3,
                "in_recovery": False,
                "synchronous": ["pg-2"],
                "lagging": ["pg-3"],
                "replicas": [
                    {
                        "name": "pg-2",
                        "state": "streaming",
                        "sync_state": "sync",
                        "write_lag_s": 0.001,
                        "flush_lag_s": 0.002,
                        "replay_lag_s": 0.003,
                        "replay_lag_bytes": 0,
                        "lagging": False,
                    },
                    {
                        "name": "pg-3",
                        "state": "streaming",
                        "sync_state": "async",
                        "write_lag_s": 6.0,
                        "flush_lag_s": 6.1,
                        "replay_lag_s": 6.2,
                        "replay_lag_bytes": 123456,
                        "lagging": True,
                    },
                ],
            },
            "cache": {
                "configured": True,
                "available": False,
                "primary": None,
                "consecutive_failures": 4,
                "replicas": [],
            },
        },
        "patroni": [
            {"name": "pg-1", "state": "unreachable"},
            {
                "name": "pg-2",
                "role": "sync_standby",
                "state": "streaming",
                "timeline": 3,
                "lag": 0,
                "host": "127.0.0.1",
                "port": 5434,
            },
        ],
        "etcd": [{"name": "etcd-1", "endpoint": "127.0.0.1:2379", "healthy": True}],
    }
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render(data))
    text = out.getvalue()
    for expected in (
        "leader node-1, epoch 7",
        "timeline 3",
        "123456",
        "6.200",
        "unreachable",
        "sync_standby",
        "etcd-1",
        "Redis (via Sentinel)",
    ):
        assert expected in text, expected


def test_a_secrets_file_from_before_the_etcd_users_gains_them(tmp_path: Path) -> None:
    import json
    import stat

    from runnerhub.dev.cluster.local import Secrets

    old = {"webhook_secret": "w", "admin_token": "a", "read_token": "r", "github_token": "g"}
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(old))
    loaded = Secrets.load_or_create(path)
    assert loaded.admin_token == "a" and len(loaded.etcd_patroni_password) > 16
    again = Secrets.load_or_create(path)  # written back: the same passwords next time
    assert again == loaded and stat.S_IMODE(path.stat().st_mode) == 0o600
