"""The files `runnerhub render` writes for a topology, as {relative path: text}: kept pure
(no writing here) so tests can check each with its program's own checker."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

from runnerhub.render.alerting import (
    RULES_FILE,
    alertmanager_config,
    dump,
    prometheus_config,
    rules_with_runbook_base,
)
from runnerhub.render.etcd import EtcdMemberConfig, EtcdTlsFiles, config_file
from runnerhub.render.haproxy import TlsFront
from runnerhub.render.haproxy import render_config as render_haproxy
from runnerhub.render.keepalived import HealthCheck, render_keepalived
from runnerhub.render.patroni import PASSWORD_ENV, SUPERUSER, PostgresTls, StandbyOf
from runnerhub.render.patroni import render_config as render_patroni
from runnerhub.render.pgbackrest import Member as PgMember
from runnerhub.render.pgbackrest import (
    Repo,
    archive_get_command,
    archive_push_command,
    render_conf,
)
from runnerhub.render.redis import NODE_ACL, ServerTls, render_redis_config, render_sentinel_config
from runnerhub.render.topology import Host, Region, Topology, is_ip

HEADER = "# Rendered by `runnerhub render` from topology {name!r}: edit the topology, not this.\n"


def monitoring_files(t: Topology, shipped_rules: str) -> dict[str, str]:
    """Prometheus (scrape configuration and the shipped alert rules, their runbook links
    pointing where the topology says) and Alertmanager (routes, receivers, inhibitions)."""
    head = HEADER.format(name=t.name)
    prom = prometheus_config(
        t.scrape_targets(),
        t.alertmanagers(),
        [RULES_FILE],
        scrape_interval_s=t.prometheus.scrape_interval_s,
        evaluation_interval_s=t.prometheus.evaluation_interval_s,
        scheme=t.prometheus.scheme,
        ca_file=t.prometheus.ca_file,
    )
    return {
        "prometheus/prometheus.yml": head + dump(prom),
        f"prometheus/{RULES_FILE}": rules_with_runbook_base(
            shipped_rules, t.alerting.runbook_base_url
        ),
        "alertmanager/alertmanager.yml": head + dump(alertmanager_config(t.alerting.routing())),
    }


# -- every host's own programs ---------------------------------------------------------------


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def _head(t: Topology, host: Host, install: str, secrets: str) -> list[str]:
    return [
        f"Rendered by `runnerhub render` from topology {t.name!r} for host {host.name}: "
        "edit the topology, not this.",
        f"Install as {install}.",
        f"Secrets: {secrets}",
    ]


def _listen(address: str) -> str:
    # etcd and Redis bind IP addresses only: a host known by name listens on every address.
    return address if is_ip(address) else "0.0.0.0"


def etcd_file(t: Topology, region: Region, host: Host) -> str:
    tls = t.tls.etcd
    scheme = "https" if tls else "http"
    members = region.with_role("etcd")
    files = None
    if tls:
        cert, key, ca = Path(tls.cert_file), Path(tls.key_file), Path(tls.ca_file)
        files = EtcdTlsFiles(cert, key, ca, tls.client_cert_auth)
    peer_files = EtcdTlsFiles(files.cert, files.key, files.ca, True) if files else None
    client, peer = t.ports.etcd_client, t.ports.etcd_peer
    config = EtcdMemberConfig(
        name=host.name,
        data_dir=Path(t.etcd.data_dir),
        listen_client_urls=[f"{scheme}://{_listen(host.address)}:{client}"],
        advertise_client_urls=[f"{scheme}://{host.address}:{client}"],
        listen_peer_urls=[f"{scheme}://{_listen(host.address)}:{peer}"],
        advertise_peer_urls=[f"{scheme}://{host.address}:{peer}"],
        # This region's members only: each region has an etcd of its own (docs/dr.md).
        initial_cluster=",".join(f"{m.name}={scheme}://{m.address}:{peer}" for m in members),
        cluster_token=f"{t.name}-{region.name}",
        heartbeat_ms=t.etcd.heartbeat_ms,
        election_ms=t.etcd.election_ms,
        client_tls=files,
        peer_tls=peer_files,
        log_level=t.etcd.log_level,
    )
    head = _head(
        t,
        host,
        "/etc/etcd/etcd.conf.yml and run `etcd --config-file /etc/etcd/etcd.conf.yml` "
        f"(one of the {len(members)} members of region {region.name}'s own etcd)",
        "none here; etcd's users and their passwords live in etcd (`etcdctl user add`).",
    )
    head.append(
        "initial-cluster-state `new` is for the first start; a member added later joins "
        "with `existing` (`etcdctl member add`)."
    )
    return _comment(head) + dump(config_file(config))


def _hba(t: Topology) -> list[str]:
    """Every host of the topology may connect (with a password): the nodes, the replicas,
    HAProxy's primary endpoint, the other region's standby leader through it."""
    lines = ["local all all scram-sha-256"]
    for _, h in [(r, h) for r in t.regions for h in r.hosts]:
        source = (
            f"{h.address}/{32 if ip_address(h.address).version == 4 else 128}"
            if is_ip(h.address)
            else h.address
        )
        lines += [
            f"host replication replicator {source} scram-sha-256",
            f"host all all {source} scram-sha-256",
        ]
    return lines


def _pgbackrest_prefix(t: Topology) -> str:
    # Debian's pgbackrest reads /etc/pgbackrest/pgbackrest.conf and conf.d/ by itself.
    return f"pgbackrest --stanza={t.pgbackrest.stanza}"


def patroni_file(t: Topology, region: Region, host: Host) -> str:
    pg = t.postgres
    tls = t.tls.etcd
    etcd: dict[str, Any] = {}
    if tls:
        etcd = {"protocol": "https", "cacert": tls.ca_file}
        if tls.client_cert_auth:
            etcd |= {"cert": tls.cert_file, "key": tls.key_file}
    prefix = _pgbackrest_prefix(t)
    standby_of = None
    if region.standby:
        endpoint = t.primary_endpoint()
        assert endpoint is not None  # Topology refuses a standby region without one
        repo = t.pgbackrest.standby_repo or len(t.pgbackrest.repos)
        restore = archive_get_command(f"{prefix} --repo={repo}")
        standby_of = StandbyOf(endpoint, t.ports.haproxy_postgres, restore)
    config = render_patroni(
        scope=pg.scope,
        namespace=pg.namespace,
        name=host.name,
        api_port=t.ports.patroni,
        pg_port=t.ports.postgres,
        etcd_hosts=[f"{e.address}:{t.ports.etcd_client}" for e in region.with_role("etcd")],
        data_dir=Path(pg.data_dir),
        run_dir=Path(pg.socket_dir),
        bin_dir=Path(pg.bin_dir),
        credentials=None,
        timing=pg.timing(),
        synchronous_mode=pg.synchronous_mode and not region.standby,
        parameters=pg.parameters,
        archive=(archive_push_command(prefix), archive_get_command(prefix)),
        standby_of=standby_of,
        etcd=etcd,
        host=host.address,
        pg_hba=_hba(t),
        pgpass=Path(pg.pgpass),
        log_dir=Path(pg.log_dir),
        local_parameters=pg.local_parameters,
        tls=(
            PostgresTls(Path(pg_tls.cert_file), Path(pg_tls.key_file), Path(pg_tls.ca_file))
            if (pg_tls := t.tls.postgres)
            else None
        ),
    )
    # Patroni 3.0 (Debian 12) refuses in `--validate-config` a file without bootstrap.pg_hba;
    # postgresql.pg_hba replaces the whole file at every start anyway, so say it twice.
    config["bootstrap"]["pg_hba"] = config["postgresql"]["pg_hba"]
    env = ", ".join(PASSWORD_ENV.values())
    head = _head(
        t,
        host,
        "/etc/patroni/patroni.yml (Debian's patroni unit reads it; it runs PostgreSQL as "
        "postgres). PostgreSQL's settings are here too: bootstrap.dcs.postgresql.parameters "
        "are the cluster's, written to etcd at bootstrap (change them later with "
        "`patronictl edit-config`), postgresql.parameters this member's",
        f"the passwords are not here: Patroni reads {env} (and PATRONI_ETCD3_USERNAME/"
        "PATRONI_ETCD3_PASSWORD, PATRONI_RESTAPI_USERNAME/PATRONI_RESTAPI_PASSWORD) from its "
        f"environment: put them in {t.secrets.patroni_env} (root, 0600) and name it in the "
        "unit: `systemctl edit patroni`: [Service] EnvironmentFile=" + t.secrets.patroni_env + ".",
    )
    if standby_of is not None:
        head.append(
            f"Region {region.name} stands by: a Patroni standby cluster streaming from "
            f"{standby_of.host}:{standby_of.port}, the active region's primary endpoint."
        )
    return _comment(head) + dump(config)


def pgbackrest_file(t: Topology, region: Region, host: Host) -> str:
    pg = t.postgres
    members = region.with_role("postgres")
    # This host's own member first (pg1: local socket), the others over SSH.
    ordered = sorted(members, key=lambda m: m is not host)
    repos = [
        Repo(
            i,
            r.name,
            Path(r.path),
            r.encrypted,
            r.retention_full,
            r.retention_diff,
            r.options,
        )
        for i, r in enumerate(t.pgbackrest.repos, start=1)
    ]
    head = _head(
        t,
        host,
        "/etc/pgbackrest/pgbackrest.conf (postgres:postgres, 0640); pg2... are reached over "
        "SSH as postgres (keys between the hosts) or pgBackRest's TLS server",
        f"not here: an encrypted repository's repoN-cipher-pass, and an object store's keys, "
        f"go in {t.secrets.pgbackrest} ([global] section; postgres, 0600), which pgBackRest "
        f"reads by itself; the database password of {SUPERUSER} in ~postgres/.pgpass.",
    )
    return render_conf(
        repos=repos,
        members=[
            PgMember(m.name, Path(pg.data_dir), t.ports.postgres, None if m is host else m.address)
            for m in ordered
        ],
        log_path=Path(t.pgbackrest.log_path),
        lock_path=Path(t.pgbackrest.lock_path),
        socket_dir=Path(pg.socket_dir),
        user=SUPERUSER,
        stanza=t.pgbackrest.stanza,
        archive_queue_max=t.pgbackrest.archive_queue_max,
        header=_comment(head).splitlines(),
    )


def _redis_bind(address: str) -> str:
    if not is_ip(address):
        return "* -::*"
    return address if address == "127.0.0.1" else f"{address} 127.0.0.1"


def redis_files(t: Topology, region: Region, host: Host) -> dict[str, str]:
    members = region.with_role("redis")
    primary = members[0]
    tls = t.tls.redis
    server_tls = None
    if tls:
        server_tls = ServerTls(Path(tls.cert_file), Path(tls.key_file), Path(tls.ca_file))
    redis_head = _head(
        t,
        host,
        "/etc/redis/redis.conf (redis:redis, 0640): Redis copies what it includes into it "
        "when it rewrites it (a role change)",
        f"in {t.secrets.redis} (redis, 0600), which this file includes: `requirepass "
        '"..."`, `masterauth "..."` (the same password) and RunnerHub\'s ACL user: `user '
        f"runnerhub on >PASSWORD {NODE_ACL}`.",
    )
    sentinel_head = _head(
        t,
        host,
        "/etc/redis/sentinel.conf (redis:redis, 0640): Sentinel rewrites it as it learns, "
        "copying what it includes into it",
        f"in {t.secrets.sentinel} (redis, 0600), included after `sentinel monitor`: "
        f'`requirepass "..."`, `sentinel sentinel-pass "..."`, `sentinel auth-pass '
        f'{t.redis.master_name} "..."` (the data nodes\' password).',
    )
    bind = _redis_bind(host.address)
    redis = render_redis_config(
        t.ports.redis,
        None,
        Path(t.redis.data_dir),
        replica_of=None if host is primary else (primary.address, t.ports.redis),
        bind=bind,
        maxmemory=t.redis.maxmemory,
        tls=server_tls,
        secrets_include=Path(t.secrets.redis),
        header=_comment(redis_head).rstrip("\n"),
    )
    sentinel = render_sentinel_config(
        t.ports.sentinel,
        t.redis.master_name,
        (primary.address, t.ports.redis),
        None,
        Path(t.redis.data_dir),
        quorum=len(members) // 2 + 1,
        down_after_ms=t.redis.down_after_ms,
        failover_timeout_ms=t.redis.failover_timeout_ms,
        bind=bind,
        tls=server_tls,
        secrets_include=Path(t.secrets.sentinel),
        resolve_hostnames=not all(is_ip(m.address) for m in members),
        header=_comment(sentinel_head).rstrip("\n"),
    )
    return {"redis/redis.conf": redis, "redis/sentinel.conf": sentinel}


def haproxy_file(t: Topology, region: Region, host: Host) -> str:
    pg = region.with_role("postgres")
    pem = t.tls.haproxy_pem
    head = _head(
        t,
        host,
        "/etc/haproxy/haproxy.cfg (check: `haproxy -c -f`, apply: `systemctl reload haproxy`)",
        f"the TLS key is in {pem} (root, 0600)" if pem else "none.",
    )
    return render_haproxy(
        [(n.name, n.address, t.ports.node) for n in region.with_role("node")],
        t.ports.haproxy_http,
        t.ports.haproxy_stats,
        bind_host="",  # every address: it accepts on the virtual IP as soon as that arrives
        log_target="/dev/log local0",
        maxconn=t.haproxy.maxconn,
        postgres_port=t.ports.haproxy_postgres if pg else None,
        postgres_members=[(m.name, m.address, t.ports.postgres, t.ports.patroni) for m in pg],
        tls=TlsFront(t.ports.haproxy_https, Path(pem)) if pem else None,
        header=_comment(head).splitlines(),
        system=True,
        slots=t.haproxy.slots,
    )


def keepalived_file(t: Topology, region: Region, host: Host) -> str | None:
    pair = region.keepalived()
    if pair is None:
        return None
    balancers, vip = pair
    check = HealthCheck(url=f"http://127.0.0.1:{t.ports.haproxy_stats}/stats")
    head = _head(
        t,
        host,
        "/etc/keepalived/keepalived.conf (check: `keepalived -t -f`; docs/load-balancer.md)",
        "none: VRRPv3 has no authentication (adverts go only to the listed peers).",
    )
    return _comment(head) + render_keepalived(host.name, balancers, vip, check)


def host_files(t: Topology) -> dict[str, str]:
    """Every host's configuration of the programs its roles run, under `<host>/`."""
    out: dict[str, str] = {}
    for region in t.regions:
        for host in region.hosts:
            files: dict[str, str] = {}
            if "etcd" in host.roles:
                files["etcd/etcd.conf.yml"] = etcd_file(t, region, host)
            if "postgres" in host.roles:
                files["patroni/patroni.yml"] = patroni_file(t, region, host)
            # The nodes run backups (the leader), the members archive WAL: both need it.
            if region.with_role("postgres") and {"postgres", "node"} & set(host.roles):
                files["pgbackrest/pgbackrest.conf"] = pgbackrest_file(t, region, host)
            if "redis" in host.roles:
                files |= redis_files(t, region, host)
            if "haproxy" in host.roles:
                files["haproxy/haproxy.cfg"] = haproxy_file(t, region, host)
                keepalived = keepalived_file(t, region, host)
                if keepalived is not None:
                    files["keepalived/keepalived.conf"] = keepalived
            out |= {f"{host.name}/{rel}": text for rel, text in files.items()}
    return out


def all_files(t: Topology, shipped_rules: str) -> dict[str, str]:
    return monitoring_files(t, shipped_rules) | host_files(t)
