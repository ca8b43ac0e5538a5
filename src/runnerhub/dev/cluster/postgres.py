"""A private PostgreSQL server in a directory: for `runnerhub up`, the tests and benchmarks.

It listens on loopback only (TCP, no Unix socket, so it never meets the machine's own
server), authenticates with a generated password, and runs as an unprivileged user when
started as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.process import env_path, find_binary
from runnerhub.paths import write_private

SERVICE_USER = "postgres"
PRIVATE_ROOT = Path("/var/tmp/runnerhub-pg")


class PostgresError(Exception):
    pass


def find_bin_dir() -> Path:
    """PostgreSQL's server binaries: $RUNNERHUB_PG_BIN, else the newest Debian/Ubuntu
    install (not on the PATH there), else the PATH's."""
    dirs = [d for d in [env_path("RUNNERHUB_PG_BIN"), *_debian_bin_dirs()] if d is not None]
    initdb = find_binary(
        "initdb",
        PostgresError,
        "install postgresql-15 (`make` does this) or set RUNNERHUB_PG_BIN",
        first=[d / "initdb" for d in dirs if (d / "pg_ctl").exists()],
        what="PostgreSQL server binaries (initdb, pg_ctl)",
    )
    return initdb.parent


def _debian_bin_dirs() -> list[Path]:
    """/usr/lib/postgresql/<version>/bin, newest first."""
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    versions = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [v / "bin" for v in reversed(versions)]


def _run_as() -> tuple[list[str], int | None, int | None]:
    """Command prefix and uid/gid to run the server with (unprivileged when we are root)."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise PostgresError(
            f"running as root, PostgreSQL needs the unprivileged user {SERVICE_USER!r}, "
            "which does not exist (the postgresql package creates it)"
        ) from exc
    return ["runuser", "-u", SERVICE_USER, "--"], pw.pw_uid, pw.pw_gid


def service_account() -> tuple[int | None, int | None, Path | None]:
    """uid, gid and home of the user servers run as: the unprivileged service user when we
    are root, else ourselves (None: no change of user)."""
    _prefix, uid, gid = _run_as()
    if uid is None:
        return None, None, None
    return uid, gid, Path(pwd.getpwuid(uid).pw_dir)


def private_dir(
    base_dir: Path, uid: int | None, gid: int | None, fallback: Path = PRIVATE_ROOT
) -> Path:
    """Where a server's files go: `base_dir` if the service user can reach it, else a
    directory under `fallback` named after it (pytest's and /root's directories are 0700)."""
    if uid is None or gid is None or _traversable(base_dir, uid, gid):
        return base_dir
    digest = hashlib.sha256(str(base_dir).encode()).hexdigest()[:16]
    return fallback / digest


def _traversable(path: Path, uid: int, gid: int) -> bool:
    """Can `uid` reach `path` (execute permission on every directory on the way)?"""
    for p in [path, *path.parents]:
        if not p.exists():
            continue
        st = p.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


@dataclass
class LocalPostgres:
    base_dir: Path  # we own this; the data directory lives inside it (or beside, see below)
    port: int = 0
    user: str = "runnerhub"
    password: str = ""
    synchronous_commit: str = "on"

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        self.bin_dir = find_bin_dir()
        self._prefix, self._uid, self._gid = _run_as()
        # e.g. a state directory under /root: keep the data where postgres can reach it.
        self.data_dir = private_dir(self.base_dir, self._uid, self._gid) / "pgdata"
        self.log_file = self.data_dir.parent / "postgresql.log"
        self._pwfile = self.base_dir / "pg-password"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _cmd(self, *args: str) -> list[str]:
        return [*self._prefix, str(self.bin_dir / args[0]), *args[1:]]

    def _chown(self, path: Path) -> None:
        if self._uid is not None and self._gid is not None:
            os.chown(path, self._uid, self._gid)

    def init(self) -> None:
        if self.initialised:
            self.password = self._pwfile.read_text().strip()
            self.port = self.port or self._configured_port()
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.data_dir.parent)
        self.password = self.password or secrets.token_urlsafe(24)
        write_private(self._pwfile, self.password + "\n")
        # initdb reads the password from a file the server user can read; remove it after.
        tmp_pw = self.data_dir.parent / "initdb-pw"
        write_private(tmp_pw, self.password + "\n")
        self._chown(tmp_pw)
        try:
            self._check(
                self._cmd(
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth=scram-sha-256",
                    f"--pwfile={tmp_pw}",
                ),
                "initdb",
            )
        finally:
            tmp_pw.unlink(missing_ok=True)
        self.port = self.port or free_port()
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# written by runnerhub\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
                "shared_buffers = 128MB\n"
                f"synchronous_commit = {self.synchronous_commit}\n"
                "logging_collector = off\n"
                "log_min_messages = warning\n"
            )

    def clone_from(
        self, primary: LocalPostgres, via_port: int | None = None, name: str | None = None
    ) -> None:
        """Make this (new) server a streaming replica of `primary`: a base backup taken
        over replication, standby.signal and primary_conninfo written (`-R`). `via_port`:
        connect through that port (a proxy in front of the primary) instead of its own;
        `name`: how the primary's pg_stat_replication names it (its cluster_name)."""
        if self.initialised:
            raise PostgresError(f"{self.data_dir} already holds a database")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.data_dir.parent)
        self.user, self.password = primary.user, primary.password
        write_private(self._pwfile, self.password + "\n")
        cmd = self._cmd(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(via_port or primary.port), "-U", self.user),
            *("-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast"),
        )
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PGPASSWORD": self.password},
        )
        if proc.returncode != 0:
            raise PostgresError(f"pg_basebackup failed (exit {proc.returncode}): {proc.stderr}")
        self.port = self.port or free_port()
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write(f"\n# the replica's own\nport = {self.port}\n")
            if name:
                f.write(f"cluster_name = '{name}'\n")

    def _configured_port(self) -> int:
        port = None
        for line in (self.data_dir / "postgresql.conf").read_text().splitlines():
            if line.startswith("port = "):
                port = int(line.split("=", 1)[1])  # the last one counts (a clone adds its own)
        if port is None:
            raise PostgresError(f"{self.data_dir}/postgresql.conf has no port")
        return port

    def start(self, timeout_s: float = 60.0) -> None:
        if self.running():
            return
        self.log_file.touch()
        self._chown(self.log_file)
        self._check(
            self._cmd(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ),
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop"),
            capture_output=True,
            check=False,
        )

    def running(self) -> bool:
        return self.pid() is not None

    def pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def _check(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            if what.startswith("pg_ctl") and self.log_file.exists():
                tail += "\n" + self.log_file.read_text()[-2000:]
            raise PostgresError(f"{what} failed (exit {proc.returncode}): {tail}")

    # -- access ----------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname={dbname} user={self.user} "
            f"password={self.password}"
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"PostgreSQL did not accept connections: {exc}") from exc
                time.sleep(0.1)

    def create_database(self, name: str, template: str | None = None) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if template:
                    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                conn.execute(stmt)
        return self.dsn(name)
