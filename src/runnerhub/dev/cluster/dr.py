"""Disaster recovery on the local cluster: point-in-time recovery into a new Patroni cluster
(`runnerhub dr restore`). The source keeps running untouched; the restored cluster is made
from the source's backups and WAL in a pgBackRest repository, on new ports, under a name
of its own in the same etcd (docs/dr.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from runnerhub.backup.pgbackrest import BackupInfo, parse_info
from runnerhub.backup.pitr import Target, TargetError, base_backup
from runnerhub.dev.cluster.patroni import LocalPatroni, RestoreFrom


def restore_cluster(
    source: LocalPatroni,
    etcd_endpoints: Sequence[str],
    base_dir: Path,
    target: Target,
    repo: int = 1,
    members: int = 1,
    now: datetime | None = None,
) -> tuple[LocalPatroni, BackupInfo]:
    """Start a new cluster restored to `target` from `source`'s repository `repo`; return it
    and the backup it started from. TargetError (nothing made) when the repository cannot
    reach the target; PatroniError when recovery fails (the new cluster is removed)."""
    pgbr = source.pgbackrest
    if pgbr is None:
        raise TargetError("the source cluster has no pgBackRest repositories")
    if repo not in {r.index for r in pgbr.repos}:
        raise TargetError(f"no repo{repo}: the repositories are {[r.index for r in pgbr.repos]}")
    backups = parse_info(pgbr.run("info", "--output=json"), pgbr.stanza).backups
    base = base_backup(backups, repo, target, now or datetime.now(UTC))
    name = base_dir.name
    restored = LocalPatroni(
        base_dir,
        etcd_endpoints,
        members_count=members,
        scope=name,
        namespace=f"/{name}/",
        synchronous_mode=members > 1,
        restore=RestoreFrom(pgbr, source.credentials, repo, target.pgbackrest_options()),
    )
    try:
        restored.start(timeout_s=600)
    except BaseException:
        restored.destroy()
        raise
    return restored, base


def restore_local(
    state_dir: Path, target: Target, repo: int = 1, members: int = 1
) -> tuple[LocalPatroni, BackupInfo]:
    """The same for the cluster `runnerhub up --ha` keeps in `state_dir`."""
    info = json.loads((state_dir / "cluster.json").read_text())
    if not info.get("backups"):
        raise TargetError(f"the cluster in {state_dir} keeps no backups (run `runnerhub up --ha`)")
    endpoints = info["etcd_endpoints"]
    source = LocalPatroni(state_dir / "patroni", endpoints, backups=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return restore_cluster(
        source, endpoints, state_dir / f"restored-{stamp}", target, repo, members
    )
