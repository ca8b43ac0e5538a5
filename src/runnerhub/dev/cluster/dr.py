"""Disaster recovery on the local cluster: point-in-time recovery (`runnerhub dr restore`),
into a new Patroni cluster beside the source, which keeps running untouched (on new ports,
under a name of its own in the same etcd), or in place of the source (`--in-place`: the
same name, ports and DSN). Either is made from the source's backups and WAL in a
pgBackRest repository (docs/dr.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from runnerhub.backup.pgbackrest import BackupInfo, parse_info
from runnerhub.backup.pitr import Target, TargetError, base_backup
from runnerhub.dev.cluster.etcd import EtcdClientAccess
from runnerhub.dev.cluster.patroni import LocalPatroni, RestoreFrom
from runnerhub.dev.waiting import Timeout, wait_until_sync


def restore_cluster(
    source: LocalPatroni,
    etcd_endpoints: Sequence[str],
    base_dir: Path,
    target: Target,
    repo: int = 1,
    members: int = 1,
    now: datetime | None = None,
    etcd_access: EtcdClientAccess | None = None,
) -> tuple[LocalPatroni, BackupInfo]:
    """Start a new cluster restored to `target` from `source`'s repository `repo`; return it
    and the backup it started from. TargetError (nothing made) when the repository cannot
    reach the target; PatroniError when recovery fails (the new cluster is removed)."""
    base = _base_backup(source, target, repo, now)
    assert source.pgbackrest is not None
    name = base_dir.name
    restored = LocalPatroni(
        base_dir,
        etcd_endpoints,
        members_count=members,
        scope=name,
        namespace=f"/{name}/",
        synchronous_mode=members > 1,
        restore=RestoreFrom(
            source.pgbackrest, source.credentials, repo, target.pgbackrest_options()
        ),
        etcd_access=etcd_access or source.etcd_access,
    )
    try:
        restored.start(timeout_s=600)
    except BaseException:
        restored.destroy()
        raise
    return restored, base


def _base_backup(
    source: LocalPatroni, target: Target, repo: int, now: datetime | None
) -> BackupInfo:
    """The backup a restore of `source` to `target` starts from (TargetError: none can)."""
    pgbr = source.pgbackrest
    if pgbr is None:
        raise TargetError("the source cluster has no pgBackRest repositories")
    if repo not in {r.index for r in pgbr.repos}:
        raise TargetError(f"no repo{repo}: the repositories are {[r.index for r in pgbr.repos]}")
    backups = parse_info(pgbr.run("info", "--output=json"), pgbr.stanza).backups
    return base_backup(backups, repo, target, now or datetime.now(UTC))


@dataclass(frozen=True)
class InPlace:
    """What an in-place restore did: the backup it started from, where each member's
    data as it was before now lies, and whether the WAL up to the restore was archived."""

    base: BackupInfo
    kept: list[Path]
    archived: bool


def restore_in_place(
    cluster: LocalPatroni,
    clear_keys: Callable[[], None],
    target: Target,
    repo: int = 1,
    now: datetime | None = None,
    timeout_s: float = 600.0,
) -> InPlace:
    """Replace `cluster`'s database by its state at `target`, restored from its own
    repository `repo`, under the same name, ports and DSN; it archives on into the same
    stanza on a new timeline. TargetError (nothing changed) when the repository cannot reach
    the target; PatroniError when the restored cluster does not come up (each member's
    data as it was is kept aside, named in the message)."""
    base = _base_backup(cluster, target, repo, now)
    assert cluster.pgbackrest is not None
    archived = archive_current_wal(cluster.dsn(), timeout_s=60)
    restore = RestoreFrom(
        cluster.pgbackrest,
        cluster.credentials,
        repo,
        target.pgbackrest_options(),
        keep_archiving=True,
    )
    kept = cluster.rebuild_from_backup(restore, clear_keys, timeout_s)
    return InPlace(base, kept, archived)


def archive_current_wal(dsn: str, timeout_s: float) -> bool:
    """Close the current WAL segment and wait until it is archived, so that a restore can
    reach everything written until now. False when that cannot be done (no primary: a
    restore then reaches what the archive already holds)."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            wal = row[0] if row else ""

            def archived() -> bool:
                done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
                return bool(done and (done[0] or "") >= wal)

            wait_until_sync(archived, timeout_s, f"WAL {wal} to be archived", 0.2)
    except (psycopg.Error, Timeout):
        return False
    return True


def restore_local(
    state_dir: Path, target: Target, repo: int = 1, members: int = 1
) -> tuple[LocalPatroni, BackupInfo]:
    """The same for the cluster `runnerhub up --ha` keeps in `state_dir`."""
    info = json.loads((state_dir / "cluster.json").read_text())
    if not info.get("backups"):
        raise TargetError(f"the cluster in {state_dir} keeps no backups (run `runnerhub up --ha`)")
    endpoints = info["etcd_endpoints"]
    ca, password = info.get("etcd_ca_file"), info.get("etcd_patroni_password")
    access = EtcdClientAccess(Path(ca) if ca else None, "patroni" if password else None, password)
    source = LocalPatroni(state_dir / "patroni", endpoints, backups=True, etcd_access=access)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return restore_cluster(
        source, endpoints, state_dir / f"restored-{stamp}", target, repo, members
    )
