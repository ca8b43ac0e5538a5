"""`runnerhub chaos kill COMPONENT`: inject a fault into a running local cluster by pid, for
people who want to watch failover happen.

Which process is "the PostgreSQL primary" or "the leader" changes as faults happen, and
pids change as processes restart, so nothing is taken from a list written at start: the role
is asked of the live cluster (Patroni's REST API, Sentinel, etcd, RunnerHub's API) and the
process is found by what its command line names (its configuration file or data directory),
which `cluster.json` records.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

COMPONENTS = (
    "postgres-primary",
    "postgres-replica",
    "postgres:NAME",
    "redis-primary",
    "redis-replica",
    "redis:NAME",
    "sentinel:N",
    "etcd:N",
    "etcd-leader",
    "node:leader",
    "node:NAME",
    "haproxy",
    "github-sim",
)
ALIASES = {"redis-master": "redis-primary", "node-leader": "node:leader"}


class ChaosError(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """What to signal: a name for people, and every process that makes up the component
    (a PostgreSQL member is Patroni and its postmaster: the machine dies with both)."""

    name: str
    pids: tuple[int, ...]


def parse(component: str) -> tuple[str, str | None]:
    """`etcd:2` → ("etcd", "2"); `postgres-primary` → ("postgres-primary", None)."""
    component = ALIASES.get(component, component)
    kind, _, arg = component.partition(":")
    known = {c.partition(":")[0] for c in COMPONENTS if ":" in c}
    plain = {c for c in COMPONENTS if ":" not in c}
    if (arg and kind in known) or (not arg and component in plain):
        return kind, arg or None
    raise ChaosError(f"unknown component {component!r}; one of: {', '.join(COMPONENTS)}")


def pids_matching(marker: str, proc: Path = Path("/proc")) -> list[int]:
    """Live processes whose command line names `marker` (zombies excluded): a path anywhere
    in it, anything else as a whole word (Redis retitles itself `redis-server HOST:PORT`,
    and port 6379 must not match 63790)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        named = marker in argv if "/" in marker else marker in argv.split()
        if named and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _postmaster(data_dir: str) -> list[int]:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return [int(Path(data_dir, "postmaster.pid").read_text().splitlines()[0])]
    return []


def children_of(pid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """The live child processes of `pid`, each with its command line (its title)."""
    found = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        found[int(entry.name)] = argv.strip()
    return found


def postgres_tree(data_dir: str) -> list[int]:
    """A PostgreSQL server's postmaster and every process it started (backends, walsender,
    startup, checkpointer...): stopping only the postmaster would not hang a connection."""
    postmaster = _postmaster(data_dir)
    if not postmaster:
        return []
    return postmaster + sorted(children_of(postmaster[0]))


def freeze_host(patroni_pid: int | None, data_dir: str) -> list[int]:
    """A PostgreSQL member's machine hangs (or is cut off one way): its Patroni, postmaster
    and every backend SIGSTOPped; TCP connections to it stay open and nothing answers.
    The pids, for `thaw`."""
    pids = [p for p in [patroni_pid, *postgres_tree(data_dir)] if p]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def postgres_process(data_dir: str, title: str) -> int | None:
    """The server's child process whose title names `title` (e.g. "startup": the process
    that replays WAL on a replica)."""
    postmaster = _postmaster(data_dir)
    if not postmaster:
        return None
    for pid, argv in children_of(postmaster[0]).items():
        if argv.startswith(f"postgres: {title}") or f": {title}" in argv:
            return pid
    return None


@dataclass
class LiveCluster:
    """A running local cluster as `cluster.json` describes it, asked about roles live."""

    info: dict[str, Any]
    find: Callable[[str], list[int]] = pids_matching

    @classmethod
    def load(cls, state_dir: Path) -> LiveCluster:
        path = state_dir / "cluster.json"
        try:
            return cls(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ChaosError(f"{path} not found: is `runnerhub up --ha` running there?") from None

    @property
    def state_dir(self) -> Path:
        return Path(self.info["state_dir"])

    # -- roles -----------------------------------------------------------------------------

    def postgres_roles(self) -> dict[str, str]:
        """Each Patroni member's role (leader, sync_standby, replica) per `GET /cluster`."""
        for member in self.info.get("patroni", {}).values():
            try:
                body = httpx.get(f"{member['api_url']}/cluster", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                continue
            return {m["name"]: m["role"] for m in body.get("members", [])}
        raise ChaosError("no Patroni member answers: is the cluster running with --ha?")

    def redis_primary(self) -> str:
        import redis

        conf = self.info.get("redis") or {}
        for host, port in conf.get("sentinels", []):
            ca = conf.get("ca_file")  # TLS only, when the cluster has it
            client = redis.Redis(
                host=host,
                port=port,
                password=conf.get("password"),
                socket_timeout=1,
                socket_connect_timeout=1,
                **({"ssl": True, "ssl_ca_certs": ca} if ca else {}),
            )
            try:
                addr = client.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "get-master-addr-by-name", conf["master_name"]
                )
            except redis.RedisError:
                continue
            finally:
                client.close()
            if addr:
                wanted = f"{_text(addr[0])}:{_text(addr[1])}"
                for name, proc in conf.get("processes", {}).items():
                    if proc["address"] == wanted:
                        return str(name)
        raise ChaosError("no Sentinel names a Redis primary")

    def node_leader(self) -> str:
        try:
            r = httpx.get(
                f"{self.info['api_url']}/api/v1/cluster",
                timeout=3,
                headers={"Authorization": f"Bearer {self.info['admin_token']}"},
            )
            leader = r.json().get("leader") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            leader = None
        if not leader:
            raise ChaosError("no RunnerHub leader right now")
        return str(leader)

    def etcd_leader(self) -> int:
        ids: dict[str, int] = {}
        leaders: list[str] = []
        ca = self.info.get("etcd_ca_file")  # etcd speaks TLS (the local CA's)
        verify = ssl.create_default_context(cafile=ca) if ca else True
        for i, endpoint in enumerate(self.info.get("etcd_endpoints", []), start=1):
            try:
                body = httpx.post(
                    f"{'https' if ca else 'http'}://{endpoint}/v3/maintenance/status",
                    json={},
                    timeout=1,
                    verify=verify,
                ).json()
            except (httpx.HTTPError, ValueError):
                continue
            ids[body["header"]["member_id"]] = i
            leaders.append(body.get("leader", "0"))
        for leader in leaders:
            if leader in ids:
                return ids[leader]
        raise ChaosError("no etcd member knows a leader")

    # -- processes -------------------------------------------------------------------------

    def resolve(self, component: str) -> Target:
        kind, arg = parse(component)
        if kind in ("postgres-primary", "postgres-replica"):
            roles = self.postgres_roles()
            wanted = ("leader", "master") if kind == "postgres-primary" else ("sync_standby",)
            names = [n for n, role in sorted(roles.items()) if role in wanted]
            if kind == "postgres-replica" and not names:
                names = [n for n, role in sorted(roles.items()) if role == "replica"]
            if not names:
                raise ChaosError(f"no {kind} now (members: {roles})")
            return self._postgres(names[0])
        if kind == "postgres":
            return self._postgres(arg or "")
        if kind in ("redis-primary", "redis-replica"):
            primary = self.redis_primary()
            if kind == "redis-primary":
                return self._by_marker(primary, self._redis_conf(primary))
            others = [n for n in self._redis_processes() if n.startswith("redis-") and n != primary]
            return self._by_marker(others[0], self._redis_conf(others[0]))
        if kind in ("redis", "sentinel"):
            name = f"{kind}-{arg}" if arg and arg.isdigit() else str(arg)
            return self._by_marker(name, self._redis_conf(name))
        if kind in ("etcd", "etcd-leader"):
            n = self.etcd_leader() if kind == "etcd-leader" else _index(arg, "etcd")
            return self._by_marker(f"etcd-{n}", str(self.state_dir / "etcd" / f"etcd-{n}.data"))
        if kind == "node":
            name = self.node_leader() if arg == "leader" else str(arg)
            if arg and arg.isdigit():
                name = f"node-{arg}"
            return self._by_marker(name, str(self.state_dir / f"{name}.yaml"))
        if kind == "haproxy":
            return self._by_marker("haproxy", str(self.state_dir / "haproxy" / "haproxy.cfg"))
        return self._by_marker("github-sim", str(self.state_dir / "github-sim.json"))

    def _postgres(self, name: str) -> Target:
        members = self.info.get("patroni", {})
        if name not in members:
            raise ChaosError(f"no PostgreSQL member {name!r}; there are {sorted(members)}")
        m = members[name]
        pids = self.find(m["config"]) + postgres_tree(m["data_dir"])
        if not pids:
            raise ChaosError(f"{name} is not running")
        return Target(f"PostgreSQL {name} (Patroni and postmaster)", tuple(dict.fromkeys(pids)))

    def _redis_processes(self) -> Mapping[str, Any]:
        return dict((self.info.get("redis") or {}).get("processes", {}))

    def _redis_conf(self, name: str) -> str:
        """What names a Redis process: its address (Redis replaces its command line)."""
        procs = self._redis_processes()
        if name not in procs:
            raise ChaosError(f"no Redis process {name!r}; there are {sorted(procs)}")
        return str(procs[name]["address"])

    def _by_marker(self, name: str, marker: str) -> Target:
        pids = self.find(marker)
        if not pids:
            raise ChaosError(f"{name} is not running")
        return Target(name, tuple(pids))


def _index(arg: str | None, kind: str) -> int:
    if not arg or not arg.isdigit():
        raise ChaosError(f"{kind}:N takes a member number (1, 2, 3)")
    return int(arg)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def signal_target(target: Target, sig: signal.Signals) -> list[int]:
    """Send `sig` to every process of `target`; return the pids it reached."""
    reached = []
    for pid in target.pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            reached.append(pid)
    return reached


def signal_by_name(name: str) -> signal.Signals:
    wanted = name.upper()
    wanted = wanted if wanted.startswith("SIG") else f"SIG{wanted}"
    try:
        return signal.Signals[wanted]
    except KeyError:
        raise ChaosError(f"unknown signal {name!r} (KILL, TERM, STOP, CONT…)") from None


def kill(state_dir: Path, component: str, sig: str = "KILL") -> tuple[Target, list[int]]:
    target = LiveCluster.load(state_dir).resolve(component)
    return target, signal_target(target, signal_by_name(sig))


__all__: Sequence[str] = ["COMPONENTS", "ChaosError", "LiveCluster", "Target", "kill", "parse"]
