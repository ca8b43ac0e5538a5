"""What LocalRedis writes for its Redis nodes and Sentinels, and how it reads their answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerhub.cache import Cache, NullCache
from runnerhub.dev.cluster import redis as local_redis
from runnerhub.dev.cluster.redis import RESERVED_PORTS, majority_address
from runnerhub.render.redis import render_redis_config, render_sentinel_config


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_a_primary_listens_on_loopback_with_a_password_and_keeps_nothing() -> None:
    conf = lines(render_redis_config(7001, "pw", Path("/tmp/rh/redis-0")))
    for expected in [
        "bind 127.0.0.1",
        "port 7001",
        'requirepass "pw"',
        'masterauth "pw"',
        'save ""',
        "appendonly no",
        'dir "/tmp/rh/redis-0"',
        "repl-diskless-sync-delay 0",
    ]:
        assert expected in conf
    assert not any(ln.startswith(("replicaof", "slaveof")) for ln in conf)


def test_a_replica_follows_the_primary() -> None:
    conf = lines(render_redis_config(7002, "pw", Path("/d"), replica_of=("127.0.0.1", 7001)))
    assert "replicaof 127.0.0.1 7001" in conf
    assert "replica-read-only yes" in conf


def test_passwords_are_quoted_for_the_config_parser() -> None:
    conf = render_redis_config(7001, 'a"b\\c d', Path("/d"))
    assert 'requirepass "a\\"b\\\\c d"' in conf
    sentinel = render_sentinel_config(7003, "rh", ("127.0.0.1", 7001), 'x"y', Path("/d"))
    assert 'sentinel auth-pass rh "x\\"y"' in sentinel


def test_a_node_without_a_password_is_refused() -> None:
    with pytest.raises(ValueError, match="password"):
        render_redis_config(7001, "", Path("/d"))
    with pytest.raises(ValueError, match="password"):
        render_sentinel_config(7003, "rh", ("127.0.0.1", 7001), "", Path("/d"))


def test_a_sentinel_monitors_first_then_tunes_for_a_fast_local_failover() -> None:
    conf = lines(
        render_sentinel_config(
            7003,
            "runnerhub",
            ("127.0.0.1", 7001),
            "pw",
            Path("/tmp/rh/sentinel-0"),
            down_after_ms=1500,
        )
    )
    assert "bind 127.0.0.1" in conf and "port 7003" in conf
    assert "sentinel resolve-hostnames no" in conf
    assert 'requirepass "pw"' in conf and 'sentinel sentinel-pass "pw"' in conf
    monitor = conf.index("sentinel monitor runnerhub 127.0.0.1 7001 2")
    # Sentinel refuses settings for a master it does not monitor yet.
    for setting in [
        'sentinel auth-pass runnerhub "pw"',
        "sentinel down-after-milliseconds runnerhub 1500",
        "sentinel failover-timeout runnerhub 10000",
        "sentinel parallel-syncs runnerhub 1",
    ]:
        assert conf.index(setting) > monitor


@pytest.mark.parametrize("name", ["", "two words", "tab\there"])
def test_a_master_name_must_be_one_word(name: str) -> None:
    with pytest.raises(ValueError, match="master name"):
        render_sentinel_config(7003, name, ("127.0.0.1", 7001), "pw", Path("/d"))


def test_the_quorum_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="quorum"):
        render_sentinel_config(7003, "rh", ("127.0.0.1", 7001), "pw", Path("/d"), quorum=0)


def test_the_primary_is_what_most_sentinels_report() -> None:
    a, b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    assert majority_address([a, b, b]) == b
    assert majority_address([None, a, None]) == a
    assert majority_address([None, None, None]) is None
    assert majority_address([]) is None


def test_ports_of_the_machines_own_redis_are_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    offered: Iterator[int] = iter([6379, 26379, 40001])
    monkeypatch.setattr(local_redis, "free_port", lambda host="127.0.0.1": next(offered))
    assert local_redis.pick_port() == 40001
    assert {6379, 26379} <= RESERVED_PORTS


async def test_the_null_cache_remembers_nothing_and_never_fails() -> None:
    cache: Cache = NullCache()
    assert await cache.set("k", b"v", 10) is False
    assert await cache.get("k") is None
    assert await cache.incr_window("k", 1, 10) is None
    assert await cache.delete("k") is False
    assert await cache.publish("c", b"m") is False
    assert await cache.ping() is False
    await cache.close()
    assert cache.status() == {
        "available": False,
        "primary": None,
        "last_error": None,
        "consecutive_failures": 0,
    }


def test_tls_only_and_an_acl_user_limited_to_runnerhub_keys() -> None:
    from runnerhub.render.redis import NODE_ACL, ServerTls

    tls = ServerTls(Path("/c/r.pem"), Path("/c/r.key"), Path("/c/ca.pem"))
    text = render_redis_config(7001, "pw", Path("/d"), tls=tls, users={"runnerhub": "node-pw"})
    lines = text.splitlines()
    assert "port 0" in lines and "tls-port 7001" in lines and "port 7001" not in lines
    assert "tls-replication yes" in lines and "tls-auth-clients no" in lines
    assert f"user runnerhub on >node-pw {NODE_ACL}" in lines
    assert "~runnerhub:*" in NODE_ACL and "-@dangerous" in NODE_ACL
    with pytest.raises(ValueError, match="ACL user"):
        render_redis_config(7001, "pw", Path("/d"), users={"bad name": "x"})
    sentinel = render_sentinel_config(7002, "rh", ("127.0.0.1", 7001), "pw", Path("/d"), tls=tls)
    assert "tls-port 7002" in sentinel.splitlines() and "port 0" in sentinel.splitlines()
