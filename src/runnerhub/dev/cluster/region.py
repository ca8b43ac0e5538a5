"""Region B of `runnerhub up --ha --dr`: a second region's database, standing by.

It has its own etcd (one member: region B must not need region A's to elect anything; with
TLS and users like region A's when given a CA and users) and a
Patroni **standby cluster** that streams from region A's primary endpoint (HAProxy's, so it
follows region A's failovers) and, when it cannot, replays what region A archived into
`repo2`, the repository that stands for region B's storage. Region B's pgBackRest is its
own, with that one repository: it replays from it while standing by, and once promoted it
archives into it and its leader backs up into it, without anything of region A. Region B's
RunnerHub node is started by `LocalCluster` like the others, with `node.role: standby`
(docs/dr.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from runnerhub.dev.cluster.etcd import EtcdClientAccess, LocalEtcd
from runnerhub.dev.cluster.patroni import LocalPatroni
from runnerhub.dev.cluster.pgbackrest import LocalPgBackRest
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.paths import write_private
from runnerhub.render.patroni import StandbyOf
from runnerhub.render.pgbackrest import Repo

# The repository region B reads region A's archive from: the one in region B's storage.
REGION_B_REPO = 2


def archive_fallback(pgbr: LocalPgBackRest, repo: int = REGION_B_REPO) -> str:
    """The standby cluster's restore_command: `archive-get` from repository `repo` with
    region B's own pgBackRest. PostgreSQL runs it in the data directory (`$PWD`);
    synchronously, since an asynchronous archive-get keeps a spool of its own that a
    standby cluster's leader does not need."""
    return (
        f"{pgbr.run_command_prefix()} --repo={repo} --pg1-path=$PWD --no-archive-async "
        'archive-get %f "%p"'
    )


def region_b_repository(source: LocalPatroni) -> tuple[Repo, str]:
    """Region A's repository in region B's storage, and its cipher pass."""
    pgbr = source.pgbackrest
    if pgbr is None:
        raise ValueError("region A has no pgBackRest repositories to replay")
    repo = next((r for r in pgbr.repos if r.index == REGION_B_REPO), None)
    if repo is None:
        raise ValueError(f"region A has no repo{REGION_B_REPO}")
    return repo, pgbr.cipher_pass


@dataclass
class StandbyRegion:
    """Region B's etcd and standby cluster, under `base_dir`, following `source` (region A)
    through `primary_port` on 127.0.0.1."""

    base_dir: Path
    source: LocalPatroni
    primary_port: int
    members: int = 1
    # etcd over TLS from this CA, with these users (name -> (prefixes, password)) and
    # Patroni reaching it as `etcd_access`: as region A's (LocalCluster passes them).
    ca: LocalCA | None = None
    etcd_users: Mapping[str, tuple[Sequence[str], str]] | None = field(default=None, repr=False)
    etcd_access: EtcdClientAccess | None = None
    etcd: LocalEtcd = field(init=False)
    pg: LocalPatroni = field(init=False)

    namespace = "/runnerhub-b/"  # region B's Patroni keys in its etcd

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        self.etcd = LocalEtcd(self.base_dir / "etcd", members=1, tls=self.ca, client_certs=False)
        repo, cipher_pass = region_b_repository(self.source)
        self.pg = LocalPatroni(
            self.base_dir / "patroni",
            self.etcd.endpoints,
            members_count=self.members,
            scope="runnerhub-b",
            namespace=self.namespace,
            etcd_access=self.etcd_access or EtcdClientAccess(),
            tls=self.ca,
            synchronous_mode=False,  # nothing in region B commits: it only replays
            standby_credentials=self.source.credentials,  # the roles stream in from A
            backups=True,
            repos=[repo],
            cipher_pass=cipher_pass,
        )
        self.pg.standby_of = self.follow()

    @property
    def pgbackrest(self) -> LocalPgBackRest:
        assert self.pg.pgbackrest is not None
        return self.pg.pgbackrest

    def follow(self) -> StandbyOf:
        """How region B follows region A: its primary endpoint, else repo2's archive."""
        return StandbyOf("127.0.0.1", self.primary_port, archive_fallback(self.pgbackrest))

    def start(self, timeout_s: float = 120.0) -> None:
        self.etcd.start()
        if self.etcd_users:
            self.etcd.enable_auth(self.etcd_users)
        self.pg.etcd_hosts = self.etcd.endpoints
        self.pg.start(timeout_s)

    def dsn(self, dbname: str = "runnerhub") -> str:
        return self.pg.dsn(dbname)

    def describe(
        self, node_urls: dict[str, str], backup: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Region B in cluster.json: what `runnerhub dr` and the tests need to find it
        (`backup`: its nodes' backup section once active; paths, no secret)."""
        return {
            "node_urls": node_urls,
            "backup": backup,
            "etcd_endpoints": self.etcd.endpoints,
            "database_dsn": self.dsn(),
            "follows": f"127.0.0.1:{self.primary_port}",
            "patroni": {
                m.name: {"api_url": m.api_url, "address": m.address, "config": str(m.config_file)}
                for m in self.pg.members
            },
        }

    def stop(self) -> None:
        self.pg.stop()  # before etcd: Patroni hands its key back on the way out
        self.etcd.stop()


def caught_up(primary_dsn: str, standby_dsn: str) -> bool:
    """The standby has replayed everything the primary wrote so far."""
    try:
        with psycopg.connect(primary_dsn, connect_timeout=3) as p:
            row = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        with psycopg.connect(standby_dsn, connect_timeout=3) as s:
            replayed = s.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0] if row else None,)
            ).fetchone()
    except psycopg.Error:
        return False
    return bool(replayed and replayed[0])


def write_node_config(path: Path, config: dict[str, Any]) -> None:
    """A node's configuration as `runnerhub up` writes it: private, since it holds secrets."""
    write_private(
        path,
        "# written by `runnerhub up`; holds secrets\n" + yaml.safe_dump(config, sort_keys=False),
    )


def stand_by_local_node(config: Path, dsn: str, patroni_urls: list[str]) -> None:
    """A node of the region that rejoined as a standby: it reads its region's database."""
    settings = yaml.safe_load(config.read_text())
    settings["node"]["role"] = "standby"
    settings["database"]["dsn"] = dsn
    settings.setdefault("health", {})["patroni_urls"] = patroni_urls
    settings.pop("backup", None)  # the active region backs up
    write_node_config(config, settings)


def activate_local_node(config: Path, pid: int, backup: dict[str, Any] | None = None) -> None:
    """After a promotion: the standby node's configuration says `node.role: active` (and
    how its region backs up: `backup`), and the node (`pid`) is asked to exit; `runnerhub
    up` starts it again, as an active node."""
    settings = yaml.safe_load(config.read_text())
    settings["node"]["role"] = "active"
    if backup:
        settings["backup"] = backup
    write_node_config(config, settings)
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
