"""A private Redis with Sentinel in a directory: for the tests, benchmarks and `runnerhub up`.

One primary, one replica and three Sentinels (quorum 2), every process on its own free
loopback port, never the machine's Redis (6379) or Sentinel (26379). Everything needs the
generated password. Redis only holds what RunnerHub may lose (caches, shared budgets), so
nothing is persisted: no AOF, no snapshots, and a data node that (re)starts starts empty.

Processes run in their own sessions and are ours to signal: tests kill, pause and restart
them one by one. Sentinel and Redis rewrite their own configuration files as roles change
(`CONFIG REWRITE`), so a restart with the same file resumes the current topology. The
files come from `runnerhub.render.redis`, the renderer production configurations come from too.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.process import ManagedProcess, env_path, find_binary, wait_ready
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.paths import write_private
from runnerhub.render.redis import (
    HOST,
    Address,
    ServerTls,
    render_redis_config,
    render_sentinel_config,
)

# The machine's own Redis and Sentinel: never ours, even if the kernel offers the port.
RESERVED_PORTS = frozenset({6379, 26379})
DEFAULT_MASTER_NAME = "runnerhub"

Kind = Literal["redis", "sentinel"]
Role = Literal["primary", "replica"]
T = TypeVar("T")


class RedisError(Exception):
    pass


def find_redis(name: str) -> Path:
    """`redis-server` or `redis-sentinel`: from $RUNNERHUB_REDIS_BIN (a directory), else the
    PATH, else /usr/bin."""
    return find_binary(
        name,
        RedisError,
        f"install the {name} package (`make` installs it) or set RUNNERHUB_REDIS_BIN",
        first=[env_path("RUNNERHUB_REDIS_BIN", name)],
        then=[Path("/usr/bin", name)],
    )


def pick_port(host: str = HOST) -> int:
    while True:
        port = free_port(host)
        if port not in RESERVED_PORTS:
            return port


def majority_address(answers: Sequence[Address | None]) -> Address | None:
    """The address most sentinels report (None if none answered); on a tie, the first."""
    seen = Counter(a for a in answers if a is not None)
    return seen.most_common(1)[0][0] if seen else None


# -- processes ------------------------------------------------------------------------------


@dataclass
class RedisProcess(ManagedProcess):
    """One redis-server or redis-sentinel under its own directory."""

    name: str
    kind: Kind
    port: int
    node_dir: Path
    popen: subprocess.Popen[bytes] | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.node_dir.parent / f"{self.name}.log"

    @property
    def config_file(self) -> Path:
        return self.node_dir / f"{self.kind}.conf"

    @property
    def address(self) -> Address:
        return (HOST, self.port)

    def start(self, extra_args: Sequence[str] = ()) -> None:
        if self.alive():
            return
        binary = find_redis("redis-sentinel" if self.kind == "sentinel" else "redis-server")
        if self.kind == "redis":
            # A replica keeps the last full sync on disk and would load it: start empty.
            (self.node_dir / "dump.rdb").unlink(missing_ok=True)
        self.spawn([str(binary), str(self.config_file), *extra_args], cwd=self.node_dir)


# -- the cluster ----------------------------------------------------------------------------


@dataclass
class LocalRedis:
    """A Redis primary (`redis-0`), a replica (`redis-1`) and three Sentinels
    (`sentinel-0`..`sentinel-2`) under `base_dir`, which we own."""

    base_dir: Path
    master_name: str = DEFAULT_MASTER_NAME
    password: str = ""  # generated when empty
    quorum: int = 2
    down_after_ms: int = 1000
    # Sentinel retries an aborted failover (a split vote among the Sentinels, a replica not
    # yet seen linked) only after twice this: 10 s (a common setting) made such a failover
    # take 20 s instead of 2. One replica is reconfigured well within 4 s here.
    failover_timeout_ms: int = 4_000
    parallel_syncs: int = 1
    # TLS only, every process with a certificate of this CA; ACL users (name: password) on
    # the data nodes, each allowed NODE_ACL.
    tls: LocalCA | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, RedisProcess] = field(init=False, default_factory=dict)

    DATA_NODES = ("redis-0", "redis-1")
    SENTINELS = ("sentinel-0", "sentinel-1", "sentinel-2")

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        self.password = self.password or secrets.token_urlsafe(24)
        for name in self.DATA_NODES:
            self.processes[name] = RedisProcess(name, "redis", pick_port(), self.base_dir / name)
        for name in self.SENTINELS:
            self.processes[name] = RedisProcess(name, "sentinel", pick_port(), self.base_dir / name)

    # -- configuration ---------------------------------------------------------------------

    def _write_configs(self) -> None:
        """First start only: afterwards the files hold what Redis and Sentinel rewrote."""
        primary = self.processes["redis-0"]
        for p in self.processes.values():
            p.node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if p.config_file.exists():
                continue
            tls = None
            if self.tls is not None:
                issued = self.tls.issue(p.name, also_client=True)
                tls = ServerTls(issued.cert, issued.key, self.tls.cert)
            if p.kind == "redis":
                text = render_redis_config(
                    p.port,
                    self.password,
                    p.node_dir,
                    replica_of=None if p is primary else primary.address,
                    tls=tls,
                    users=self.users,
                )
            else:
                text = render_sentinel_config(
                    p.port,
                    self.master_name,
                    primary.address,
                    self.password,
                    p.node_dir,
                    quorum=self.quorum,
                    down_after_ms=self.down_after_ms,
                    failover_timeout_ms=self.failover_timeout_ms,
                    parallel_syncs=self.parallel_syncs,
                    tls=tls,
                )
            write_private(p.config_file, text)  # it holds the password

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the data nodes, then the Sentinels; wait until every Sentinel sees the
        primary, the replica and its two peers, and the replica is in sync."""
        find_redis("redis-server")
        find_redis("redis-sentinel")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._write_configs()
        try:
            for name in self.DATA_NODES:
                self.processes[name].start()
            # A Sentinel learns of replicas from the primary's INFO, then only every 10 s:
            # start them once the replica is attached, so that the first look finds it.
            self._wait(self._data_primary, timeout_s, "the replica to sync")
            for name in self.SENTINELS:
                self.processes[name].start()
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Sentinels first (so none starts a failover while the data nodes stop), then the
        data nodes, each group all at once."""
        for group in (self.SENTINELS, self.DATA_NODES):
            procs = [self.processes[n] for n in group]
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait_exit(timeout_s)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self._process(name).kill(sig)

    def restart(self, name: str, timeout_s: float = 10.0) -> None:
        """Start a stopped or killed process again, on its port with its (rewritten)
        configuration. A data node rejoins as a replica of whichever node the Sentinels
        report as primary, so it never serves as a second primary meanwhile."""
        p = self._process(name)
        if p.alive():
            return
        extra: list[str] = []
        if p.kind == "redis":
            current = self._sentinel_primary()
            if current == p.address:
                extra = ["--replicaof", "no", "one"]
            elif current is not None:
                extra = ["--replicaof", current[0], str(current[1])]
        p.start(extra)
        self._wait(lambda: self._ping(p), timeout_s, f"{name} to answer", watch=[p])
        if extra:
            # Keep the role we gave it on the command line for its next start.
            self._call(p, lambda c: c.config_rewrite())

    # -- state -----------------------------------------------------------------------------

    @property
    def sentinels(self) -> list[Address]:
        return [self.processes[n].address for n in self.SENTINELS]

    @property
    def data_nodes(self) -> list[Address]:
        return [self.processes[n].address for n in self.DATA_NODES]

    def pids(self) -> dict[str, int]:
        """Every running process by name."""
        return {n: p.pid for n, p in self.processes.items() if p.pid is not None}

    def primary(self) -> Address:
        """The primary most reachable Sentinels report."""
        found = self._sentinel_primary()
        if found is None:
            raise RedisError(f"no Sentinel knows a primary for {self.master_name!r}")
        return found

    def name_of(self, role: Role) -> str | None:
        """The running data node in `role` now: the primary as the Sentinels report it
        (else the node that says it is one), a replica as the node itself says."""
        live = [self.processes[n] for n in self.DATA_NODES if self.processes[n].alive()]
        if role == "primary":
            current = self._sentinel_primary()
            for p in live:
                if p.address == current:
                    return p.name
        wanted = "master" if role == "primary" else "slave"
        for p in live:
            info = self._info(p, "replication")
            if info is not None and info.get("role") == wanted:
                return p.name
        return None

    def pid_of(self, role: Role) -> int | None:
        name = self.name_of(role)
        return self.processes[name].pid if name else None

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        def ready() -> bool:
            primary = self._sentinel_primary()
            return primary is not None and self._topology_complete(primary)

        everything = list(self.processes.values())
        self._wait(ready, timeout_s, "Redis and its Sentinels to be ready", watch=everything)

    def wait_failover(self, old_primary: Address, timeout_s: float = 30.0) -> Address:
        """Wait until the Sentinels report a primary other than `old_primary` and that node
        says it is one; return its address."""

        def promoted() -> Address | None:
            current = self._sentinel_primary()
            if current is None or current == old_primary:
                return None
            node = self._by_address(current)
            info = self._info(node, "replication") if node else None
            return current if info is not None and info.get("role") == "master" else None

        found = self._wait(promoted, timeout_s, f"a failover away from {old_primary}")
        assert found is not None  # _wait returns only a truthy answer
        return found

    # -- helpers ---------------------------------------------------------------------------

    def _process(self, name: str) -> RedisProcess:
        try:
            return self.processes[name]
        except KeyError:
            raise RedisError(f"no process {name!r}: one of {sorted(self.processes)}") from None

    def _by_address(self, address: Address) -> RedisProcess | None:
        return next((p for p in self.processes.values() if p.address == address), None)

    def _client(self, p: RedisProcess, timeout_s: float = 0.5) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=p.port,
            password=self.password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # one try: a probe, not a request that must pass
            decode_responses=True,
            **self.client_tls(),
        )

    def client_tls(self) -> dict[str, Any]:
        """redis-py's arguments for reaching these processes (TLS, checked by the CA)."""
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.tls.cert)}

    def _call(self, p: RedisProcess, command: Callable[[redis.Redis], T]) -> T | None:
        """One command to one process; None if it does not answer."""
        if not p.alive():
            return None
        client = self._client(p)
        try:
            return command(client)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _ping(self, p: RedisProcess) -> bool:
        return bool(self._call(p, lambda c: c.ping()))

    def _info(self, p: RedisProcess, section: str) -> dict[str, Any] | None:
        return self._call(p, lambda c: c.info(section))

    def _sentinel_answers(self) -> list[Address | None]:
        answers: list[Address | None] = []
        for name in self.SENTINELS:
            got = self._call(
                self.processes[name],
                lambda c: c.sentinel_get_master_addr_by_name(self.master_name),
            )
            answers.append((str(got[0]), int(got[1])) if isinstance(got, tuple) else None)
        return answers

    def _sentinel_primary(self) -> Address | None:
        return majority_address(self._sentinel_answers())

    def _topology_complete(self, primary: Address) -> bool:
        """Every Sentinel agrees on `primary`, knows the replica and both other Sentinels
        (a failover needs them), and the replica's link to the primary is up."""
        if any(a != primary for a in self._sentinel_answers()):
            return False
        for name in self.SENTINELS:
            state = self._call(self.processes[name], lambda c: c.sentinel_master(self.master_name))
            if not isinstance(state, dict):
                return False
            if state.get("num-slaves") != 1 or state.get("num-other-sentinels") != 2:
                return False
            # A replica a Sentinel still holds down, or whose link it has not yet seen up,
            # is no candidate for promotion: a failover then aborts ("no good slave") and is
            # only retried after twice the failover timeout.
            replicas = self._call(
                self.processes[name], lambda c: c.sentinel_slaves(self.master_name)
            )
            if not isinstance(replicas, list) or not all(_good_replica(r) for r in replicas):
                return False
        return self._data_primary() == primary

    def _data_primary(self) -> Address | None:
        """The data node that says it is the primary, if exactly one does and every other
        one is linked to it and synced."""
        infos = {p.address: self._info(p, "replication") for p in self._data_processes()}
        if any(i is None for i in infos.values()):
            return None
        masters = [a for a, i in infos.items() if i is not None and i.get("role") == "master"]
        if len(masters) != 1:
            return None
        for address, info in infos.items():
            if address == masters[0] or info is None:
                continue
            linked_to = (info.get("master_host"), info.get("master_port"))
            if info.get("master_link_status") != "up" or linked_to != masters[0]:
                return None
        return masters[0]

    def _data_processes(self) -> list[RedisProcess]:
        return [self.processes[n] for n in self.DATA_NODES]

    def _wait(
        self,
        probe: Callable[[], T],
        timeout_s: float,
        what: str,
        watch: Sequence[RedisProcess] = (),
    ) -> T:
        """`probe` until truthy; a process of `watch` exiting fails at once; on timeout,
        every process's log tail."""
        logs = list(self.processes.values())
        return wait_ready(probe, timeout_s, what, error=RedisError, watch=watch, logs=logs)


def _good_replica(state: Any) -> bool:
    """As Sentinel judges a promotion candidate: up, and its link to the primary up in the
    last INFO Sentinel read from it (refreshed every 10 s: a replica that has just rejoined
    still counts as unlinked until then)."""
    if not isinstance(state, dict):
        return False
    down = any(state.get(flag) for flag in ("is_sdown", "is_odown", "is_disconnected"))
    return not down and state.get("master-link-status") == "ok"
