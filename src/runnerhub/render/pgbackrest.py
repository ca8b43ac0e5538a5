"""pgBackRest's configuration: the same function writes the local cluster's (every member on
one host, repositories in directories) and a production host's `/etc/pgbackrest/pgbackrest.conf`
(the host's own member as pg1, the region's other members reached over SSH), so the two
cannot drift. No secret is ever in it: an encrypted repository's cipher pass (and an object
store's keys) go in an include file of `conf.d/` that only the postgres user reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STANZA = "runnerhub"
LOCAL_HEADER = "# written by RunnerHub's local cluster; the cipher pass is in conf.d/, not here"
# Repository options that hold a secret: never rendered, only included.
SECRET_OPTIONS = re.compile(r"(cipher-pass|key-secret|key$|token|password)")


@dataclass(frozen=True)
class Repo:
    index: int
    name: str  # for people: region-a, region-b
    path: Path
    encrypted: bool = False
    retention_full: int = 2
    retention_diff: int = 3
    # More `repoN-*` settings, without the prefix: type=s3, s3-bucket=..., never a secret.
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Member:
    name: str
    data_dir: Path
    port: int
    host: str | None = None  # another host's member (over SSH as postgres); None: this one


def archive_push_command(prefix: str) -> str:
    """PostgreSQL's archive_command: `prefix` is pgbackrest with its config and stanza."""
    return f"{prefix} archive-push %p"


def archive_get_command(prefix: str) -> str:
    """PostgreSQL's restore_command (the standby cluster's too)."""
    return f'{prefix} archive-get %f "%p"'


def _repo_lines(r: Repo) -> list[str]:
    lines = [
        f"# repo{r.index}: {r.name}",
        *([] if "type" in r.options else [f"repo{r.index}-type=posix"]),
        f"repo{r.index}-path={r.path}",
        f"repo{r.index}-retention-full={r.retention_full}",
        f"repo{r.index}-retention-diff={r.retention_diff}",
    ]
    for key, value in r.options.items():
        if SECRET_OPTIONS.search(key):
            raise ValueError(f"repo{r.index}-{key} holds a secret: put it in conf.d/, not here")
        if not re.fullmatch(r"[a-z0-9-]+", key) or "\n" in value:
            raise ValueError(f"repo{r.index}: invalid option {key!r}")
        lines.append(f"repo{r.index}-{key}={value}")
    if r.encrypted:
        lines.append(f"repo{r.index}-cipher-type=aes-256-cbc")
    return lines


# long: one template, read top to bottom like the file it writes
def render_conf(
    *,
    repos: Sequence[Repo],
    members: Sequence[Member],
    log_path: Path,
    lock_path: Path,
    socket_dir: Path,
    user: str,
    stanza: str = STANZA,
    archive_queue_max: str = "1GB",
    header: Sequence[str] = (LOCAL_HEADER,),
) -> str:
    """pgbackrest.conf (pure). No comment may follow a value on its line: pgBackRest would
    take it as part of the value."""
    lines = [
        *header,
        "[global]",
        f"log-path={log_path}",
        f"lock-path={lock_path}",
        "log-level-console=info",
        "log-level-file=detail",
        "process-max=1",
        "# a file found corrupt is reported at once, not retried for 15 s (a local disk)",
        "job-retry=0",
        "compress-type=zst",
        "compress-level=3",
        "start-fast=y",
        *(
            [
                "# copy the files from a replica; the primary only starts and stops the backup",
                "backup-standby=y",
            ]
            if len(members) > 1
            else []
        ),
        "# Synchronous: pgBackRest before 2.59 (Debian 12 has 2.45) does not enforce",
        "# archive-push-queue-max asynchronously while a WAL file keeps failing (its",
        "# issue 2629): pg_wal could fill the disk. Synchronously it always does.",
        "archive-async=n",
        "# WAL waiting in pg_wal past this is dropped (a PITR gap), never a full disk",
        f"archive-push-queue-max={archive_queue_max}",
        "archive-timeout=30",
    ]
    for r in repos:
        lines += _repo_lines(r)
    lines += ["", f"[{stanza}]"]
    for i, m in enumerate(members, start=1):
        lines += [
            *([f"pg{i}-host={m.host}"] if m.host else []),
            f"pg{i}-path={m.data_dir}",
            f"pg{i}-port={m.port}",
            f"pg{i}-socket-path={socket_dir}",
            f"pg{i}-user={user}",
        ]
    return "\n".join(lines) + "\n"
