"""A private Patroni cluster: PostgreSQL with streaming replication and automatic failover,
for `runnerhub up --ha`, the failover tests and `bench/dbfailover`.

Every member is one Patroni process managing one PostgreSQL on loopback ports; etcd (the
same cluster RunnerHub elects its leader in) is the DCS. Synchronous mode is on, so a commit
is acknowledged only once a replica has it too: losing the primary loses no acknowledged
write (RPO 0). Patroni and PostgreSQL run as an unprivileged user when we are root, from
Debian's `patroni` package (its own /usr/bin/python3, never our virtualenv). Each member's
file comes from `runnerhub.render.patroni`, the renderer production configurations come
from too (timing rules: see there).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from runnerhub.dev.cluster.etcd import EtcdClientAccess
from runnerhub.dev.cluster.pgbackrest import LocalPgBackRest, find_pgbackrest
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.postgres import PRIVATE_ROOT, find_bin_dir, private_dir, service_account
from runnerhub.dev.cluster.process import ManagedProcess, env_path, find_binary, wait_ready
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.dev.waiting import wait_until_sync
from runnerhub.paths import write_private
from runnerhub.render.patroni import (
    HOST,
    SUPERUSER,
    Credentials,
    PostgresTls,
    StandbyOf,
    Timing,
    render_config,
)
from runnerhub.render.pgbackrest import Member as BackupMember
from runnerhub.render.pgbackrest import Repo

STATE_FILE = "patroni.json"


class PatroniError(Exception):
    pass


# `make deps` puts Patroni 3.0.4 here (patroni.lock says why not Debian's 3.0.2).
PATRONI_VENV_BIN = Path("/opt/runnerhub-patroni/bin/patroni")


def find_patroni() -> Path:
    """$RUNNERHUB_PATRONI, else the Patroni `make deps` installs (a virtualenv over the
    system Python, which the service user can read), else Debian's, else the PATH's."""
    return find_binary(
        "patroni",
        PatroniError,
        "run `make deps` (Patroni 3.0.4 into /opt/runnerhub-patroni) or set RUNNERHUB_PATRONI",
        first=[env_path("RUNNERHUB_PATRONI"), PATRONI_VENV_BIN, Path("/usr/bin/patroni")],
    )


@dataclass(frozen=True)
class RestoreFrom:
    """A cluster made from a backup: the source's pgBackRest, its credentials (the roles
    are in the backup), the repository, and pgBackRest's target options. A new cluster
    beside the source archives nothing (its WAL is not the source's history); one restored
    in place (`keep_archiving`) goes on archiving into the same stanza, on a new timeline."""

    source: LocalPgBackRest
    credentials: Credentials
    repo: int
    target: Sequence[str]  # e.g. ["--type=time", "--target=2026-11-30 19:00:00+00"]
    keep_archiving: bool = False

    def _base(self, data_dir: Path) -> str:
        return (
            f"{find_pgbackrest()} --config-path={self.source.config_path} "
            f"--stanza={self.source.stanza} --repo={self.repo} --pg1-path={data_dir}"
        )

    def command(self, data_dir: Path) -> str:
        options = [*([] if self.keep_archiving else ["--archive-mode=off"]), *self.target]
        target = " ".join(shlex.quote(t) for t in options)
        return f"{self._base(data_dir)} {target} --target-action=promote restore"

    def restore_command(self, data_dir: Path) -> str:
        return f'{self._base(data_dir)} archive-get %f "%p"'


@dataclass
class PatroniMember(ManagedProcess):
    name: str
    api_port: int
    pg_port: int
    config_file: Path
    data_dir: Path
    log_file: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.pg_port}"

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def state(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """Patroni's `GET /patroni` (role, state, timeline, xlog positions), or None."""
        try:
            r = httpx.get(f"{self.api_url}/patroni", timeout=timeout_s)
            body: dict[str, Any] = r.json()
            return body
        except (httpx.HTTPError, ValueError):
            return None

    def is_primary(self, timeout_s: float = 1.0) -> bool:
        """Patroni's own health check for the leader: what HAProxy asks too."""
        try:
            return httpx.get(f"{self.api_url}/primary", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class LocalPatroni:
    """`members` Patroni/PostgreSQL members forming one cluster under `base_dir`."""

    base_dir: Path
    etcd_hosts: Sequence[str]
    members_count: int = 3
    scope: str = "runnerhub"
    namespace: str = "/runnerhub-pg/"
    timing: Timing = field(default_factory=Timing)
    synchronous_mode: bool = True
    parameters: Mapping[str, Any] = field(default_factory=dict)  # PostgreSQL, cluster-wide
    # WAL archiving and backups with pgBackRest, into two repositories (two "regions").
    backups: bool = False
    archive_queue_max: str = "1GB"  # pgBackRest's archive-push-queue-max
    # Its repositories; None: two of its own (region-a, region-b). A second region's cluster
    # names the first's repository in its storage, and that repository's cipher pass.
    repos: Sequence[Repo] | None = None
    cipher_pass: str | None = None
    # Bootstrap from a backup instead of initdb: the source's pgBackRest and credentials,
    # and how (`RestoreFrom`); the first member restores, the others copy it.
    restore: RestoreFrom | None = None
    # A standby cluster of another (its credentials: the roles stream in from there).
    standby_of: StandbyOf | None = None
    standby_credentials: Credentials | None = None
    etcd_access: EtcdClientAccess = field(default_factory=EtcdClientAccess)
    # PostgreSQL over TLS: each member a certificate from this CA, every TCP connection
    # TLS, and `dsn()` checks the server's certificate (verify-full: all on 127.0.0.1).
    tls: LocalCA | None = None
    members: list[PatroniMember] = field(init=False)

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        self.uid, self.gid, self.user_home = service_account()
        # Patroni, its configuration and PostgreSQL's data must be reachable by the service
        # user: a pytest or /root directory is not, so they then live under /var/tmp.
        self.run_dir = private_dir(self.base_dir, self.uid, self.gid) / "patroni"
        state = self.base_dir / STATE_FILE
        cipher_pass = None
        inherited = self.restore.credentials if self.restore else self.standby_credentials
        if inherited is not None and not state.exists():
            self.credentials = inherited  # the roles come with the backup, or the stream
            ports = [(free_port(), free_port()) for _ in range(self.members_count)]
        elif state.exists():
            saved = json.loads(state.read_text())
            self.credentials = Credentials(**saved["credentials"])
            ports = [(int(m["api_port"]), int(m["pg_port"])) for m in saved["members"]]
            cipher_pass = saved.get("cipher_pass")
        else:
            self.credentials = Credentials.generate()
            ports = [(free_port(), free_port()) for _ in range(self.members_count)]
        self.members = [
            PatroniMember(
                name=f"pg-{i + 1}",
                api_port=api,
                pg_port=pg,
                config_file=self.run_dir / f"pg-{i + 1}.yml",
                data_dir=self.run_dir / f"pg-{i + 1}.data",
                # Patroni's output goes to a file we open: keep it beside our state (it
                # outlives destroy(), for a post-mortem), not in the service user's directory.
                log_file=self.base_dir / f"pg-{i + 1}.log",
            )
            for i, (api, pg) in enumerate(ports)
        ]
        self.pgbackrest: LocalPgBackRest | None = None
        if self.backups:
            top = self.run_dir.parent
            self.pgbackrest = LocalPgBackRest(
                top / "pgbackrest",
                self.repos
                or [
                    Repo(1, "region-a", top / "repos" / "region-a"),
                    Repo(2, "region-b", top / "repos" / "region-b", encrypted=True),
                ],
                self.uid,
                self.gid,
                archive_queue_max=self.archive_queue_max,
            )
            if self.cipher_pass or cipher_pass:
                self.pgbackrest.cipher_pass = self.cipher_pass or cipher_pass or ""

    # -- lifecycle -------------------------------------------------------------------------

    def _save(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "credentials": self.credentials.__dict__,
            "cipher_pass": self.pgbackrest.cipher_pass if self.pgbackrest else None,
            "members": [
                {"name": m.name, "api_port": m.api_port, "pg_port": m.pg_port} for m in self.members
            ],
        }
        path = self.base_dir / STATE_FILE
        write_private(path, json.dumps(state, indent=2) + "\n")

    def _chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def backup_members(self) -> list[BackupMember]:
        return [BackupMember(m.name, m.data_dir, m.pg_port) for m in self.members]

    def write_configs(self) -> None:
        bin_dir = find_bin_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.run_dir)
        b = self.pgbackrest
        if b is not None:  # before any member archives a WAL segment
            b.write(self.backup_members(), self.run_dir, SUPERUSER, self.credentials.superuser)
        r = self.restore
        ca_copy = None
        if self.etcd_access.ca is not None:  # where the service user can read it
            ca_copy = self.run_dir / "etcd-ca.pem"
            ca_copy.write_bytes(self.etcd_access.ca.read_bytes())
            self._chown(ca_copy)
        for m, bm in zip(self.members, self.backup_members(), strict=True):
            pg_tls = self._member_tls(m) if self.tls else None
            archive = (b.archive_command(bm), b.restore_command(bm)) if b else None
            restore = (r.command(m.data_dir), r.restore_command(m.data_dir)) if r else None
            config = render_config(
                scope=self.scope,
                namespace=self.namespace,
                name=m.name,
                api_port=m.api_port,
                pg_port=m.pg_port,
                etcd_hosts=self.etcd_hosts,
                data_dir=m.data_dir,
                run_dir=self.run_dir,
                bin_dir=bin_dir,
                credentials=self.credentials,
                timing=self.timing,
                synchronous_mode=self.synchronous_mode,
                parameters=self.parameters,
                archive=archive,
                restore=restore,
                standby_of=self.standby_of,
                etcd=self.etcd_access.patroni(ca_copy),
                tls=pg_tls,
            )
            text = json.dumps(config, indent=2) + "\n"  # JSON is YAML
            write_private(m.config_file, text, self.uid, self.gid)

    def _member_tls(self, m: PatroniMember) -> PostgresTls:
        """The member's certificate, key and the CA, where the service user reads them
        (the CA's own directory is root's alone)."""
        assert self.tls is not None
        issued = self.tls.issue(f"postgres-{m.name}")
        files = PostgresTls(
            self.run_dir / f"{m.name}.crt", self.run_dir / f"{m.name}.key", self.run_dir / "ca.pem"
        )
        write_private(files.key_file, issued.key.read_text(), self.uid, self.gid)
        write_private(files.cert_file, issued.cert.read_text(), self.uid, self.gid)
        write_private(files.ca_file, self.tls.cert.read_text(), self.uid, self.gid)
        return files

    def start_member(self, m: PatroniMember) -> None:
        if m.alive():
            return
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.user_home or self.run_dir),
            "LANG": "C.UTF-8",
        }
        m.spawn(
            [str(find_patroni()), str(m.config_file)],
            env=env,
            cwd=self.run_dir,
            user=self.uid,  # the service user when we are root (PostgreSQL refuses root)
            group=self.gid,
        )

    def start(self, timeout_s: float = 90.0) -> None:
        """Start every member; wait for a writable primary and streaming replicas."""
        find_patroni()
        self._save()
        self.write_configs()
        for m in self.members:
            self.start_member(m)
        try:
            self.wait_healthy(timeout_s)
            if self.pgbackrest is not None and self.standby_of is None:
                self.pgbackrest.stanza_create()  # idempotent: a restart finds it made
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """Replicas first, then the primary (so it does not wait on a synchronous replica
        that is gone), each with SIGTERM: Patroni stops its PostgreSQL cleanly."""
        primary = self.primary()
        replicas = [m for m in self.members if m is not primary]
        for group in (replicas, [primary] if primary else []):
            for m in group:  # the replicas together: their shutdowns overlap
                m.terminate()
            deadline = time.monotonic() + timeout_s
            for m in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    if m.popen is not None:
                        m.popen.wait(max(0.1, deadline - time.monotonic()))
                self.kill_member(m)  # whatever is left (a hung Patroni, an orphaned postmaster)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.pgbackrest is not None:
            shutil.rmtree(self.pgbackrest.root, ignore_errors=True)
            shutil.rmtree(self.run_dir.parent / "repos", ignore_errors=True)
        if self.run_dir.parent.parent == PRIVATE_ROOT:  # the directory made for us there
            shutil.rmtree(self.run_dir.parent, ignore_errors=True)
        (self.base_dir / STATE_FILE).unlink(missing_ok=True)

    def patch_config(self, change: dict[str, Any]) -> None:
        """Change the cluster's dynamic configuration (Patroni's `PATCH /config`)."""
        for m in self.members:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.patch(f"{m.api_url}/config", json=change, timeout=5).status_code == 200:
                    return
        raise PatroniError(f"no member took the configuration change {change}")

    def rebuild_as_standby(
        self, of: StandbyOf, clear_keys: Callable[[], None], timeout_s: float = 180.0
    ) -> None:
        """Make this cluster over, as a standby cluster of `of`: it stops, its data and its
        keys in etcd (`clear_keys`) go — they describe a history the other cluster has left
        behind — then every member copies the other cluster afresh (pg_basebackup)."""
        if any(m.alive() for m in self.members):
            self.stop()  # not when all are gone: a stale postmaster.pid may name another pid
        clear_keys()  # once no member runs: a running one would write them again
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
        self.standby_of = of
        self.synchronous_mode = False  # a standby cluster commits nothing of its own
        self.start(timeout_s)

    def rebuild_from_backup(
        self, restore: RestoreFrom, clear_keys: Callable[[], None], timeout_s: float = 600.0
    ) -> list[Path]:
        """Make this cluster over from a backup, under the same name, ports and DSN (an
        in-place point-in-time recovery): every member stops, its keys in etcd go, each
        member's data is moved aside (returned: kept until the operator deletes it), the
        first member restores through Patroni's custom bootstrap and the others copy it."""
        if any(m.alive() for m in self.members):
            self.stop()
        clear_keys()  # once no member runs: a running one would write them again
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        kept = []
        for m in self.members:
            if m.data_dir.exists():
                aside = m.data_dir.with_name(f"{m.data_dir.name}.before-restore-{stamp}")
                m.data_dir.rename(aside)
                kept.append(aside)
        self.restore = restore
        try:
            self.start(timeout_s)
        except PatroniError as exc:
            where = ", ".join(str(k) for k in kept)
            raise PatroniError(f"{exc}; each member's data as it was is kept in {where}") from exc
        finally:
            self.restore = None  # restarted members rejoin; they never bootstrap again
            self.write_configs()
        return kept

    def kill_member(self, m: PatroniMember, sig: int = signal.SIGKILL) -> None:
        """The machine dies: signal Patroni and its PostgreSQL (postmaster) together."""
        pids = [p for p in (m.pid, m.postmaster_pid()) if p]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGKILL:
            if m.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.popen.wait(10)
            wait_until_sync(
                lambda: m.postmaster_pid() is None or _zombie_or_gone(m.postmaster_pid()),
                10,
                f"{m.name}'s PostgreSQL to exit",
            )

    # -- state -----------------------------------------------------------------------------

    def member(self, name: str) -> PatroniMember:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def primary(self) -> PatroniMember | None:
        for m in self.members:
            if m.alive() and m.is_primary(0.5):
                return m
        return None

    def replicas(self) -> list[PatroniMember]:
        primary = self.primary()
        return [m for m in self.members if m is not primary]

    def sync_standby(self, timeout_s: float = 60.0) -> PatroniMember:
        """The member Patroni names synchronous standby (waiting for one)."""

        def named() -> str | None:
            members = (self.topology() or {}).get("members", [])
            return next((x["name"] for x in members if x.get("role") == "sync_standby"), None)

        return self.member(str(wait_until_sync(named, timeout_s, "a synchronous standby")))

    def writable(self) -> bool:
        """A write succeeds on whichever member the DSN reaches (a primary is in office)."""
        import psycopg

        try:
            with psycopg.connect(self.dsn(connect_timeout_s=1), autocommit=True) as conn:
                conn.execute("CREATE TEMP TABLE probe (x int)")  # a write, not just a login
                return True
        except psycopg.Error:
            return False

    def topology(self) -> dict[str, Any] | None:
        """Patroni's `GET /cluster` from any member that answers."""
        for m in self.members:
            if not m.alive():
                continue
            try:
                body: dict[str, Any] = httpx.get(f"{m.api_url}/cluster", timeout=1.0).json()
                return body
            except (httpx.HTTPError, ValueError):
                continue
        return None

    def wait_healthy(self, timeout_s: float = 90.0, expect_members: int | None = None) -> None:
        """Wait until there is a primary and `expect_members - 1` streaming replicas, one
        of them synchronous (when synchronous mode is on). Streaming as each replica's
        Patroni says (`replication_state`, Patroni 3.0.4+): a member woken as a replica
        runs for a moment before it rewinds, and a fault then would cut its rewind short."""
        want = expect_members or len(self.members)
        # Expecting every member: one that was started and exited will not come back.
        started = [m for m in self.members if m.popen is not None]
        watch = started if want == len(self.members) else []

        def healthy() -> bool:
            topo = self.topology()
            if not topo:
                return False
            running = [x for x in topo.get("members", []) if x.get("state") in _UP]
            lead = ("standby_leader",) if self.standby_of else ("leader", "master")
            leaders = [x for x in running if x.get("role") in lead]
            synced = [x for x in running if x.get("role") == "sync_standby"]
            if len(leaders) != 1 or len(running) < want:
                return False
            if self.synchronous_mode and want > 1 and not synced:
                return False
            return all(self._streams(x.get("name")) for x in running if x not in leaders)

        wait_ready(
            healthy,
            timeout_s,
            "the Patroni cluster to be healthy",
            error=PatroniError,
            watch=watch,
            logs=self.members,
            log_lines=8,
            interval_s=0.2,
        )

    def _streams(self, name: Any) -> bool:
        """The member's own Patroni says its WAL receiver streams (or is too old to say:
        `replication_state` came with Patroni 3.0.4, absent there while not streaming)."""
        m = next((m for m in self.members if m.name == name), None)
        state = m.state() if m is not None else None
        if state is None:
            return False
        version = str((state.get("patroni") or {}).get("version", "0"))
        if tuple(int(p) for p in version.split(".")[:3] if p.isdigit()) < (3, 0, 4):
            return True
        return state.get("replication_state") == "streaming"

    def wait_primary(self, timeout_s: float = 60.0, other_than: str | None = None) -> PatroniMember:
        def found() -> PatroniMember | None:
            p = self.primary()
            return p if p is not None and p.name != other_than else None

        primary = wait_until_sync(found, timeout_s, "a Patroni primary", 0.1)
        assert primary is not None
        return primary

    # -- access ----------------------------------------------------------------------------

    @property
    def hosts(self) -> str:
        return ",".join(HOST for _ in self.members)

    @property
    def ports(self) -> str:
        return ",".join(str(m.pg_port) for m in self.members)

    def dsn(self, dbname: str = "postgres", connect_timeout_s: int = 2) -> str:
        """A libpq multi-host DSN that finds whichever member is the writable primary (a
        standby cluster has none: any member that answers, read-only)."""
        attrs = "any" if self.standby_of else "read-write"
        tls = f" sslmode=verify-full sslrootcert={self.tls.cert}" if self.tls else ""
        return (
            f"host={self.hosts} port={self.ports} dbname={dbname} user={SUPERUSER} "
            f"password={self.credentials.superuser} target_session_attrs={attrs} "
            f"connect_timeout={connect_timeout_s}{tls}"
        )

    def create_database(self, name: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)


_UP = ("running", "streaming")


def _zombie_or_gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True
