"""Redis and Sentinel configuration files: the same functions write the local cluster's
(`runnerhub up --ha`, loopback, passwords in its 0600 files) and a production host's
(`runnerhub render`: no password in the file, an `include` of a secrets file instead), so
the two cannot drift.

Redis only holds what RunnerHub may lose (caches, shared budgets), so nothing is persisted.
Redis and Sentinel rewrite their own files (`CONFIG REWRITE` on a role change, Sentinel as
it learns): a rewrite copies what an included file set into the main file, so a production
file must stay as private as its secrets file once Redis has run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
Address = tuple[str, int]
REDIS_HEADER = "# Written by runnerhub.render.redis; Redis rewrites it when its role changes."
SENTINEL_HEADER = "# Written by runnerhub.render.redis; Sentinel rewrites it as it learns."


def _quote(value: str) -> str:
    """A config-file string argument (Redis accepts C-style escapes inside double quotes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ServerTls:
    """A Redis process's TLS: its certificate and key, the CA its peers' are checked by.
    Clients need no certificate (`tls-auth-clients no`): they show a password instead."""

    cert: Path
    key: Path
    ca: Path

    def lines(self, port: int) -> list[str]:
        return [
            "port 0",  # TLS only
            f"tls-port {port}",
            f"tls-cert-file {_quote(str(self.cert))}",
            f"tls-key-file {_quote(str(self.key))}",
            f"tls-ca-cert-file {_quote(str(self.ca))}",
            "tls-auth-clients no",
            "tls-replication yes",  # replicas and Sentinels reach their peers over TLS too
        ]


# What RunnerHub's own ACL user may do: its keys and channels only (`runnerhub:*`), no
# dangerous command (CONFIG, FLUSHALL, KEYS, DEBUG...), but INFO (it reads the replication)
# and ROLE (redis-py checks a primary with it).
NODE_ACL = "~runnerhub:* &runnerhub:* +@all -@dangerous +info +role"


def _secret_lines(password: str | None, include: Path | None, lines: Sequence[str]) -> list[str]:
    """`lines` (each formatted with the quoted password) or, with no password, an include
    of the file that holds them: exactly one of the two."""
    if (password is None) == (include is None):
        raise ValueError("give exactly one of a password and a secrets file to include")
    if include is not None:
        return [f"include {_quote(str(include))}"]
    if not password:
        raise ValueError("the password is empty")
    return [line.format(pw=_quote(password)) for line in lines]


def redis_secret_lines(password: str, users: Mapping[str, str] | None = None) -> list[str]:
    """What a production data node's secrets file holds (documentation and tests)."""
    pw = _quote(password)
    return [
        f"requirepass {pw}",
        f"masterauth {pw}",
        *(f"user {n} on >{s} {NODE_ACL}" for n, s in (users or {}).items()),
    ]


def sentinel_secret_lines(password: str, master_name: str) -> list[str]:
    """What a production Sentinel's secrets file holds (documentation and tests)."""
    pw = _quote(password)
    return [
        f"requirepass {pw}",
        f"sentinel sentinel-pass {pw}",
        f"sentinel auth-pass {master_name} {pw}",
    ]


def render_redis_config(
    port: int,
    password: str | None,
    data_dir: Path,
    *,
    replica_of: Address | None = None,
    bind: str = HOST,
    maxmemory: str = "64mb",
    tls: ServerTls | None = None,
    users: Mapping[str, str] | None = None,
    secrets_include: Path | None = None,
    header: str = REDIS_HEADER,
) -> str:
    """A Redis 7 data node: password on clients and on its own replication (in the file,
    or with `password` None in `secrets_include`: `redis_secret_lines`); with `tls`, TLS
    only; `users`: ACL users (name: password) with `NODE_ACL`."""
    if password == "":
        raise ValueError("a Redis node needs a password")
    listen = tls.lines(port) if tls else [f"port {port}"]
    lines = [
        header,
        f"bind {bind}",
        *listen,
        "protected-mode yes",
        "daemonize no",
        'logfile ""',  # stdout: the local cluster's log file, systemd's journal
        f"dir {_quote(str(data_dir))}",
        "dbfilename dump.rdb",
        # Nothing here must survive: no snapshots, no append-only file.
        'save ""',
        "appendonly no",
        *_secret_lines(password, secrets_include, ["requirepass {pw}", "masterauth {pw}"]),
        "replica-read-only yes",
        # A full sync streams at once instead of waiting 5 s for more replicas to join it.
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        # Every key we write has a TTL; when full, evict among those rather than refuse writes.
        f"maxmemory {maxmemory}",
        "maxmemory-policy volatile-lru",
    ]
    for name, secret in (users or {}).items():
        if not name.isidentifier() or not secret or any(c.isspace() for c in secret):
            raise ValueError(f"invalid ACL user {name!r} or password")
        lines.append(f"user {name} on >{secret} {NODE_ACL}")
    if replica_of is not None:
        lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
    return "\n".join(lines) + "\n"


def render_sentinel_config(
    port: int,
    master_name: str,
    master: Address,
    password: str | None,
    data_dir: Path,
    *,
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 10_000,
    parallel_syncs: int = 1,
    bind: str = HOST,
    tls: ServerTls | None = None,
    secrets_include: Path | None = None,
    resolve_hostnames: bool = False,
    header: str = SENTINEL_HEADER,
) -> str:
    """A Sentinel watching `master`: the same password for clients, its peers and the data
    nodes (in the file, or with `password` None in `secrets_include`, included after the
    `monitor` line its `auth-pass` names: `sentinel_secret_lines`); with `tls`, TLS only."""
    if password == "":
        raise ValueError("a Sentinel needs a password")
    if quorum < 1:
        raise ValueError("the quorum must be at least 1")
    if not master_name or any(c.isspace() for c in master_name):
        raise ValueError(f"invalid master name {master_name!r}")
    hostnames = "yes" if resolve_hostnames else "no"
    secret = _secret_lines(password, secrets_include, ["requirepass {pw}"])
    return (
        "\n".join(
            [
                header,
                f"bind {bind}",
                *(tls.lines(port) if tls else [f"port {port}"]),
                "protected-mode yes",
                "daemonize no",
                'logfile ""',
                f"dir {_quote(str(data_dir))}",
                *(secret if password is not None else []),
                # Sentinels talk to each other with the password they require themselves.
                *([f"sentinel sentinel-pass {_quote(password)}"] if password is not None else []),
                f"sentinel resolve-hostnames {hostnames}",
                f"sentinel announce-hostnames {hostnames}",
                f"sentinel monitor {master_name} {master[0]} {master[1]} {quorum}",
                *(
                    [f"sentinel auth-pass {master_name} {_quote(password)}"]
                    if password is not None
                    else []
                ),
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
                f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
                f"sentinel parallel-syncs {master_name} {parallel_syncs}",
                # requirepass, sentinel-pass and the master's auth-pass: after `monitor`.
                *(secret if password is None else []),
            ]
        )
        + "\n"
    )
