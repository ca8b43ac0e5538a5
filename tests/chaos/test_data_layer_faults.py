"""Data-layer chaos: the local HA cluster with PostgreSQL under Patroni (3 members,
synchronous replication, etcd as DCS) and Redis behind Sentinel, under a continuous webhook
load through HAProxy. Each test injects one real fault into the data layer, then checks that
no delivery was answered other than 2xx, every acknowledged job is in PostgreSQL, every job
ran exactly once, and scheduling resumed by itself.

The tests share one cluster (it takes half a minute to start); each first waits for it to be
whole again, and the one that kills all of Redis runs last."""

from __future__ import annotations

import contextlib
import io
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from rich.console import Console
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from runnerhub.cli import topology
from runnerhub.cli.events import show_events
from runnerhub.dev.cluster import chaos
from runnerhub.dev.cluster.local import LocalCluster
from runnerhub.dev.cluster.patroni import LocalPatroni, PatroniMember
from runnerhub.dev.cluster.redis import LocalRedis
from runnerhub.dev.cluster.workload import Load, Verdict, percentiles
from runnerhub.dev.waiting import Timeout, wait_until_sync
from runnerhub.render.haproxy import WEBHOOKS
from tests import checks
from tests.browser import chromium, go, rows, signed_in, text, until
from tests.chaos.alerting import Watch, watching

pytestmark = pytest.mark.chaos

RATE = 3.0  # jobs a second, each three webhooks


@pytest.fixture(scope="module")
def dbha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster.for_faults(tmp_path_factory.mktemp("dbha") / "state", patroni=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if cluster.pg_cluster is not None:
            cluster.pg_cluster.destroy()  # its data may live outside the test's directory


@pytest.fixture(scope="module")
def alerts(dbha: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watch]:
    """Prometheus and Alertmanager watching the cluster, as an operator's would."""
    with watching(dbha, tmp_path_factory.mktemp("alerting")) as watch:
        yield watch


@pytest.fixture(scope="module")
def page(dbha: LocalCluster) -> Iterator[WebDriver]:
    """The dashboard in a real browser, through HAProxy with a read token, as an operator
    would watch the faults."""
    b = chromium()
    try:
        signed_in(b, dbha.api_url, dbha.secrets.read_token)
        yield b
    finally:
        b.quit()


def pg_rows(b: WebDriver) -> dict[str, str]:
    """The dashboard's PostgreSQL members: name → role."""
    return {r[0]: r[1] for r in rows(b, "#pg tbody tr") if len(r) > 1}


@pytest.fixture
def whole(dbha: LocalCluster) -> LocalCluster:
    """The shared cluster with every Patroni member back and replicating."""
    pg = patroni(dbha)
    for m in pg.members:
        if not m.alive():
            pg.start_member(m)
    pg.wait_healthy(120)
    return dbha


def patroni(c: LocalCluster) -> LocalPatroni:
    assert c.pg_cluster is not None
    return c.pg_cluster


def database_view(c: LocalCluster) -> dict[str, Any] | None:
    """The replication state as RunnerHub's API reports it."""
    try:
        r = httpx.get(
            f"{c.api_url}/api/v1/cluster",
            timeout=3,
            headers={"Authorization": f"Bearer {c.secrets.read_token}"},
        )
        return dict(r.json()["database"]) if r.status_code == 200 else None
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None


def settle_and_check(c: LocalCluster, load: Load) -> Verdict:
    ids = list(load.ids)
    assert len(ids) >= 10 and not load.errors, load.errors[:3]

    def all_done() -> bool:
        jobs = checks.sim_jobs(c.sim_url)
        return all(jobs[i]["status"] == "completed" for i in ids)

    wait_until_sync(all_done, 180, "every job under load to complete", interval_s=0.25)
    v = checks.assert_each_ran_once(c.sim_url, c.dsn, ids, deliveries_ok=True)
    c_dsn = c.dsn
    wait_until_sync(  # the last completions may still be in a node's spool
        lambda: _recorded(c_dsn, ids), 30, "every job completed in PostgreSQL"
    )
    checks.assert_all_recorded(c.dsn, ids)
    return v


def answered_within_a_second_or_so(v: Verdict, fault: str) -> None:
    """Every delivery answered while the fault lasted: within webhook.db_wait_s and a spool
    write when PostgreSQL does not answer (2 s here: a loaded machine's margin, where
    GitHub's timeout is 10 s)."""
    print(f"deliveries with {fault}: {percentiles(v.delivery_s)}")
    assert max(v.delivery_s) < 2.0, percentiles(v.delivery_s)


def _recorded(dsn: str, ids: list[int]) -> bool:
    rows = checks.query(
        dsn, "SELECT count(*) AS n FROM jobs WHERE id = ANY(%s) AND state = 'completed'", ids
    )
    return int(rows[0]["n"]) == len(ids)


def server_port_via_haproxy(c: LocalCluster) -> int | None:
    """The PostgreSQL port HAProxy's primary endpoint leads to, if it leads to a writable
    server now (None: no server behind it, or a read-only one)."""
    assert c.haproxy is not None and c.haproxy.postgres_port
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=c.haproxy.postgres_port,
            dbname="postgres",
            user="runnerhub",
            password=patroni(c).credentials.superuser,
            connect_timeout=1,
        ) as conn:
            row = conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone()
            return None if row is None or row[0] else int(row[1])
    except psycopg.OperationalError:
        return None


def in_recovery(m: PatroniMember, password: str) -> bool | None:
    """Whether this member's PostgreSQL is a read-only replica (None: not answering)."""
    try:
        with psycopg.connect(
            host="127.0.0.1",
            port=m.pg_port,
            dbname="postgres",
            user="runnerhub",
            password=password,
            connect_timeout=1,
        ) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])
    except psycopg.OperationalError:
        return None


def test_the_dashboard_shows_every_part_of_the_ha_cluster(
    whole: LocalCluster, page: WebDriver
) -> None:
    """`up --ha` as the dashboard shows it: the Patroni members (one leader), Redis and
    each Sentinel, HAProxy's backends with every node up, the etcd members, the live stream
    on, and no banner."""
    c, b = whole, page
    pg = patroni(c)
    assert c.redis is not None and c.etcd is not None
    leader = pg.wait_primary()
    until(b, lambda b: pg_rows(b).get(leader.name) == "leader", 15)
    assert set(pg_rows(b)) == {m.name for m in pg.members}
    assert sorted(pg_rows(b).values()).count("leader") == 1
    redis = until(b, lambda b: (r := rows(b, "#redis tbody tr")) and len(r) > 1 and r, 15)
    assert [r[0] for r in redis].count("primary") == 1
    assert [r[0] for r in redis].count("sentinel") == len(c.redis.sentinels)

    def webhook_servers(b: WebDriver) -> dict[str, str]:
        return {r[2]: r[3] for r in rows(b, "#lb tbody tr") if len(r) > 3 and r[1] == WEBHOOKS}

    nodes = {name: "up" for name in c.node_urls}
    until(b, lambda b: webhook_servers(b) == nodes, 15)
    lb = rows(b, "#lb tbody tr")
    assert {r[2] for r in lb if r[1] == "postgres_primary"} == {m.name for m in pg.members}
    until(b, lambda b: len(rows(b, "#etcd tbody tr")) == len(c.etcd.members), 15)
    until(b, lambda b: b.find_element(By.ID, "live").get_attribute("data-state") == "on", 10)
    assert not b.find_element(By.ID, "banner").is_displayed(), text(b, "#banner")
    assert text(b, "#leader-name") == c.leader()

    # The replication-lag chart: this minute's lag of the replicas, as the nodes wrote it.
    go(b, "work")
    lag = until(b, lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-lag svg circle.k2"), 20)
    assert lag and "most-behind replica" in text(b, "#chart-lag")
    go(b, "cluster")  # where the fault tests below watch the members


def test_postgresql_takes_tls_connections_only_and_the_nodes_check_its_certificate(
    whole: LocalCluster,
) -> None:
    """Every TCP connection to a member must be TLS (`hostssl`): a plain one is refused.
    The nodes' connections and the replicas' streams are TLS, and the nodes' DSN checks
    the server's certificate against the local CA by name (verify-full)."""
    pg = patroni(whole)
    primary = pg.wait_primary()
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(
            host="127.0.0.1",
            port=primary.pg_port,
            dbname="postgres",
            user="runnerhub",
            password=pg.credentials.superuser,
            sslmode="disable",
            connect_timeout=2,
        )
    assert "sslmode=verify-full" in whole.dsn and str(whole.ca.cert) in whole.dsn
    with psycopg.connect(whole.dsn) as conn:
        clients = conn.execute(
            """SELECT a.application_name, s.ssl FROM pg_stat_activity a
                 JOIN pg_stat_ssl s USING (pid)
                WHERE a.datname = 'runnerhub' AND a.backend_type = 'client backend'"""
        ).fetchall()
        streams = conn.execute(
            """SELECT r.application_name, s.ssl FROM pg_stat_replication r
                 JOIN pg_stat_ssl s USING (pid)"""
        ).fetchall()
    assert len(clients) > 1 and all(ssl for _, ssl in clients), clients
    assert len(streams) == len(pg.members) - 1 and all(ssl for _, ssl in streams), streams


def test_sigkill_the_postgres_primary_under_load(
    whole: LocalCluster, alerts: Watch, page: WebDriver
) -> None:
    dbha = whole
    pg = patroni(dbha)
    with Load(dbha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 15, "some load")
        old = pg.wait_primary()
        assert server_port_via_haproxy(dbha) == old.pg_port
        before_view = wait_until_sync(
            lambda: (v := database_view(dbha)) and len(v["synchronous"]) == 1 and v,
            15,
            "the API to report a synchronous replica",
        )
        assert before_view["server"] == old.address and len(before_view["replicas"]) == 2
        # Patroni and its PostgreSQL, as `runnerhub chaos kill postgres-primary` does it.
        parts = {old.pid, old.postmaster_pid()}
        began = time.time()
        target, reached = chaos.kill(dbha.state_dir, "postgres-primary")
        killed = time.monotonic()
        assert parts <= set(reached), (target, parts)
        pg.kill_member(old)  # (already dead: this reaps it and waits for its postmaster)
        new = pg.wait_primary(40, other_than=old.name)
        promoted_s = time.monotonic() - killed
        assert promoted_s < pg.timing.ttl + 10, promoted_s
        # The dashboard (polling /health every 5 s) shows the new primary.
        until(page, lambda b: pg_rows(b).get(new.name) == "leader", 15)
        print(f"dashboard: new primary shown {time.monotonic() - killed - promoted_s:.1f}s after")
        # A person hears of it (Alertmanager's webhook, standing in for Slack), and hears
        # that it is over once the new primary takes writes.
        paged_s = alerts.reached("RunnerHubDatabaseFailover", "firing", killed, 40)
        resolved_s = alerts.reached("RunnerHubDatabaseFailover", "resolved", killed, 60)
        print(
            f"RunnerHubDatabaseFailover: at the webhook after {paged_s:.1f}s, resolved "
            f"after {resolved_s:.1f}s (promoted after {promoted_s:.1f}s)"
        )
        assert paged_s < resolved_s, (paged_s, resolved_s)
        # HAProxy's primary endpoint follows Patroni's health checks to the new primary.
        wait_until_sync(
            lambda: server_port_via_haproxy(dbha) == new.pg_port, 15, "HAProxy to follow"
        )
        before = len(load.ids)
        wait_until_sync(lambda: len(load.ids) >= before + 15, 30, "load after the failover")
        # The leader recorded the failover: noticed within the 10 s target of its last good
        # reading, over once a new primary took writes.
        token = dbha.secrets.read_token
        failover = wait_until_sync(
            lambda: checks.ended_incident(dbha.api_url, token, "postgres", "failover", began),
            20,
            "the PostgreSQL failover on record",
        )
        print(
            f"postgres failover incident: {failover['detection_s']:.2f}s to notice, "
            f"{failover['recovery_s']:.2f}s down"
        )
        assert 0 < failover["detection_s"] < 10, failover
        assert failover["recovery_s"] < pg.timing.ttl + 15, failover
        assert failover["detail"]["before"] != failover["detail"]["after"], failover
        # The old primary comes back and rejoins as a replica of the new one.
        pg.start_member(old)
        pg.wait_healthy(90)
        assert pg.primary() is new
        assert in_recovery(old, pg.credentials.superuser) is True
        view = io.StringIO()  # `runnerhub cluster status` shows the new topology
        Console(file=view, width=200, color_system=None).print(
            topology.render(topology.gather(dbha.state_dir, None, None))
        )
        assert all(m.name in view.getvalue() for m in pg.members), view.getvalue()
        assert "leader" in view.getvalue() and "sync_standby" in view.getvalue()
        # Every node's /health follows Patroni back to three running members.
        wait_until_sync(
            lambda: checks.check_status(dbha.node_urls.values(), "patroni") == ["ok"] * 3,
            20,
            "/health to report Patroni whole again",
        )
        # RunnerHub reports the new topology: a new timeline, both replicas streaming.
        wait_until_sync(
            lambda: (
                (v := database_view(dbha))
                and v["server"] == new.address
                and v["timeline"] > before_view["timeline"]
                and sorted(r["name"] for r in v["replicas"] if r["state"] == "streaming")
                == sorted(m.name for m in pg.members if m is not new)
            ),
            20,
            "the API to report the new primary and its replicas",
        )
    answered_within_a_second_or_so(settle_and_check(dbha, load), "the primary killed")


def test_a_primary_cut_off_from_etcd_demotes_instead_of_splitting_the_brain(
    whole: LocalCluster,
) -> None:
    dbha = whole
    pg = patroni(dbha)
    assert dbha.etcd is not None
    password = pg.credentials.superuser
    with Load(dbha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 15, "some load")
        old = pg.wait_primary()
        majority = dbha.etcd.members[:2]
        for m in majority:
            m.kill(signal.SIGSTOP)
        try:
            # Patroni cannot renew the leader key: once its DCS retries run out it demotes
            # its PostgreSQL to read-only rather than go on as a primary nobody can see.
            # (Patroni 3.0 tries each etcd member with a 3 s read timeout, twice over: about
            # 15 s here, longer on a loaded machine.) Meanwhile at most one member is ever
            # writable: no lease can expire without an etcd quorum, so none is promoted.
            def demoted() -> bool:
                writable = [m.name for m in pg.members if in_recovery(m, password) is False]
                assert len(writable) <= 1, f"two writable members: {writable}"
                return old.name not in writable

            wait_until_sync(demoted, 90, "the cut-off primary to stop accepting writes", 0.2)
            writable = [m.name for m in pg.members if in_recovery(m, password) is False]
            assert writable == [], f"writable members while etcd has no quorum: {writable}"
        finally:
            for m in majority:
                m.kill(signal.SIGCONT)
        pg.wait_primary(60)
        before = len(load.ids)
        wait_until_sync(lambda: len(load.ids) >= before + 15, 30, "load after the outage")
        pg.wait_healthy(60)
    # Writes stalled for about 15 s: the deliveries did not.
    answered_within_a_second_or_so(settle_and_check(dbha, load), "the primary cut off")


def test_a_lost_synchronous_standby_holds_up_no_delivery(whole: LocalCluster) -> None:
    """The synchronous standby SIGKILLed: commits wait for it until Patroni names another
    (or none); the deliveries do not wait past the intake's bounded wait."""
    dbha = whole
    pg = patroni(dbha)
    with Load(dbha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 15, "some load")
        victim = pg.sync_standby()
        pg.kill_member(victim)
        lost = time.monotonic()
        wait_until_sync(pg.writable, 30, "writes without it", interval_s=0.1)
        print(f"writes resumed {time.monotonic() - lost:.1f}s after the sync standby was lost")
        before = len(load.ids)
        wait_until_sync(lambda: len(load.ids) >= before + 10, 30, "load without it")
        pg.start_member(victim)
        pg.wait_healthy(120)
    answered_within_a_second_or_so(settle_and_check(dbha, load), "the sync standby lost")


def test_a_frozen_primary_is_replaced_and_no_delivery_waits_on_it(whole: LocalCluster) -> None:
    """The primary's machine hangs (Patroni, the postmaster and every backend SIGSTOPped:
    connections to it stay open and nothing answers). Patroni promotes a replica once the
    leader key expires; meanwhile every delivery is answered from the spool within the
    intake's bounded wait. Woken, the old primary is demoted and rejoins as a replica."""
    dbha = whole
    pg = patroni(dbha)
    with Load(dbha.sim_url, RATE) as load:
        wait_until_sync(lambda: len(load.ids) >= 10, 15, "some load")
        old = pg.wait_primary()
        frozen = chaos.freeze_host(old.pid, str(old.data_dir))
        froze = time.monotonic()
        try:
            new = pg.wait_primary(pg.timing.ttl + 30, other_than=old.name)
            wait_until_sync(pg.writable, 30, "writes on the new primary", interval_s=0.1)
            print(
                f"frozen primary {old.name} replaced by {new.name} in "
                f"{time.monotonic() - froze:.1f}s"
            )
        finally:
            chaos.thaw(frozen)  # Patroni wakes, finds its leader key gone, and demotes it
        pg.wait_healthy(120)
        assert pg.primary() is new
        # Patroni may report it running a moment before it takes connections again.
        wait_until_sync(
            lambda: in_recovery(old, pg.credentials.superuser) is True, 30, "a replica again"
        )
        before = len(load.ids)
        wait_until_sync(lambda: len(load.ids) >= before + 10, 30, "load after the failover")
    answered_within_a_second_or_so(settle_and_check(dbha, load), "the primary frozen")


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


def test_losing_redis_loses_nothing(
    whole: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """I7: SIGKILL the Redis primary (Sentinel promotes the replica and the nodes follow),
    then kill every Redis process and Sentinel: slower at most, nothing refused or lost, and
    a dashboard's live event stream misses nothing."""
    ha = whole
    redis = ha.redis
    assert isinstance(redis, LocalRedis)
    nodes = list(ha.node_urls)
    nodes_urls = list(ha.node_urls.values())
    dashboard = checks.EventWatcher(ha.api_url, ha.secrets.read_token, ha.dsn, ["job."])
    with dashboard:
        with Load(ha.sim_url, RATE) as load:
            wait_until_sync(lambda: len(load.ids) >= 10, 15, "some load")
            old = redis.primary()
            old_name = redis.name_of("primary")
            assert old_name is not None
            for n in nodes:  # every node reads Redis's primary and its replica's lag
                wait_until_sync(
                    lambda n=n: (
                        (v := cache_view(ha, n)) and v["available"] and len(v["replicas"]) == 1
                    ),
                    15,
                    f"{n} to see Redis and its replica",
                )

            began = time.time()
            target, _ = chaos.kill(ha.state_dir, "redis-master")
            assert target.name == old_name
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
            wait_until_sync(lambda: len(load.ids) >= before + 15, 30, "load after the failover")
            token = ha.secrets.read_token
            failover = wait_until_sync(
                lambda: checks.ended_incident(ha.api_url, token, "redis", "failover", began),
                20,
                "the Redis failover on record",
            )
            with capsys.disabled():  # shown with -s (capsys holds the rest)
                print(
                    f"redis failover incident: {failover['detection_s']:.2f}s to notice, "
                    f"{failover['recovery_s']:.2f}s down"
                )
            assert 0 < failover["detection_s"] < 10, failover
            assert failover["detail"]["after"]["primary"] == f"{new[0]}:{new[1]}", failover

            for name in list(redis.pids()):
                redis.kill(name, signal.SIGKILL)
            assert redis.pids() == {}
            for n in nodes:
                wait_until_sync(
                    lambda n=n: (v := cache_view(ha, n)) and not v["available"],
                    20,
                    f"{n} to notice Redis is gone",
                )
            # /health says Redis is gone, as degraded, never failing: it costs speed, not
            # readiness (I7).
            wait_until_sync(
                lambda: checks.check_status(nodes_urls, "redis") == ["degraded"] * 3,
                10,
                "/health to report Redis degraded",
            )
            assert all(httpx.get(f"{u}/readyz", timeout=2).status_code == 200 for u in nodes_urls)
            before = len(load.ids)
            wait_until_sync(lambda: len(load.ids) >= before + 30, 30, "load without Redis")
        settle_and_check(ha, load)
        # The live stream a dashboard follows went on through both faults, missing nothing.
        with contextlib.suppress(Timeout):
            wait_until_sync(lambda: not dashboard.missing("job."), 20, "every job event")
        missing = dashboard.missing("job.")
    print(f"live stream: {len(dashboard.ids)} job events, {dashboard.connections} connection(s)")
    assert not missing, (
        f"{len(missing)} job events (after {dashboard.baseline}) never streamed: {missing[:10]}"
    )
    assert len(dashboard.ids) == len(set(dashboard.ids)), "an event was streamed twice"
    capsys.readouterr()
    assert show_events(ha.state_dir, None, None, ["job."], follow=False, limit=5) == 0
    assert capsys.readouterr().out.count(" job.") == 5  # `runnerhub events -k job. --limit 5`
