"""pgBackRest for the local Patroni cluster: its configuration, two repositories standing
for two regions (the second encrypted), WAL archiving from every member, and the settings
a RunnerHub node needs to run backups (docs/dr.md).

Everything pgBackRest would put under /var (logs, locks, repositories) lives in one
directory the PostgreSQL service user owns. The cipher pass of an encrypted repository is
in an include file (`conf.d/`, mode 0600, the service user's): pgBackRest reads it, and so
does every member's archive-push (which writes encrypted WAL there too); RunnerHub and
`cluster.json` know only its path.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runnerhub.paths import write_private

STANZA = "runnerhub"


class PgBackRestError(Exception):
    pass


def find_pgbackrest() -> Path:
    found = shutil.which("pgbackrest") or (
        "/usr/bin/pgbackrest" if Path("/usr/bin/pgbackrest").exists() else None
    )
    if found is None:
        raise PgBackRestError("pgbackrest not found: apt-get install pgbackrest")
    return Path(found)


@dataclass(frozen=True)
class Repo:
    index: int
    name: str  # for people: region-a, region-b
    path: Path
    encrypted: bool = False


@dataclass(frozen=True)
class Member:
    name: str
    data_dir: Path
    port: int


@dataclass
class LocalPgBackRest:
    """pgBackRest's files for one cluster, under `root` (reachable by the service user)."""

    root: Path
    repos: Sequence[Repo]
    uid: int | None = None  # the service user's, when we are root
    gid: int | None = None
    stanza: str = STANZA
    cipher_pass: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # WAL waiting in pg_wal past this is dropped (a PITR gap), never a full disk.
    archive_queue_max: str = "1GB"

    @property
    def config_path(self) -> Path:
        """pgBackRest's --config-path: pgbackrest.conf and conf.d/*.conf in it."""
        return self.root / "etc"

    @property
    def secrets_file(self) -> Path:
        return self.config_path / "conf.d" / "cipher.conf"

    @property
    def pgpass_file(self) -> Path:
        return self.config_path / "pgpass"

    @property
    def log_path(self) -> Path:
        return self.root / "log"

    def _options(self, member: Member) -> str:
        """The options a member's archive-push and archive-get need on one host: its own
        data directory (PostgreSQL passes a relative %p)."""
        return (
            f"--config-path={self.config_path} --stanza={self.stanza} --pg1-path={member.data_dir}"
        )

    def run_command_prefix(self) -> str:
        """pgBackRest with this configuration and stanza, for a command line of its own
        (a standby cluster's restore_command)."""
        return f"{find_pgbackrest()} --config-path={self.config_path} --stanza={self.stanza}"

    def archive_command(self, member: Member) -> str:
        return f"{find_pgbackrest()} {self._options(member)} archive-push %p"

    def restore_command(self, member: Member) -> str:
        return f'{find_pgbackrest()} {self._options(member)} archive-get %f "%p"'

    def write(self, members: Sequence[Member], socket_dir: Path, user: str, password: str) -> None:
        """The configuration, the cipher pass, the libpq password file, the directories."""
        dirs = [self.root, self.config_path, self.config_path / "conf.d", self.log_path]
        dirs += [self.root / "lock", *(r.path for r in self.repos)]
        for d in dirs:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own(d)
        self._private(
            self.config_path / "pgbackrest.conf", render_conf(self, members, socket_dir, user)
        )
        # For a connection over the socket, libpq matches the socket directory as the host.
        self._private(self.pgpass_file, f"{socket_dir}:*:*:{user}:{password}\n")
        if any(r.encrypted for r in self.repos):
            lines = [
                f"repo{r.index}-cipher-pass={self.cipher_pass}" for r in self.repos if r.encrypted
            ]
            self._private(self.secrets_file, "[global]\n" + "\n".join(lines) + "\n")

    def _own(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def _private(self, path: Path, text: str) -> None:
        write_private(path, text, self.uid, self.gid)

    def run(self, *args: str, timeout_s: float = 120) -> str:
        """A pgbackrest command as the service user (for setup and tests)."""
        argv = [
            str(find_pgbackrest()),
            f"--config-path={self.config_path}",
            f"--stanza={self.stanza}",
            *args,
        ]
        r = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PGPASSFILE": str(self.pgpass_file)},
            user=self.uid,
            group=self.gid,
            extra_groups=[] if self.uid is not None else None,
            check=False,
        )
        if r.returncode != 0:
            raise PgBackRestError(
                f"pgbackrest {' '.join(args)}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
            )
        return r.stdout

    def stanza_create(self, timeout_s: float = 60.0) -> None:
        """Create the stanza (idempotent). The primary's first WAL segments may be being
        archived meanwhile, and the asynchronous archive-push holds the stanza's archive
        lock while it runs: a lock refusal (pgBackRest's error 050) is tried again."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.run("stanza-create", "--log-level-console=warn")
                return
            except PgBackRestError as exc:
                if "[050]" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)  # the lock holder's pace, not ours: archive-push runs for ~1 s

    def node_settings(self, user: str | None) -> dict[str, Any]:
        """The `backup` section of a RunnerHub node's configuration for this cluster (no
        secret in it: paths only)."""
        return {
            "enabled": True,
            "stanza": self.stanza,
            "config_path": str(self.config_path),
            "pgpass_file": str(self.pgpass_file),
            "user": user,
            "repos": [{"index": r.index, "name": r.name, "path": str(r.path)} for r in self.repos],
        }


def render_conf(b: LocalPgBackRest, members: Sequence[Member], socket_dir: Path, user: str) -> str:
    """pgbackrest.conf (pure). No comment may follow a value on its line: pgBackRest would
    take it as part of the value."""
    lines = [
        "# written by RunnerHub's local cluster; the cipher pass is in conf.d/, not here",
        "[global]",
        f"log-path={b.log_path}",
        f"lock-path={b.root / 'lock'}",
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
        f"archive-push-queue-max={b.archive_queue_max}",
        "archive-timeout=30",
    ]
    for r in b.repos:
        lines += [
            f"# repo{r.index}: {r.name}",
            f"repo{r.index}-type=posix",
            f"repo{r.index}-path={r.path}",
            f"repo{r.index}-retention-full=2",
            f"repo{r.index}-retention-diff=3",
        ]
        if r.encrypted:
            lines.append(f"repo{r.index}-cipher-type=aes-256-cbc")
    lines += ["", f"[{b.stanza}]"]
    for i, m in enumerate(members, start=1):
        lines += [
            f"pg{i}-path={m.data_dir}",
            f"pg{i}-port={m.port}",
            f"pg{i}-socket-path={socket_dir}",
            f"pg{i}-user={user}",
        ]
    return "\n".join(lines) + "\n"
