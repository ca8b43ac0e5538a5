"""The health checks, one factory per dependency: each returns an `Outcome` or raises (the
monitor turns an exception or a timeout into `failing`). Checks run in the background
only; nothing here is awaited by a request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import httpx

from runnerhub.backends.base import RunnerBackend
from runnerhub.breakers import CircuitBreaker
from runnerhub.cache import Cache
from runnerhub.domain.backups import (
    ARCHIVE_BEHIND_SEGMENTS,
    Archiver,
    Done,
    Schedule,
    Space,
    overdue,
)
from runnerhub.domain.breaker import BreakerState
from runnerhub.domain.replicas import LEADER_ROLES, UP_STATES, ReplicationStatus, StandbyStatus
from runnerhub.github.client import GitHubClient
from runnerhub.ha.dcs import LeaderStore, StoreUnavailable
from runnerhub.health.model import Outcome
from runnerhub.health.monitor import CheckFn
from runnerhub.intake.spool import Spool
from runnerhub.lb import stats as lb_stats
from runnerhub.store import backups as backup_store
from runnerhub.store.db import HungServerGuard, Pool
from runnerhub.store.replication import read_server

# GitHub's remaining budget below this share of the window: degraded.
RATE_LIMIT_LOW = 0.1


class LoopStatus(Protocol):
    """What the `control_loops` check reads of a loop (`control.loop.ControlLoop`)."""

    name: str
    interval_s: float
    last_cycle_at: float | None  # monotonic
    last_error: str | None


def database(
    db: Pool, timeout_s: float, standby: bool = False, guard: HungServerGuard | None = None
) -> CheckFn:
    """The primary answers a query, and it is the primary (writable); on a node of a
    standby region, the region's database answers, read-only. No answer in time: the
    pool's idle connections are dropped (they may all lead to a hung server)."""
    guard = guard or HungServerGuard(db)

    async def check() -> Outcome:
        try:
            async with asyncio.timeout(timeout_s * 0.9), db.connection(timeout_s) as conn:
                server = await read_server(conn)
        except TimeoutError:
            await guard.hung()
            raise
        stats = db.get_stats()
        detail = {
            "server": server.address,
            "pool_size": stats.get("pool_size", 0),
            "pool_available": stats.get("pool_available", 0),
            "requests_waiting": stats.get("requests_waiting", 0),
        }
        if standby and not server.in_recovery:
            return Outcome(
                "degraded", detail, "the standby region's database is writable: promoted?"
            )
        if server.in_recovery and not standby:
            return Outcome("failing", detail, "connected to a replica: not writable")
        return Outcome("ok", detail)

    return check


def replication(
    read: Callable[[], ReplicationStatus | None],
    patroni_members: Callable[[], list[dict[str, Any]] | None] = lambda: None,
) -> CheckFn:
    """Replicas and their lag, as the node's replication watcher last read them; and, with
    Patroni's member list (from the `patroni` check), replicas that run but do not stream
    at all (missing from the primary's list: they cannot catch up by themselves)."""

    async def check() -> Outcome:
        status = read()
        if status is None:
            return Outcome(
                "degraded", {}, "replication state unknown (no primary, or no pg_monitor role)"
            )
        detail = status.as_dict()
        streaming = {r.name for r in status.replicas}
        silent = sorted(
            str(m.get("name"))
            for m in (patroni_members() or [])
            if m.get("role") not in LEADER_ROLES
            and m.get("state") in UP_STATES
            and m.get("name") not in streaming
        )
        problems = []
        if silent and not status.in_recovery:
            detail["not_streaming"] = silent
            problems.append(f"replicas running without a WAL stream: {', '.join(silent)}")
        if status.lagging:
            problems.append(f"replicas behind: {', '.join(status.lagging)}")
        if problems:
            return Outcome("degraded", detail, "; ".join(problems))
        return Outcome("ok", detail)

    return check


def patroni(urls: Sequence[str], http: httpx.AsyncClient) -> CheckFn:
    """Patroni's view of the PostgreSQL members (`GET /cluster` on the first that answers)."""

    async def check() -> Outcome:
        errors = []
        for url in urls:
            try:
                r = await http.get(f"{url.rstrip('/')}/cluster")
                r.raise_for_status()
                body = r.json()
                break
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(f"{url}: {type(exc).__name__}")
        else:
            return Outcome("failing", {"errors": errors}, "no Patroni REST API answered")
        members = [
            {
                "name": m.get("name"),
                "role": m.get("role"),
                "state": m.get("state"),
                "timeline": m.get("timeline"),
                "lag": m.get("lag"),
                "host": m.get("host"),
                "port": m.get("port"),
                "api_url": m.get("api_url"),
            }
            for m in body.get("members", [])
        ]
        detail = {"members": members, "unreachable": errors}
        leaders = [m for m in members if m["role"] in ("leader", "standby_leader")]
        if not leaders:
            return Outcome("failing", detail, "Patroni has no leader")
        down = [m["name"] for m in members if m["state"] not in ("running", "streaming")]
        if down:
            return Outcome("degraded", detail, f"members not running: {', '.join(map(str, down))}")
        return Outcome("ok", detail)

    return check


def load_balancers(stats_urls: Sequence[str], http: httpx.AsyncClient) -> CheckFn:
    """Each HAProxy's backends and servers, from its stats page as CSV. Never failing (the
    node itself serves either way); degraded when a stats page does not answer or a whole
    backend has no server up. One server down is only shown: in the PostgreSQL backend
    every replica is down by design."""

    async def one(url: str) -> tuple[str, str, str | BaseException]:
        name = url.split("://", 1)[-1].split("/", 1)[0]
        try:
            r = await http.get(f"{url};csv")
            r.raise_for_status()
            return url, name, r.text
        except httpx.HTTPError as exc:
            return url, name, exc

    async def check() -> Outcome:
        rows: list[dict[str, Any]] = []
        unreachable: list[str] = []
        down: list[str] = []
        for url, name, got in await asyncio.gather(*(one(u) for u in stats_urls)):
            if isinstance(got, BaseException):
                unreachable.append(f"{url}: {type(got).__name__}")
                continue
            rows += [{"haproxy": name, **asdict(s)} for s in lb_stats.servers(got)]
            down += [f"{name} {b}" for b in lb_stats.backends_down(got)]
        detail = {"servers": rows, "unreachable": unreachable, "backends_down": down}
        problems = []
        if unreachable:
            problems.append(f"stats page not answering: {', '.join(unreachable)}")
        if down:
            problems.append(f"no server up in: {', '.join(down)}")
        return Outcome("degraded" if problems else "ok", detail, "; ".join(problems) or None)

    return check


# One member's status: {"member_id", "leader", "raft_term", "db_size"}; raises when it
# does not answer.
MemberStatus = Callable[[str], Awaitable[dict[str, Any]]]


def etcd(
    endpoints: Sequence[str],
    http: httpx.AsyncClient | None = None,
    status: MemberStatus | None = None,
) -> CheckFn:
    """Each etcd member's status, and whether they agree on a leader: through `status`
    (gRPC, `ha.etcd.MemberStatusReader`, when etcd has TLS or users), else etcd's HTTP
    gateway."""

    async def via_gateway(endpoint: str) -> dict[str, Any]:
        assert http is not None
        url = endpoint if "://" in endpoint else f"http://{endpoint}"
        r = await http.post(f"{url}/v3/maintenance/status", json={})
        r.raise_for_status()
        s = r.json()
        return {
            "member_id": s.get("header", {}).get("member_id"),
            "leader": s.get("leader"),
            "raft_term": s.get("raftTerm"),
            "db_size": int(s.get("dbSize", 0)),
        }

    read = status or via_gateway

    async def member(endpoint: str) -> dict[str, Any]:
        try:
            return {"endpoint": endpoint, "ok": True, **await read(endpoint)}
        except (httpx.HTTPError, ValueError, StoreUnavailable) as exc:
            return {"endpoint": endpoint, "ok": False, "error": type(exc).__name__}

    async def check() -> Outcome:
        members = await asyncio.gather(*(member(e) for e in endpoints))
        up = [m for m in members if m["ok"]]
        leaders = {m["leader"] for m in up if m.get("leader") not in (None, "0")}
        detail = {"members": members, "leader": next(iter(leaders), None)}
        if len(up) * 2 <= len(members):
            return Outcome("failing", detail, f"{len(up)} of {len(members)} members answer")
        if len(leaders) != 1:
            return Outcome("failing", detail, f"members disagree on the leader: {leaders}")
        if len(up) < len(members):
            return Outcome("degraded", detail, f"{len(members) - len(up)} member(s) unreachable")
        return Outcome("ok", detail)

    return check


def redis(cache: Cache) -> CheckFn:
    """Redis through Sentinel, and what each Sentinel says. Never failing: Redis may be
    lost without losing anything (I7), so at worst it is degraded."""

    async def check() -> Outcome:
        alive = await cache.ping()
        sentinels = await cache.sentinels()
        status = cache.status()
        detail = {**status, "sentinels": sentinels}
        if not alive:
            return Outcome("degraded", detail, status["last_error"] or "Redis does not answer")
        quorum_lost = [s["address"] for s in sentinels if not s.get("ok")]
        if quorum_lost:
            return Outcome("degraded", detail, f"Sentinels not answering: {quorum_lost}")
        return Outcome("ok", detail)

    return check


def github(client: GitHubClient) -> CheckFn:
    """GitHub answers (`GET /rate_limit`, which costs no budget), and what is left of it."""

    async def check() -> Outcome:
        resources = await client.get_rate_limit()
        detail = {
            name: {"limit": r.limit, "remaining": r.remaining, "reset": r.reset}
            for name, r in resources.items()
        }
        low = [
            name
            for name, r in resources.items()
            if r.limit and r.remaining < r.limit * RATE_LIMIT_LOW
        ]
        if low:
            return Outcome("degraded", detail, f"rate limit nearly used up: {', '.join(low)}")
        return Outcome("ok", detail)

    return check


def backends(all_backends: Mapping[str, RunnerBackend]) -> CheckFn:
    async def check() -> Outcome:
        detail: dict[str, Any] = {}
        failed = []
        for name, backend in all_backends.items():
            try:
                runners = await backend.list()
                detail[name] = {"ok": True, "alive": sum(r.alive for r in runners)}
            except Exception as exc:  # whatever a backend raises, it is not working
                detail[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
                failed.append(name)
        if failed:
            return Outcome("failing", detail, f"backends failing: {', '.join(failed)}")
        return Outcome("ok", detail)

    return check


def breakers(all_breakers: Mapping[str, CircuitBreaker]) -> CheckFn:
    """Open circuits: the service behind is failing, and calls to it fail fast meanwhile."""

    async def check() -> Outcome:
        detail = {name: b.status() for name, b in all_breakers.items()}
        open_ = [name for name, b in all_breakers.items() if b.state is not BreakerState.CLOSED]
        if open_:
            return Outcome("degraded", detail, f"circuits not closed: {', '.join(open_)}")
        return Outcome("ok", detail)

    return check


def predictions(standing: Callable[[], Mapping[str, float]]) -> CheckFn:
    """Failures forecast from trends (the prediction watch's standing forecasts)."""

    async def check() -> Outcome:
        now = dict(standing())
        detail = {name: {"eta_s": round(eta, 1)} for name, eta in now.items()}
        if now:
            soonest = min(now, key=now.__getitem__)
            return Outcome(
                "degraded",
                detail,
                f"{len(now)} failure(s) forecast; soonest {soonest} in {now[soonest]:.0f} s",
            )
        return Outcome("ok", detail)

    return check


def spool(s: Spool) -> CheckFn:
    async def check() -> Outcome:
        st = s.stats()
        detail = {
            "enabled": st.enabled,
            "writable": st.writable,
            "entries": st.entries,
            "bytes": st.bytes,
            "max_bytes": st.max_bytes,
            "oldest_age_s": round(st.oldest_age_s, 3),
        }
        if st.enabled and not st.writable:
            return Outcome("failing", detail, st.last_error or "the spool is not writable")
        if st.entries:
            return Outcome("degraded", detail, f"{st.entries} deliveries waiting to be replayed")
        return Outcome("ok", detail)

    return check


def leader(
    store: LeaderStore | None, node: str, is_leader: Callable[[], bool], may_act: Callable[[], bool]
) -> CheckFn:
    """The cluster has a leader (read from etcd), and whether this node is it."""

    async def check() -> Outcome:
        if store is None:
            return Outcome("ok", {"mode": "single node", "leader": node, "this_node": True})
        record, _ = await store.leader()
        detail = {
            "leader": record.node if record else None,
            "epoch": record.epoch if record else None,
            "this_node": is_leader(),
            "lease_valid": may_act() if is_leader() else None,
        }
        if record is None:
            return Outcome("failing", detail, "no leader: nothing is being scheduled")
        if is_leader() and not may_act():
            return Outcome("degraded", detail, "leading, but the lease is not confirmed")
        return Outcome("ok", detail)

    return check


def loops(
    control: Sequence[LoopStatus],
    leading: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
) -> CheckFn:
    """The leader's control loops: each ran a cycle recently, and without error."""

    async def check() -> Outcome:
        if not leading():
            return Outcome("ok", {"leading": False})
        now = clock()
        detail: dict[str, Any] = {"leading": True}
        late, failing = [], []
        for loop in control:
            age = None if loop.last_cycle_at is None else round(now - loop.last_cycle_at, 3)
            detail[loop.name] = {"last_cycle_age_s": age, "last_error": loop.last_error}
            if age is not None and age > 3 * loop.interval_s + 5:
                late.append(loop.name)
            if loop.last_error:
                failing.append(loop.name)
        if late or failing:
            parts = ([f"no recent cycle: {', '.join(late)}"] if late else []) + (
                [f"last cycle failed: {', '.join(failing)}"] if failing else []
            )
            return Outcome("degraded", detail, "; ".join(parts))
        return Outcome("ok", detail)

    return check


def backups(
    db: Pool,
    schedules: Sequence[Schedule],
    names: Mapping[int, str],
    grace_s: float,
    archiver: Callable[[], Archiver | None],
    clock: Callable[[], float] = time.time,
    behind: Callable[[], Mapping[int, int]] = dict,
    space: Callable[[], Mapping[int, Space]] = dict,
    low_space: float = 0.1,
) -> CheckFn:
    """Backups (as the leader recorded them) and WAL archiving (as the primary reports it):
    degraded while a backup or check failed and nothing succeeded since, something is
    overdue, archiving fails, a repository's archive ends well before the primary's (WAL
    dropped rather than fill the disk), or a watched repository's file system is full or
    low. Never failing: a node serves without backups."""

    async def check() -> Outcome:
        async with db.connection() as conn:
            done = await backup_store.done(conn)
            failures = await backup_store.failures_since_success(conn)
        now = clock()
        problems = [
            f"repo{f.repo} ({names.get(f.repo, '')}): {f.what.replace('_', ' ')} failed: "
            f"{(f.error or '')[:200]}"
            for f in failures
        ]
        repos: dict[str, Any] = {}
        for s in schedules:
            d = done.get(s.repo, Done({}, {}))
            late = overdue(s, d, now, grace_s)
            problems += [f"repo{s.repo} ({names.get(s.repo, '')}): {x} overdue" for x in late]
            repos[f"repo{s.repo}"] = {
                "name": names.get(s.repo, ""),
                **{f"{k.value}_age_s": round(now - t, 1) for k, t in d.backups.items()},
                **{f"{c.value}_age_s": round(now - t, 1) for c, t in d.checks.items()},
                "overdue": late,
            }
        a = archiver()
        if a is not None:
            repos["wal_archive"] = {
                "last_archived_wal": a.last_archived_wal,
                "archived_age_s": round(now - a.last_archived_at, 1)
                if a.last_archived_at
                else None,
                "failed_count": a.failed_count,
                "failing": a.failing,
            }
            if a.failing:
                problems.append(f"WAL archiving failing (last failed: {a.last_failed_wal})")
        for repo, segments in sorted(behind().items()):
            repos.setdefault(f"repo{repo}", {})["archive_behind_segments"] = segments
            if segments > ARCHIVE_BEHIND_SEGMENTS:
                problems.append(
                    f"repo{repo} ({names.get(repo, '')}): its WAL archive ends {segments} "
                    "segments before the primary's: WAL missing (dropped at "
                    "archive-push-queue-max, or not pushed); a restore cannot pass the gap"
                )
        for repo, fs in sorted(space().items()):
            repos.setdefault(f"repo{repo}", {}).update(free_bytes=fs.free, size_bytes=fs.total)
            if (problem := fs.problem(low_space)) is not None:
                problems.append(f"repo{repo} ({names.get(repo, '')}): {problem}")
        if problems:
            return Outcome("degraded", repos, "; ".join(problems))
        return Outcome("ok", repos)

    return check


def standby_region(read: Callable[[], StandbyStatus | None], alert_s: float) -> CheckFn:
    """A standby region's database: how far behind the active region it replays, and
    whether it streams (it can also catch up from the archive alone, but slower)."""

    async def check() -> Outcome:
        s = read()
        if s is None:
            return Outcome("degraded", {}, "the standby region's replication is not read yet")
        detail = {
            "replay_lag_s": None if s.replay_lag_s is None else round(s.replay_lag_s, 3),
            "streaming": s.streaming,
            "receive_lsn": s.receive_lsn,
            "replay_lsn": s.replay_lsn,
        }
        problems = []
        if s.replay_lag_s is None or s.replay_lag_s > alert_s:
            problems.append(f"{s.replay_lag_s or 0:.0f} s behind the active region")
        if not s.streaming:
            problems.append("not streaming from the active region (replaying its archive)")
        if problems:
            return Outcome("degraded", detail, "; ".join(problems))
        return Outcome("ok", detail)

    return check
