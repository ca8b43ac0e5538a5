"""Patroni's configuration (and so PostgreSQL's: its settings live in Patroni's file and in
the DCS section Patroni writes to etcd at bootstrap), for one member: the same function
writes `runnerhub up --ha`'s members on loopback and a production host's
`/etc/patroni/patroni.yml`, so the two cannot drift.

Timing (see docs/ha.md): Patroni refuses a `ttl` under 20 s, and needs
`loop_wait + 2 * retry_timeout <= ttl` so that a primary that cannot reach etcd demotes
itself before its leader key can expire and a replica be promoted. A dead primary's key
expires `ttl` after its last renewal, so a failover takes about `ttl`; a short `loop_wait`
makes the renewal (and so the expiry) recent, and replicas watch the key, so they act as
soon as it expires.

Passwords: the local cluster writes them into its (0600) files; production passes no
`Credentials`, and Patroni takes them from its environment (PATRONI_SUPERUSER_PASSWORD,
PATRONI_REPLICATION_PASSWORD, PATRONI_REWIND_PASSWORD, PATRONI_ETCD3_PASSWORD,
PATRONI_RESTAPI_PASSWORD), which it merges over the file.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SUPERUSER = "runnerhub"
REPLICATION_USER = "replicator"
REWIND_USER = "rewinder"
# What Patroni reads from its environment for each secret the file leaves out.
PASSWORD_ENV = {
    "superuser": "PATRONI_SUPERUSER_PASSWORD",
    "replication": "PATRONI_REPLICATION_PASSWORD",
    "rewind": "PATRONI_REWIND_PASSWORD",
}


@dataclass(frozen=True)
class Timing:
    """Patroni's DCS timing; `validate` holds Patroni's own rules."""

    ttl: int = 20
    loop_wait: int = 2
    retry_timeout: int = 9

    def validate(self) -> None:
        if self.ttl < 20:
            raise ValueError(f"Patroni's ttl must be at least 20 s, not {self.ttl}")
        if self.loop_wait < 1 or self.retry_timeout < 3:
            raise ValueError("Patroni needs loop_wait >= 1 and retry_timeout >= 3")
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"loop_wait + 2 * retry_timeout ({self.loop_wait} + 2 * {self.retry_timeout}) "
                f"must not exceed ttl ({self.ttl}): a primary cut off from etcd must demote "
                "before its key can expire"
            )


@dataclass(frozen=True)
class StandbyOf:
    """Another cluster this one follows as a Patroni standby cluster: it streams from
    `host:port` (the other region's primary endpoint) and, when it cannot, replays the
    archive through `restore_command` (`archive-get` from a repository both regions read)."""

    host: str
    port: int
    restore_command: str | None = None

    def dcs(self) -> dict[str, Any]:
        section: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "create_replica_methods": ["basebackup"],
        }
        if self.restore_command:
            section["restore_command"] = self.restore_command
        return section


@dataclass(frozen=True)
class Credentials:
    superuser: str
    replication: str
    rewind: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls(*(secrets.token_urlsafe(18) for _ in range(3)))


def loopback_hba(host: str = HOST) -> list[str]:
    """pg_hba for members that all live on `host` (the local cluster)."""
    return [
        "local all all scram-sha-256",
        f"host replication replicator {host}/32 scram-sha-256",
        f"host all all {host}/32 scram-sha-256",
    ]


@dataclass(frozen=True)
class PostgresTls:
    """PostgreSQL over TLS: this member's certificate and key (readable by its service user
    alone) and the CA that signed every member's. Every TCP connection must then be TLS
    (`hostssl`), and Patroni's own (replication, pg_rewind, its checks) verify the server's
    certificate against the CA (`verify-ca`: behind HAProxy or a virtual IP the server's
    name is not the one dialled, so the chain is checked, not the name)."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def parameters(self) -> dict[str, Any]:
        return {
            "ssl": "on",
            "ssl_cert_file": str(self.cert_file),
            "ssl_key_file": str(self.key_file),
            "ssl_min_protocol_version": "TLSv1.2",
        }

    def client(self) -> dict[str, str]:
        return {"sslmode": "verify-ca", "sslrootcert": str(self.ca_file)}


def tls_only(hba: Sequence[str]) -> list[str]:
    """The same lines, with every TCP one (`host`) for TLS connections only (`hostssl`)."""
    return [f"hostssl {line[len('host ') :]}" if line.startswith("host ") else line for line in hba]


def _authentication(
    credentials: Credentials | None, tls: PostgresTls | None = None
) -> dict[str, Any]:
    users = {"superuser": SUPERUSER, "replication": REPLICATION_USER, "rewind": REWIND_USER}
    out: dict[str, Any] = {}
    for role, username in users.items():
        out[role] = {"username": username, **(tls.client() if tls else {})}
        if credentials is not None:
            out[role]["password"] = getattr(credentials, role)
    return out


# long: one template, read top to bottom like the file it writes
def render_config(
    *,
    scope: str,
    namespace: str,
    name: str,
    api_port: int,
    pg_port: int,
    etcd_hosts: Sequence[str],
    data_dir: Path,
    run_dir: Path,
    bin_dir: Path,
    credentials: Credentials | None,
    timing: Timing,
    synchronous_mode: bool = True,
    parameters: Mapping[str, Any] | None = None,
    archive: tuple[str, str] | None = None,
    restore: tuple[str, str] | None = None,
    standby_of: StandbyOf | None = None,
    etcd: Mapping[str, Any] | None = None,
    host: str = HOST,
    pg_hba: Sequence[str] | None = None,
    pgpass: Path | None = None,
    log_dir: Path | None = None,
    local_parameters: Mapping[str, Any] | None = None,
    tls: PostgresTls | None = None,
) -> dict[str, Any]:
    """One member's Patroni configuration (pure: the tests check it without Patroni).
    `host` is where its REST API and PostgreSQL listen and are reached; `run_dir` holds
    PostgreSQL's Unix socket (and, unless given, `pgpass` and `log_dir`).
    `parameters` override or add PostgreSQL settings of the cluster-wide (DCS) section,
    `local_parameters` this member's own (memory: they may differ by host);
    `credentials` None leaves the passwords to Patroni's environment;
    `archive` is this member's (archive_command, restore_command): WAL goes to pgBackRest;
    `restore` (a pgBackRest restore command, its restore_command) bootstraps the cluster
    from a backup instead of initdb (point-in-time recovery: docs/dr.md); `standby_of`
    makes it a standby cluster of another (another region: docs/dr.md); `tls` makes every
    TCP connection TLS (`PostgresTls`)."""
    timing.validate()
    hba = list(pg_hba) if pg_hba is not None else loopback_hba(host)
    archiving: dict[str, Any] = {"archive_mode": "on", "archive_timeout": "60s"} if archive else {}
    config: dict[str, Any] = {
        "scope": scope,
        "namespace": namespace,
        "name": name,
        "log": {"level": "INFO"},
        "restapi": {"listen": f"{host}:{api_port}", "connect_address": f"{host}:{api_port}"},
        # `etcd`: TLS and a user, when etcd has them (EtcdClientAccess.patroni).
        "etcd3": {"hosts": list(etcd_hosts), **(etcd or {})},
        "bootstrap": {
            "dcs": {
                "ttl": timing.ttl,
                "loop_wait": timing.loop_wait,
                "retry_timeout": timing.retry_timeout,
                # Never promote a replica that misses more than 1 MiB: with synchronous
                # mode the synchronous one misses nothing acknowledged.
                "maximum_lag_on_failover": 1024 * 1024,
                "synchronous_mode": synchronous_mode,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_keep_size": "256MB",
                        # A slot of a replica that is gone must not fill the primary's
                        # disk: past this much WAL it is given up, and the replica, which
                        # can no longer stream, is reinitialised (docs/operations.md).
                        "max_slot_wal_keep_size": "2GB",
                        "max_connections": 200,
                        **archiving,
                        **(parameters or {}),
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{host}:{pg_port}",
            "connect_address": f"{host}:{pg_port}",
            "data_dir": str(data_dir),
            "bin_dir": str(bin_dir),
            "pgpass": str(pgpass or run_dir / f"{name}.pgpass"),
            # A new replica (or standby cluster) asks for a checkpoint at once rather than
            # wait for the next one (up to checkpoint_timeout, minutes).
            "basebackup": [{"checkpoint": "fast"}],
            # The whole file, written at every start: initdb's own lines trust every local
            # and loopback connection, and `bootstrap.pg_hba` only adds lines after them.
            # Anyone on this host (a runner, say) would be let in without a password.
            "pg_hba": tls_only(hba) if tls else hba,
            "authentication": _authentication(credentials, tls),
            "parameters": {
                "unix_socket_directories": str(run_dir),
                "password_encryption": "scram-sha-256",
                "shared_buffers": "128MB",
                "logging_collector": "on",
                "log_directory": str(log_dir or run_dir / f"{name}-log"),
                "log_min_messages": "warning",
                **(tls.parameters() if tls else {}),
                **(local_parameters or {}),
            },
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }
    if archive is not None:
        config["postgresql"]["parameters"]["archive_command"] = archive[0]
        config["postgresql"]["recovery_conf"] = {"restore_command": archive[1]}
    if standby_of is not None:
        config["bootstrap"]["dcs"]["standby_cluster"] = standby_of.dcs()
        config["bootstrap"]["dcs"]["synchronous_mode"] = False
    if restore is not None:
        # pgBackRest writes the recovery target into postgresql.auto.conf: keep it. The
        # roles and their passwords come with the backup.
        config["bootstrap"]["method"] = "pgbackrest"
        config["bootstrap"]["pgbackrest"] = {
            "command": restore[0],
            "no_params": True,
            "keep_existing_recovery_conf": True,
            "recovery_conf": {"restore_command": restore[1], "recovery_target_action": "promote"},
        }
    return config
