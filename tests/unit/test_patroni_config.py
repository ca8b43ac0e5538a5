"""Patroni's configuration as RunnerHub writes it, and the timing rules it must keep."""

from __future__ import annotations

from pathlib import Path

import pytest

from runnerhub.dev.cluster.patroni import RestoreFrom
from runnerhub.dev.cluster.pgbackrest import LocalPgBackRest
from runnerhub.render.haproxy import render_config as haproxy_config
from runnerhub.render.patroni import Credentials, PostgresTls, Timing, render_config
from runnerhub.render.pgbackrest import Member, Repo, render_conf


def config(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "scope": "rh",
        "namespace": "/rh-pg/",
        "name": "pg-1",
        "api_port": 8008,
        "pg_port": 5433,
        "etcd_hosts": ["127.0.0.1:2379", "127.0.0.1:2380"],
        "data_dir": Path("/d/pg-1"),
        "run_dir": Path("/d"),
        "bin_dir": Path("/usr/lib/postgresql/15/bin"),
        "credentials": Credentials("su", "rep", "rew"),
        "timing": Timing(),
    }
    args.update(kw)
    return render_config(**args)  # type: ignore[arg-type]


def test_synchronous_mode_rewind_and_etcd3_by_default() -> None:
    c = config()
    dcs = c["bootstrap"]["dcs"]  # type: ignore[index]
    assert dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert c["etcd3"] == {"hosts": ["127.0.0.1:2379", "127.0.0.1:2380"]}
    auth = c["postgresql"]["authentication"]  # type: ignore[index]
    assert auth["superuser"]["password"] == "su" and auth["replication"]["password"] == "rep"


def test_a_gone_replica_cannot_fill_the_primary_and_parameters_can_be_overridden() -> None:
    params = config()["bootstrap"]["dcs"]["postgresql"]["parameters"]  # type: ignore[index]
    assert params["max_slot_wal_keep_size"] == "2GB"
    small = config(parameters={"wal_keep_size": "16MB", "max_slot_wal_keep_size": "32MB"})
    params = small["bootstrap"]["dcs"]["postgresql"]["parameters"]  # type: ignore[index]
    assert params["wal_keep_size"] == "16MB" and params["max_slot_wal_keep_size"] == "32MB"
    assert params["wal_level"] == "replica"  # the rest kept


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        (Timing(ttl=10, loop_wait=1, retry_timeout=3), "at least 20"),
        (Timing(ttl=20, loop_wait=5, retry_timeout=10), "must not exceed ttl"),
        (Timing(ttl=20, loop_wait=0, retry_timeout=3), "loop_wait >= 1"),
    ],
)
def test_unsafe_timing_is_refused_with_the_reason(timing: Timing, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(timing=timing)


def test_haproxy_primary_endpoint_checks_patroni() -> None:
    text = haproxy_config(
        [("node-1", "127.0.0.1", 8081)],
        8080,
        postgres_port=5000,
        postgres_members=[("pg-1", "127.0.0.1", 5433, 8008), ("pg-2", "127.0.0.1", 5434, 8009)],
    )
    assert "listen postgres_primary" in text
    assert "option httpchk GET /primary" in text
    assert "server pg-2 127.0.0.1:5434 check port 8009" in text
    assert "on-marked-down shutdown-sessions" in text


def test_a_restore_beside_the_source_archives_nothing_one_in_place_archives_on() -> None:
    source = LocalPgBackRest(Path("/d/pgbackrest"), [Repo(1, "region-a", Path("/d/r1"))])
    target = ["--type=time", "--target=2026-11-30 19:00:00+00"]
    beside = RestoreFrom(source, Credentials("su", "rep", "rew"), 1, target)
    in_place = RestoreFrom(source, Credentials("su", "rep", "rew"), 1, target, keep_archiving=True)
    assert "--archive-mode=off" in beside.command(Path("/d/new"))
    command = in_place.command(Path("/d/pg-1"))
    assert "--archive-mode" not in command
    assert command.endswith(
        "--type=time '--target=2026-11-30 19:00:00+00' --target-action=promote restore"
    )


def test_backups_are_copied_from_a_replica_only_where_there_is_one() -> None:
    b = LocalPgBackRest(Path("/d/pgbackrest"), [Repo(2, "region-b", Path("/d/r2"), True)])
    one = [Member("pg-1", Path("/d/pg-1"), 5433)]
    two = [*one, Member("pg-2", Path("/d/pg-2"), 5434)]

    def conf_of(members: list[Member]) -> str:
        return render_conf(
            repos=b.repos,
            members=members,
            log_path=b.log_path,
            lock_path=b.root / "lock",
            socket_dir=Path("/d"),
            user="postgres",
        )

    assert "backup-standby=y" not in conf_of(one)
    conf = conf_of(two)
    assert "backup-standby=y" in conf
    assert "repo2-cipher-type=aes-256-cbc" in conf and "repo1-" not in conf


def test_etcd_with_tls_and_a_user_reaches_patroni_s_etcd3_section() -> None:
    from runnerhub.dev.cluster.etcd import EtcdClientAccess

    access = EtcdClientAccess(Path("/state/tls/ca.pem"), "patroni", "pw")
    c = config(etcd=access.patroni(Path("/d/etcd-ca.pem")))
    assert c["etcd3"] == {
        "hosts": ["127.0.0.1:2379", "127.0.0.1:2380"],
        "protocol": "https",
        "cacert": "/d/etcd-ca.pem",  # the copy the service user can read
        "username": "patroni",
        "password": "pw",
    }
    assert EtcdClientAccess().patroni(None) == {}


def test_with_tls_every_tcp_connection_is_tls_and_members_check_the_ca() -> None:
    plain = config()
    assert not any(line.startswith("hostssl") for line in plain["postgresql"]["pg_hba"])  # type: ignore[index]
    tls = PostgresTls(Path("/d/pg-1.crt"), Path("/d/pg-1.key"), Path("/d/ca.pem"))
    c = config(tls=tls)
    pg = c["postgresql"]
    params = pg["parameters"]  # type: ignore[index]
    assert params["ssl"] == "on" and params["ssl_cert_file"] == "/d/pg-1.crt"
    assert params["ssl_key_file"] == "/d/pg-1.key"
    hba = pg["pg_hba"]  # type: ignore[index]
    assert [line.split()[0] for line in hba] == ["local", "hostssl", "hostssl"], hba
    for role in ("superuser", "replication", "rewind"):
        auth = pg["authentication"][role]  # type: ignore[index]
        assert (auth["sslmode"], auth["sslrootcert"]) == ("verify-ca", "/d/ca.pem"), role
