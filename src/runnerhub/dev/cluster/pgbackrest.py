"""pgBackRest for the local Patroni cluster: its configuration, two repositories standing
for two regions (the second encrypted), WAL archiving from every member, and the settings
a RunnerHub node needs to run backups (docs/dr.md).

Everything pgBackRest would put under /var (logs, locks, repositories) lives in one
directory the PostgreSQL service user owns. The cipher pass of an encrypted repository is
in an include file (`conf.d/`, mode 0600, the service user's): pgBackRest reads it, and so
does every member's archive-push (which writes encrypted WAL there too); RunnerHub and
`cluster.json` know only its path. The configuration comes from `runnerhub.render.pgbackrest`,
the renderer production configurations come from too.
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
from runnerhub.render.pgbackrest import (
    STANZA,
    Member,
    Repo,
    archive_get_command,
    archive_push_command,
    render_conf,
)


class PgBackRestError(Exception):
    pass


def find_pgbackrest() -> Path:
    found = shutil.which("pgbackrest") or (
        "/usr/bin/pgbackrest" if Path("/usr/bin/pgbackrest").exists() else None
    )
    if found is None:
        raise PgBackRestError("pgbackrest not found: apt-get install pgbackrest")
    return Path(found)


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
        return archive_push_command(f"{find_pgbackrest()} {self._options(member)}")

    def restore_command(self, member: Member) -> str:
        return archive_get_command(f"{find_pgbackrest()} {self._options(member)}")

    def write(self, members: Sequence[Member], socket_dir: Path, user: str, password: str) -> None:
        """The configuration, the cipher pass, the libpq password file, the directories."""
        dirs = [self.root, self.config_path, self.config_path / "conf.d", self.log_path]
        dirs += [self.root / "lock", *(r.path for r in self.repos)]
        for d in dirs:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own(d)
        conf = render_conf(
            repos=self.repos,
            members=members,
            log_path=self.log_path,
            lock_path=self.root / "lock",
            socket_dir=socket_dir,
            user=user,
            stanza=self.stanza,
            archive_queue_max=self.archive_queue_max,
        )
        self._private(self.config_path / "pgbackrest.conf", conf)
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
