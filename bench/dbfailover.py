#!/usr/bin/env python3
"""Benchmark: PostgreSQL primary failover under load on the local HA cluster.

    .venv/bin/python bench/dbfailover.py [--rounds 10] [--rate 2]

Starts `runnerhub up --ha` without the demo (3 etcd members, 3 Patroni/PostgreSQL members
in synchronous mode, HAProxy, 3 RunnerHub nodes, the GitHub simulator and its runners),
keeps a steady job load flowing through HAProxy, and in each round SIGKILLs the PostgreSQL
primary's machine (Patroni and its postmaster together), then restarts it once a new
primary is up so that it rejoins as a replica (pg_rewind) before the next round. Then
`--freeze-rounds` times it freezes the primary's machine (SIGSTOP of Patroni, the postmaster
and every backend: a hung host, whose TCP connections stay open and answer nothing) until a
new primary is writable, and wakes it (SIGCONT: Patroni demotes it, it rejoins); and
`--standby-rounds` times it SIGKILLs the synchronous standby (commits wait for it until
Patroni names another) and restarts it. Then it SIGKILLs the Redis primary `--redis-rounds`
times: Sentinel promotes the replica, every node must follow by itself, and the old primary
comes back as a replica.

For each kind of fault it prints how long GitHub's deliveries waited for their answer
(p50/p99/max, and how many took over 1 s) from the fault until the cluster was whole again,
beside the same figures for a quiet window before the first fault (the baseline).

Per round it prints the time from the kill to a writable new primary and to the first job
provisioned afterwards; at the end p50/p99/max of both, deliveries answered other than 2xx,
acknowledged jobs missing from PostgreSQL or never completed, jobs run twice, and the
replication lag (replay, seconds) p99 sampled every 0.5 s under the load. The baseline
beside the failover time is Patroni's `ttl` in the same run: a dead primary's leader key
lives that long after its last renewal, so no failover can be faster than about `ttl`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from runnerhub.dev.cluster import chaos
from runnerhub.dev.cluster.local import LocalCluster
from runnerhub.dev.cluster.patroni import LocalPatroni
from runnerhub.dev.cluster.workload import (
    Load,
    delivery_waits,
    missing_in_db,
    pct,
    query,
    verify,
    wait_completed,
    wait_row,
    waits_within,
)
from runnerhub.dev.waiting import wait_until_sync
from runnerhub.store.db import connect
from runnerhub.store.replication import read_status

TARGET_TYPICAL_S = 20.0
TARGET_WORST_S = 23.0


@dataclass
class Round:
    victim: str
    writable_s: float
    first_provision_s: float | None
    kind: str = "kill"
    window: tuple[float, float] = (0.0, 0.0)  # wall clock: the fault, the cluster whole again


@dataclass
class LagSampler:
    """Replay lag of every streaming replica, read from the primary every `every_s`."""

    dsn: str
    every_s: float = 0.5
    samples: list[float] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> LagSampler:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = await connect(self.dsn, autocommit=True)
                try:
                    while not self._stop.is_set():
                        status = await read_status(conn)
                        self.samples += [
                            r.replay_lag_s
                            for r in status.replicas
                            if r.state == "streaming" and r.replay_lag_s is not None
                        ]
                        await asyncio.sleep(self.every_s)  # the sampling period
                finally:
                    await conn.close()
            except psycopg.Error:
                self.errors += 1  # a failover in progress: sample again once it is over
                await asyncio.sleep(self.every_s)


def standby_round(c: LocalCluster, pg: LocalPatroni) -> Round:
    """SIGKILL the synchronous standby; restart it once writes go on without it."""
    pg.wait_healthy(120)
    victim = pg.sync_standby()
    fault_wall = time.time()
    t0 = time.monotonic()
    pg.kill_member(victim)
    wait_until_sync(pg.writable, 90, "writes again", interval_s=0.1)
    writable_s = time.monotonic() - t0
    pg.start_member(victim)
    pg.wait_healthy(120)
    return Round(victim.name, writable_s, None, "standby", (fault_wall, time.time()))


def one_round(c: LocalCluster, pg: LocalPatroni, kind: str = "kill") -> Round:
    pg.wait_healthy(120)
    old = pg.wait_primary()
    fault_wall = time.time()
    t0 = time.monotonic()
    frozen = chaos.freeze_host(old.pid, str(old.data_dir)) if kind == "freeze" else []
    if not frozen:
        pg.kill_member(old)
    # A write that succeeds on another member: the new primary is in office.
    wait_until_sync(pg.writable, 90, "a writable primary", interval_s=0.1)
    writable_s = time.monotonic() - t0

    def provisioned() -> float | None:
        rows = query(
            c.dsn,
            "SELECT extract(epoch FROM min(at)) AS t FROM events "
            "WHERE kind = 'runner.requested' AND at > to_timestamp(%s)",
            fault_wall,
        )
        t = rows[0]["t"]
        return float(t) - fault_wall if t is not None else None

    try:
        first = wait_until_sync(provisioned, 60, "the first provisioning", interval_s=0.1)
    except AssertionError:
        first = None
    if frozen:
        chaos.thaw(frozen)  # Patroni wakes, finds its leader key gone, and demotes it
    else:
        pg.start_member(old)  # it comes back and rejoins as a replica
    pg.wait_healthy(120)
    return Round(old.name, writable_s, first, kind, (fault_wall, time.time()))


@dataclass
class RedisRound:
    victim: str
    promoted_s: float  # Sentinel names a new primary
    followed_s: float  # every node uses it


def cache_primaries(c: LocalCluster) -> set[str | None]:
    seen: set[str | None] = set()
    for url in c.node_urls.values():
        try:
            r = httpx.get(
                f"{url}/api/v1/cluster",
                timeout=3,
                headers={"Authorization": f"Bearer {c.secrets.read_token}"},
            )
            cache = r.json()["cache"]
            seen.add(cache["primary"] if cache["available"] else None)
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            seen.add(None)
    return seen


def redis_round(c: LocalCluster) -> RedisRound:
    redis = c.redis
    assert redis is not None
    redis.wait_ready(60)
    old = redis.primary()
    name = redis.name_of("primary")
    assert name is not None
    t0 = time.monotonic()
    redis.kill(name)
    new = redis.wait_failover(old, 60)
    promoted = time.monotonic() - t0
    wanted = {f"{new[0]}:{new[1]}"}
    wait_until_sync(lambda: cache_primaries(c) == wanted, 60, "the nodes to follow", 0.05)
    followed = time.monotonic() - t0
    redis.restart(name)  # back as a replica of the new primary
    return RedisRound(name, promoted, followed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--rate", type=float, default=2.0, help="jobs a second")
    ap.add_argument("--freeze-rounds", type=int, default=3, help="primary freezes (SIGSTOP)")
    ap.add_argument("--standby-rounds", type=int, default=3, help="sync-standby SIGKILLs")
    ap.add_argument("--redis-rounds", type=int, default=10, help="Redis-primary SIGKILLs")
    ap.add_argument("--quiet-s", type=float, default=20.0, help="the baseline's window")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rounds: list[Round] = []
    redis_rounds: list[RedisRound] = []

    with tempfile.TemporaryDirectory(prefix="rh-dbfailover-") as d:
        os.chmod(d, 0o755)  # the service user keeps PostgreSQL's data inside
        c = LocalCluster.for_faults(Path(d) / "state", patroni=True)
        try:
            c.start()
            pg = c.pg_cluster
            assert pg is not None
            ttl = pg.timing.ttl
            print(
                f"cluster up: Patroni x{len(pg.members)} (ttl {ttl} s, loop_wait "
                f"{pg.timing.loop_wait} s, retry_timeout {pg.timing.retry_timeout} s, "
                f"synchronous mode), {len(c.node_services)} nodes, load {args.rate:g} jobs/s"
            )
            with Load(c.sim_url, args.rate) as load, LagSampler(c.dsn) as lag:
                quiet = time.time()
                time.sleep(args.quiet_s)  # the baseline: the same load, no fault
                baseline = (quiet, time.time())
                plan = (
                    ["kill"] * args.rounds
                    + ["freeze"] * args.freeze_rounds
                    + ["standby"] * args.standby_rounds
                )
                for n, kind in enumerate(plan):
                    r = standby_round(c, pg) if kind == "standby" else one_round(c, pg, kind)
                    rounds.append(r)
                    first = f"{r.first_provision_s:.2f}" if r.first_provision_s else "-"
                    done = {"kill": "killed", "freeze": "froze", "standby": "killed standby"}
                    print(
                        f"  round {n + 1:>2}: {done[kind]} {r.victim} → writable in "
                        f"{r.writable_s:.2f} s, first provisioning {first} s",
                        flush=True,
                    )
                pg.wait_healthy(120)
                for n in range(args.redis_rounds):
                    rr = redis_round(c)
                    redis_rounds.append(rr)
                    print(
                        f"  redis {n + 1:>2}: killed {rr.victim} → Sentinel promoted in "
                        f"{rr.promoted_s:.2f} s, every node following in {rr.followed_s:.2f} s",
                        flush=True,
                    )
            ids = list(load.ids)

            wait_completed(c.sim_url, ids, 240)
            v = verify(c.sim_url, c.dsn, ids)
            waits = delivery_waits(c.sim_url)
            missing = missing_in_db(c.dsn, ids)
        finally:
            c.stop()
            if c.pg_cluster is not None:
                c.pg_cluster.destroy()

    kills = [r for r in rounds if r.kind != "standby"]
    ws = [r.writable_s for r in kills]
    fp = [r.first_provision_s for r in kills if r.first_provision_s is not None]
    print()
    print(f"{'':<34} {'p50':>8} {'p99':>8} {'max':>8}")
    print(
        f"{'kill/freeze → writable primary (s)':<34} {pct(ws, 50):8.2f} {pct(ws, 99):8.2f} "
        f"{max(ws, default=float('nan')):8.2f}"
    )
    print(
        f"{'kill/freeze → first provisioning':<34} {pct(fp, 50):8.2f} {pct(fp, 99):8.2f} "
        f"{max(fp, default=float('nan')):8.2f}"
        f"{'' if len(fp) == len(kills) else f'  ({len(kills) - len(fp)} unmeasured)'}"
    )
    print(
        f"{'replication replay lag (s)':<34} {pct(lag.samples, 50):8.3f} "
        f"{pct(lag.samples, 99):8.3f} {max(lag.samples, default=float('nan')):8.3f}"
        f"  ({len(lag.samples)} samples)"
    )
    print()
    print(
        f"{'delivery answered in (ms)':<34} {'p50':>8} {'p99':>8} {'max':>8}  "
        f"{'count':>6} {'> 1 s':>6}"
    )
    base_waits = waits_within(waits, [baseline])
    base = pct(base_waits, 99)
    print(wait_row("no fault (baseline)", base_waits, base))
    for kind, label in (
        ("kill", "primary SIGKILLed"),
        ("freeze", "primary frozen (SIGSTOP)"),
        ("standby", "sync standby SIGKILLed"),
    ):
        windows = [r.window for r in rounds if r.kind == kind]
        if windows:
            print(wait_row(label, waits_within(waits, windows), base))
    if redis_rounds:
        rp = [r.promoted_s for r in redis_rounds]
        rf = [r.followed_s for r in redis_rounds]
        for label, xs in (("Redis kill → promoted (s)", rp), ("Redis kill → nodes follow (s)", rf)):
            print(f"{label:<34} {pct(xs, 50):8.2f} {pct(xs, 99):8.2f} {max(xs):8.2f}")
    print()
    print(
        f"failover p50 {pct(ws, 50):.2f} s = {pct(ws, 50) / ttl:.2f}x Patroni's ttl ({ttl} s, the "
        f"floor); targets {TARGET_TYPICAL_S:g} s typical ({pct(ws, 50) / TARGET_TYPICAL_S:.2f}x), "
        f"{TARGET_WORST_S:g} s worst ({max(ws, default=float('nan')) / TARGET_WORST_S:.2f}x)"
    )
    print(
        f"jobs: {v.jobs}, acknowledged but missing or open in PostgreSQL: {missing}, "
        f"never completed: {len(v.not_completed)}, run twice: {len(v.ran_twice)}, "
        f"overlapping runners: {len(v.overlapping_runners)}, did not succeed: {len(v.failed)} "
        f"{v.failed[:5]}, runner names reused: {len(v.names_reused)} {v.names_reused[:5]}"
    )
    print(f"deliveries: {v.deliveries}, answered other than 2xx: {len(v.deliveries_failed)}")
    if args.json:
        summary: dict[str, Any] = {
            "writable_s": ws,
            "first_provisioning_s": fp,
            "lag_p99_s": pct(lag.samples, 99),
            "redis_promoted_s": [r.promoted_s for r in redis_rounds],
            "redis_followed_s": [r.followed_s for r in redis_rounds],
            "jobs": v.jobs,
            "missing": missing,
            "deliveries": v.deliveries,
            "deliveries_failed": len(v.deliveries_failed),
            "delivery_wait_s": {
                kind: waits_within(waits, [r.window for r in rounds if r.kind == kind])
                for kind in ("kill", "freeze", "standby")
            }
            | {"baseline": base_waits},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if v.ok and missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
