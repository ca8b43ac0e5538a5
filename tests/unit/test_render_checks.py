"""Every file `runnerhub render` writes for a host, checked by its own program: HAProxy
(`haproxy -c`), keepalived (`keepalived -t`), Patroni (`patroni --validate-config`), etcd
(started on the rendered file, answering /health; every key one of etcd's flags), Redis and
Sentinel (started on the rendered files, answering PING with the password from the
included secrets file), pgBackRest (PostgreSQL's own archive_command run on the rendered
file: every option parsed and accepted, it fails only at the missing database). The
topology puts every host on its own loopback address (127.0.0.x) with free ports, so the
files are exactly what render writes, run here. And no secret reaches a rendered file."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from runnerhub.dev.cluster.haproxy import HAProxyError, check_config
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.dev.waiting import wait_until_sync
from runnerhub.render.alerting import SHIPPED_RULES
from runnerhub.render.files import all_files
from runnerhub.render.redis import redis_secret_lines, sentinel_secret_lines
from runnerhub.render.topology import Topology
from tests.unit.test_alerting_config import tool

A_HOSTS = {"h1": "127.0.0.11", "h2": "127.0.0.12", "h3": "127.0.0.13"}
B_HOST = ("h4", "127.0.0.21")
REDIS_PASSWORD = "redis-secret-Zq8"
SENTINEL_PASSWORD = "sentinel-secret-Xw3"
CIPHER_PASS = "cipher-secret-Vb7"
PATRONI_ENV = {
    "PATRONI_SUPERUSER_PASSWORD": "su-secret-Kp2",
    "PATRONI_REPLICATION_PASSWORD": "rep-secret-Lm5",
    "PATRONI_REWIND_PASSWORD": "rew-secret-Nd4",
}
SECRETS = [REDIS_PASSWORD, SENTINEL_PASSWORD, CIPHER_PASS, *PATRONI_ENV.values()]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _interface() -> str:
    """keepalived -t wants the interface to exist and not be loopback."""
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not names:
        pytest.skip("this machine has no network interface but lo")
    return names[0]


def _free(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (each a loopback address)."""
    while True:
        port = free_port()
        try:
            for h in hosts:
                with socket.socket() as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the rendered directory, the secrets directory) of a loopback topology."""
    tmp = tmp_path_factory.mktemp("render")
    secrets = tmp / "secrets"
    (secrets / "pgbackrest").mkdir(parents=True)
    (secrets / "redis.conf").write_text("\n".join(redis_secret_lines(REDIS_PASSWORD)) + "\n")
    (secrets / "sentinel.conf").write_text(
        "\n".join(sentinel_secret_lines(SENTINEL_PASSWORD, "runnerhub")) + "\n"
    )
    (secrets / "pgbackrest" / "secrets.conf").write_text(
        f"[global]\nrepo2-cipher-pass={CIPHER_PASS}\n"
    )
    (secrets / "patroni.env").write_text("".join(f"{k}={v}\n" for k, v in PATRONI_ENV.items()))
    pem = LocalCA(tmp / "ca").issue("runnerhub").bundle(tmp / "runnerhub.pem")
    everywhere = [*A_HOSTS.values(), B_HOST[1]]
    ports = {
        k: _free(everywhere)
        for k in ("etcd_client", "etcd_peer", "postgres", "patroni", "redis", "sentinel")
    } | {k: free_port() for k in ("haproxy_http", "haproxy_https", "haproxy_stats")}
    all_roles = ["node", "postgres", "etcd", "redis", "haproxy", "prometheus", "alertmanager"]
    topology: dict[str, Any] = {
        "name": "checks",
        "regions": [
            {
                "name": "a",
                "hosts": [
                    {"name": n, "address": a, "roles": all_roles} for n, a in A_HOSTS.items()
                ],
                "load_balancer": {
                    "virtual_ip": "10.213.7.10/24",
                    "virtual_router_id": 51,
                    "interface": _interface(),
                },
            },
            {
                "name": "b",
                "standby": True,
                "hosts": [
                    {"name": B_HOST[0], "address": B_HOST[1], "roles": ["node", "postgres", "etcd"]}
                ],
            },
        ],
        "ports": ports,
        "etcd": {"data_dir": str(tmp / "etcd")},
        "postgres": {
            "data_dir": str(tmp / "pg"),
            "bin_dir": str(PG_BIN),
            "socket_dir": str(tmp),
            "log_dir": str(tmp / "pglog"),
            "pgpass": str(tmp / "pgpass"),
        },
        "pgbackrest": {
            "repos": [
                {"name": "a", "path": str(tmp / "repo1")},
                {"name": "b", "path": str(tmp / "repo2"), "encrypted": True},
            ],
            "log_path": str(tmp / "pgbrlog"),
            "lock_path": str(tmp / "pgbrlock"),
        },
        "redis": {"data_dir": str(tmp / "redis")},
        "tls": {"haproxy_pem": str(pem)},
        "secrets": {
            "patroni_env": str(secrets / "patroni.env"),
            "redis": str(secrets / "redis.conf"),
            "sentinel": str(secrets / "sentinel.conf"),
            "pgbackrest": str(secrets / "pgbackrest" / "secrets.conf"),
        },
    }
    out = tmp / "out"
    for rel, text in all_files(Topology(**topology), SHIPPED_RULES.read_text()).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    for d in ("etcd", "redis", "pgbrlog", "pgbrlock"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    return out, secrets


def test_no_secret_reaches_a_rendered_file_only_the_paths_of_their_files(
    rendered: tuple[Path, Path],
) -> None:
    out, secrets = rendered
    texts = {p: p.read_text() for p in out.rglob("*") if p.is_file()}
    assert len(texts) > 20
    for path, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{path} holds a secret"
    h1 = out / "h1"
    assert f'include "{secrets / "redis.conf"}"' in (h1 / "redis" / "redis.conf").read_text()
    sentinel = (h1 / "redis" / "sentinel.conf").read_text()
    assert f'include "{secrets / "sentinel.conf"}"' in sentinel
    assert str(secrets / "patroni.env") in (h1 / "patroni" / "patroni.yml").read_text()
    conf = (h1 / "pgbackrest" / "pgbackrest.conf").read_text()
    assert str(secrets / "pgbackrest" / "secrets.conf") in conf
    assert "repo2-cipher-type=aes-256-cbc" in conf
    assert not re.search(r"^repo\d-cipher-pass", conf, re.M)


def test_haproxy_accepts_every_rendered_configuration(rendered: tuple[Path, Path]) -> None:
    out, _ = rendered
    for host in A_HOSTS:
        cfg = out / host / "haproxy" / "haproxy.cfg"
        assert "listen postgres_primary" in cfg.read_text()
        check_config(cfg)
    broken = out / "broken.cfg"
    broken.write_text(cfg.read_text().replace("option redispatch 1", "option redispatchh 1"))
    with pytest.raises(HAProxyError, match="redispatchh"):
        check_config(broken)


def _keepalived_test(conf: Path) -> subprocess.CompletedProcess[str]:
    """`keepalived -t`: config test mode, exit 0 only if it found no error."""
    binary = shutil.which("keepalived") or "/usr/sbin/keepalived"
    return subprocess.run(
        [binary, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )


def test_keepalived_accepts_every_rendered_configuration(rendered: tuple[Path, Path]) -> None:
    out, _ = rendered
    for host in A_HOSTS:
        conf = out / host / "keepalived" / "keepalived.conf"
        done = _keepalived_test(conf)
        assert done.returncode == 0, done.stdout + done.stderr
    bad = out / "bad-keepalived.conf"
    bad.write_text(conf.read_text().replace("priority 180", "priority 300"))
    assert _keepalived_test(bad).returncode != 0


@contextmanager
def _listening(addresses: list[tuple[str, int]]) -> Iterator[None]:
    """Something that accepts on each address: Patroni's validator wants its DCS reachable."""
    with ExitStack() as stack:
        for address in addresses:
            s = stack.enter_context(socket.socket())
            s.bind(address)
            s.listen()
        yield


def _validate_patroni(conf: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **PATRONI_ENV}
    return subprocess.run(
        ["/usr/bin/patroni", "--validate-config", str(conf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_patroni_accepts_every_rendered_configuration(rendered: tuple[Path, Path]) -> None:
    if not PG_BIN.exists() or not Path("/usr/bin/patroni").exists():
        pytest.fail("Debian's patroni and postgresql-15 are missing: `make deps` installs them")
    out, _ = rendered
    files = [out / h / "patroni" / "patroni.yml" for h in [*A_HOSTS, B_HOST[0]]]
    port = yaml.safe_load(files[0].read_text())["etcd3"]["hosts"][0].rsplit(":", 1)[1]
    etcd = [(a, int(port)) for a in [*A_HOSTS.values(), B_HOST[1]]]
    with _listening(etcd):
        for conf in files:
            done = _validate_patroni(conf)
            assert done.returncode == 0, f"{conf}:\n{done.stdout}{done.stderr}"
        bad = conf.with_name("bad.yml")
        bad.write_text(conf.read_text().replace("loop_wait: 2", "loop_wait: two"))
        done = _validate_patroni(bad)
        assert done.returncode != 0 and "loop_wait" in done.stdout + done.stderr


def _redis(host: str, port: int, password: str) -> redis.Redis:
    # No retries of its own (redis-py backs off for seconds): _answers polls.
    return redis.Redis(host, port, password=password, socket_timeout=1, retry=Retry(NoBackoff(), 0))


def _etcd_flags() -> set[str]:
    helptext = subprocess.run(
        [tool("etcd"), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    return set(re.findall(r"^\s+--([a-z0-9-]+)", helptext, re.M))


@contextmanager
def _running(argv: list[str], cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _answers(proc: subprocess.Popen[bytes], probe: Any, what: str) -> None:
    def ok() -> bool:
        if proc.poll() is not None:
            output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"{what} exited {proc.returncode}:\n{output[-3000:]}")
        try:
            return bool(probe())
        except Exception:
            return False

    wait_until_sync(ok, 15, what, 0.05)


def test_etcd_runs_on_a_rendered_file_whose_keys_are_all_etcd_flags(
    rendered: tuple[Path, Path],
) -> None:
    out, _ = rendered
    flags = _etcd_flags()
    assert {"name", "pre-vote", "cert-file", "peer-client-cert-auth"} <= flags  # read right
    nested = {"client-transport-security": "", "peer-transport-security": "peer-"}
    for host in [*A_HOSTS, B_HOST[0]]:
        config = yaml.safe_load((out / host / "etcd" / "etcd.conf.yml").read_text())
        keys = {k for k in config if k not in nested}
        keys |= {p + k for section, p in nested.items() for k in config.get(section, {})}
        assert keys <= flags, f"{host}: not etcd settings: {sorted(keys - flags)}"
    # The standby region's etcd is a cluster of one: it runs by itself on its file.
    conf = out / B_HOST[0] / "etcd" / "etcd.conf.yml"
    url = yaml.safe_load(conf.read_text())["advertise-client-urls"]
    with _running([tool("etcd"), "--config-file", str(conf)]) as proc:
        _answers(
            proc,
            lambda: httpx.get(f"{url}/health", timeout=1).json()["health"] == "true",
            "etcd on the rendered file",
        )


def test_redis_and_sentinel_run_on_the_rendered_files_with_the_included_secrets(
    rendered: tuple[Path, Path],
) -> None:
    out, _ = rendered
    h1 = out / "h1" / "redis"
    port = int(re.search(r"^port (\d+)", (h1 / "redis.conf").read_text(), re.M).group(1))  # type: ignore[union-attr]
    text = (h1 / "sentinel.conf").read_text()
    sport = int(re.search(r"^port (\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    host = A_HOSTS["h1"]
    with _running([tool("redis-server"), str(h1 / "redis.conf")]) as server:
        client = _redis(host, port, REDIS_PASSWORD)
        _answers(server, client.ping, "redis-server on the rendered file")
        with pytest.raises(redis.AuthenticationError):
            _redis(host, port, "wrong").ping()
        with _running([tool("redis-sentinel"), str(h1 / "sentinel.conf")]) as sentinel:
            client = _redis(host, sport, SENTINEL_PASSWORD)
            _answers(sentinel, client.ping, "redis-sentinel on the rendered file")
            master = client.execute_command("SENTINEL", "MASTER", "runnerhub")
            assert master, "Sentinel does not monitor runnerhub"
    bad = h1 / "bad.conf"
    bad.write_text((h1 / "redis.conf").read_text().replace("appendonly no", "appendonlyy no"))
    done = subprocess.run(
        [tool("redis-server"), str(bad)], capture_output=True, text=True, timeout=10
    )
    assert done.returncode != 0 and "appendonlyy" in done.stdout + done.stderr


def _archive_push(conf: Path, secrets: Path, data_dir: Path, prefix: str) -> str:
    """PostgreSQL's archive_command as rendered, pointed at the rendered pgbackrest.conf."""
    argv = shlex.split(prefix)
    argv[1:1] = [
        f"--config={conf}",
        f"--config-include-path={secrets / 'pgbackrest'}",
        "--log-level-file=off",
    ]
    done = subprocess.run(
        [*argv, "archive-push", "pg_wal/000000010000000000000001"],
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout + done.stderr


def test_pgbackrest_takes_every_option_of_the_rendered_file(rendered: tuple[Path, Path]) -> None:
    out, secrets = rendered
    patroni = yaml.safe_load((out / "h1" / "patroni" / "patroni.yml").read_text())
    push = patroni["postgresql"]["parameters"]["archive_command"]
    assert push.endswith(" archive-push %p")
    prefix = push.removesuffix(" archive-push %p")
    data_dir = Path(patroni["postgresql"]["data_dir"])
    conf = out / "h1" / "pgbackrest" / "pgbackrest.conf"
    bad = conf.with_name("bad.conf")
    bad.write_text(conf.read_text().replace("compress-type=zst", "compress-type=zstd"))
    # A data directory with pg_wal but no database (Patroni's check wants it gone after).
    (data_dir / "pg_wal" / "archive_status").mkdir(parents=True)
    try:
        said = _archive_push(conf, secrets, data_dir, prefix)
        refused = _archive_push(bad, secrets, data_dir, prefix)
    finally:
        shutil.rmtree(data_dir)
    # Every option parsed and accepted: it stops only where the database should be.
    assert "invalid option" not in said and "WARN" not in said, said
    missing = r"ERROR: \[055\]: unable to open missing file '.*/global/pg_control'"
    assert re.search(missing, said), said
    assert "'zstd' is not allowed for 'compress-type'" in refused, refused
