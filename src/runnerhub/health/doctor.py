"""`runnerhub doctor`'s measurements: each dependency the settings name, asked once, within
`NET_TIMEOUT_S` (all at the same time), and the local files and disks they name. What a
measurement means is `domain.doctor`'s; nothing here decides a threshold.

Nothing secret is ever part of a finding: a target is described by host, port and database
only, and every error text is scrubbed of the secrets the settings hold before it is kept.
"""

from __future__ import annotations

import asyncio
import grp
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aetcd import rpc
from cryptography import x509
from psycopg.conninfo import conninfo_to_dict

from runnerhub.cache import SharedCache
from runnerhub.config import ConfigError, EngineHostSettings, Settings, read_yaml_mapping
from runnerhub.domain import doctor as verdict
from runnerhub.domain.doctor import Finding
from runnerhub.github.client import GitHubClient
from runnerhub.github.errors import AuthError, GitHubError
from runnerhub.ha.etcd import EtcdAccess
from runnerhub.logs import scrub
from runnerhub.store import diagnostics
from runnerhub.store.migrate import available

NET_TIMEOUT_S = 3.0
LOCAL_HOSTS = {"localhost", "::1", socket.gethostname()}
# Keys under which a configuration file holds a secret in clear (see config.py).
SECRET_KEYS = {"dsn", "secrets", "token", "private_key", "password"}
SECRET_KEY_SUFFIX = "_password"


class Scrubber:
    """Removes every secret value the settings hold from a text, then the shapes of
    secrets `logs.scrub` knows (a libpq password, a bearer token, a PEM key)."""

    def __init__(self, settings: Settings) -> None:
        self._secrets = sorted(_secret_values(settings), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._secrets:
            text = text.replace(value, "[redacted]")
        return scrub(text)


def _secret_values(s: Settings) -> Iterator[str]:
    dsn = s.database.dsn.get_secret_value()
    yield dsn
    try:
        password = conninfo_to_dict(dsn).get("password")
    except Exception:  # an unparsable DSN: the whole of it is already listed
        password = None
    if password:
        yield str(password)
    yield from (w.get_secret_value() for w in s.webhook.secrets)
    yield from (t.token.get_secret_value() for t in s.api_tokens)
    for secret in (
        s.github.auth.token,
        s.github.auth.app.private_key if s.github.auth.app else None,
        s.ha.etcd_password,
        s.redis.password,
        s.redis.sentinel_password,
        s.health.patroni_password,
    ):
        if secret is not None and secret.get_secret_value():
            yield secret.get_secret_value()


def _one_line(exc: BaseException, clean: Scrubber) -> str:
    """An error's first line (libpq adds hints on the next ones), secrets removed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return clean(lines[0] if lines else type(exc).__name__)[:240]


def _grpc_reason(exc: BaseException, clean: Scrubber) -> str:
    """gRPC's status and the last words of its details ("UNAVAILABLE: Connection refused"),
    not the chain of addresses it tried."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if not (callable(code) and callable(details)):
        return _one_line(exc, clean)
    name = getattr(code(), "name", str(code()))
    return clean(f"{name}: {str(details() or '').rsplit(': ', 1)[-1]}")[:160]


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without its password: host:port/dbname as user."""
    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return "(database.dsn cannot be parsed)"
    host = str(parts.get("host") or "local socket")
    port = parts.get("port")
    where = f"{host}:{port}" if port else host
    user = parts.get("user")
    return f"{where}/{parts.get('dbname', '')}" + (f" as {user}" if user else "")


# -- PostgreSQL ------------------------------------------------------------------------------


async def postgres(settings: Settings, clean: Scrubber) -> list[Finding]:
    """Connect, then read the server's version, schema, clock and data directory, all
    within one `NET_TIMEOUT_S`."""
    dsn = settings.database.dsn.get_secret_value()
    target = describe_dsn(dsn)
    began = time.monotonic()
    connected_ms: float | None = None
    try:
        async with asyncio.timeout(NET_TIMEOUT_S):
            conn = await diagnostics.connect(dsn, NET_TIMEOUT_S)
            connected_ms = (time.monotonic() - began) * 1000
            async with conn:
                facts = await diagnostics.server_facts(conn)
                before = time.time()
                server_now = await diagnostics.server_clock(conn)
                after = time.time()
    except TimeoutError:
        what = "no answer" if connected_ms is None else "connected, but no answer to queries"
        return [
            Finding(
                "postgres",
                "fail",
                f"{what} from {target} within {NET_TIMEOUT_S:.0f} s: check database.dsn and "
                "that PostgreSQL is up and reachable from this host",
            )
        ]
    except Exception as exc:
        said = f"cannot connect to {target}" if connected_ms is None else f"{target} failed"
        return [
            Finding(
                "postgres",
                "fail",
                f"{said}: {_one_line(exc, clean)}: check database.dsn, that "
                "PostgreSQL is up, and pg_hba.conf",
            )
        ]
    where = f"{facts.host}:{facts.port}/{facts.dbname}"
    return [
        Finding("postgres", "ok", f"{where} answers (connected in {connected_ms:.0f} ms)"),
        verdict.postgres_version(facts.version_num, facts.version),
        verdict.schema(facts.schema_version, max(m.version for m in available())),
        verdict.clock_skew(server_now.timestamp() - (before + after) / 2, (after - before) / 2),
        _wal_disk(facts),
    ]


def _is_local(host: str) -> bool:
    return host.startswith("/") or host.startswith("127.") or host in LOCAL_HOSTS


def _wal_disk(facts: diagnostics.ServerFacts) -> Finding:
    """Free space where PostgreSQL writes WAL, when it runs on this host and we may look."""
    if facts.data_directory is None:
        return Finding("postgres WAL disk", "skip", "the role may not read data_directory")
    if not _is_local(facts.host):
        return Finding("postgres WAL disk", "skip", f"PostgreSQL runs on {facts.host}")
    wal = Path(facts.data_directory) / "pg_wal"
    try:
        st = os.statvfs(wal)
    except PermissionError:
        return Finding(
            "postgres WAL disk",
            "skip",
            f"{wal} is not visible to this user (run doctor as root or postgres)",
        )
    except OSError as exc:
        return Finding("postgres WAL disk", "skip", f"{wal}: {exc.strerror}")
    return verdict.disk_headroom(
        "postgres WAL disk", str(wal), st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    )


# -- etcd, Redis, GitHub ---------------------------------------------------------------------


async def etcd(settings: Settings, clean: Scrubber) -> list[Finding]:
    ha = settings.ha
    if not ha.enabled:
        return [Finding("etcd", "skip", "no ha.etcd_endpoints: a single node, always leader")]
    try:
        access = EtcdAccess.of(ha)
    except ConfigError as exc:
        return [Finding("etcd", "fail", str(exc))]

    async def version(endpoint: str) -> str:
        host, _, port = endpoint.rpartition(":")
        client = access.client(host, int(port), NET_TIMEOUT_S)
        try:
            await client.connect()
            resp = await client.maintenancestub.Status(
                rpc.StatusRequest(), timeout=NET_TIMEOUT_S, metadata=client.metadata
            )
            return str(resp.version)
        finally:
            await client.close()

    async def ask(endpoint: str) -> tuple[str, str | None, str | None]:
        try:
            async with asyncio.timeout(NET_TIMEOUT_S):
                return endpoint, await version(endpoint), None
        except TimeoutError:
            return endpoint, None, f"no answer within {NET_TIMEOUT_S:.0f} s"
        except Exception as exc:  # grpc's errors, refused connections, bad credentials
            return endpoint, None, _grpc_reason(exc, clean)

    results = await asyncio.gather(*(ask(e) for e in ha.etcd_endpoints))
    answered = {e: v for e, v, _ in results if v is not None}
    failed = {e: why or "?" for e, v, why in results if v is None}
    return [verdict.etcd_members(answered, failed)]


async def redis(settings: Settings) -> list[Finding]:
    """Redis through its Sentinels. Never a fail: it is a cache, and a node works without it
    (I7), only slower."""
    r = settings.redis
    if not r.enabled:
        return [Finding("redis", "skip", "no redis.sentinels: no shared cache")]
    cache = SharedCache.from_settings(
        r, NET_TIMEOUT_S, op_timeout_s=NET_TIMEOUT_S, log_interval_s=3600
    )
    try:
        pong, sentinels = await asyncio.gather(cache.ping(), cache.sentinels())
        status = cache.status()
    finally:
        await cache.close()
    up = sum(1 for s in sentinels if s["ok"])
    said = f"{up} of {len(sentinels)} Sentinels answer"
    if not pong:
        why = status["last_error"] or "no answer"
        return [
            Finding(
                "redis",
                "warn",
                f"no primary for {r.master_name!r} ({why}; {said}): check redis.*; nodes run "
                "on without the cache, slower",
            )
        ]
    if up * 2 <= len(sentinels):
        return [Finding("redis", "warn", f"primary answers, but {said}: no failover possible")]
    return [Finding("redis", "ok", f"primary {status['primary']} answers; {said}")]


async def github(settings: Settings, clean: Scrubber) -> list[Finding]:
    quick = settings.github.model_copy(update={"timeout_s": NET_TIMEOUT_S})
    url = settings.github.api_url
    try:
        client = GitHubClient.from_settings(quick)
    except ConfigError as exc:
        return [Finding("github", "fail", str(exc))]
    try:
        async with asyncio.timeout(NET_TIMEOUT_S):
            windows = await client.get_rate_limit()
    except TimeoutError:
        return [Finding("github", "fail", f"no answer from {url} within {NET_TIMEOUT_S:.0f} s")]
    except AuthError as exc:
        return [
            Finding(
                "github",
                "fail",
                f"{url} refused the credentials ({_one_line(exc, clean)}): check github.auth",
            )
        ]
    except (GitHubError, ConfigError) as exc:
        return [
            Finding(
                "github",
                "fail",
                f"{url}: {_one_line(exc, clean)}: check github.api_url and this host's way "
                "out (proxy, firewall)",
            )
        ]
    finally:
        await client.aclose()
    core = windows.get("core")
    left = f"; {core.remaining} of {core.limit} core requests left" if core else ""
    if core and core.limit and core.remaining < core.limit * 0.1:
        return [
            Finding("github", "warn", f"{url} answers, but the rate limit is nearly used up{left}")
        ]
    return [Finding("github", "ok", f"{url} answers{left}")]


# -- files and disks -------------------------------------------------------------------------


def _engines(s: Settings) -> Iterator[tuple[str, EngineHostSettings]]:
    """Each container engine the pools name, with the field it is configured under."""
    for i, pool in enumerate(s.pools):
        if pool.container is None:
            continue
        hosts = bool(pool.container.hosts)
        for j, engine in enumerate(pool.container.engines()):
            yield f"pools[{i}].container" + (f".hosts[{j}]" if hosts else ""), engine


def certificate_files(s: Settings) -> list[tuple[str, Path]]:
    """(field, path) of every certificate (or CA bundle) file the settings name."""
    found = [
        ("ha.etcd_ca_file", s.ha.etcd_ca_file),
        ("ha.etcd_cert_file", s.ha.etcd_cert_file),
        ("redis.ca_file", s.redis.ca_file),
        ("redis.cert_file", s.redis.cert_file),
    ]
    for where, engine in _engines(s):
        found += [(f"{where}.tls_ca", engine.tls_ca), (f"{where}.tls_cert", engine.tls_cert)]
    return [(name, path) for name, path in found if path is not None]


def secret_files(s: Settings) -> list[tuple[str, Path]]:
    """(field, path) of every file the settings name that holds a key or a password."""
    app = s.github.auth.app
    found = [
        ("github.auth.app.private_key_file", app.private_key_file if app else None),
        ("ha.etcd_key_file", s.ha.etcd_key_file),
        ("redis.key_file", s.redis.key_file),
        ("backup.pgpass_file", s.backup.pgpass_file),
    ]
    for i, repo in enumerate(s.backup.repos):
        found.append((f"backup.repos[{i}].cipher_pass_file", repo.cipher_pass_file))
    for where, engine in _engines(s):
        found += [
            (f"{where}.tls_key", engine.tls_key),
            (f"{where}.ssh_identity", engine.ssh_identity),
        ]
    return [(name, path) for name, path in found if path is not None]


def certificate(name: str, path: Path, now: datetime) -> Finding:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        return Finding(name, "fail", f"cannot read {path}: {exc.strerror}")
    except ValueError:
        return Finding(name, "fail", f"{path} holds no PEM certificate")
    return verdict.certificate(name, str(path), min(c.not_valid_after_utc for c in certs), now)


def secret_file(name: str, path: Path) -> Finding:
    try:
        st = path.stat()
    except OSError as exc:
        return Finding(name, "fail", f"cannot read {path}: {exc.strerror}")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return verdict.secret_file(name, str(path), st.st_mode, group)


def holds_secrets(data: Any) -> bool:
    """Whether a configuration file's mapping has a secret written into it."""
    if isinstance(data, dict):
        for key, value in data.items():
            secret_key = key in SECRET_KEYS or str(key).endswith(SECRET_KEY_SUFFIX)
            if (secret_key and value) or holds_secrets(value):
                return True
    if isinstance(data, list):
        return any(holds_secrets(v) for v in data)
    return False


def config_file(path: Path) -> Finding:
    name = "config file"
    try:
        inline = holds_secrets(read_yaml_mapping(path))
    except ConfigError as exc:
        return Finding(name, "fail", str(exc))
    if not inline:
        return Finding(name, "ok", f"{path} holds no secret (they come from the environment)")
    return secret_file(name, path)


def spool_disk(s: Settings) -> Finding:
    if not s.spool.enabled:
        return Finding("spool disk", "skip", "spool.enabled is false")
    spool = s.spool.dir or s.node.state_dir / "spool"
    # Before the first start it may not exist yet: the file system it will be on.
    where = next((p for p in (spool, *spool.parents) if p.exists()), Path("/"))
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return Finding("spool disk", "fail", f"{where}: {exc.strerror}")
    return verdict.disk_headroom(
        "spool disk", str(spool), st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    )


def local_checks(settings: Settings, config_path: Path, now: datetime) -> list[Finding]:
    found = [config_file(config_path)]
    found += [secret_file(name, path) for name, path in secret_files(settings)]
    found += [certificate(name, path, now) for name, path in certificate_files(settings)]
    found.append(spool_disk(settings))
    return found


async def diagnose(settings: Settings, config_path: Path) -> list[Finding]:
    """Every finding, in the order an operator fixes things: the database first."""
    clean = Scrubber(settings)
    remote = await asyncio.gather(
        postgres(settings, clean), etcd(settings, clean), redis(settings), github(settings, clean)
    )
    loaded = Finding("config", "ok", f"{config_path} loads")
    return (
        [loaded]
        + [f for group in remote for f in group]
        + local_checks(settings, config_path, datetime.now(UTC))
    )
