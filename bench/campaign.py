#!/usr/bin/env python3
"""Benchmark: a random fault campaign against the local HA cluster, repeatable by its seed.

    .venv/bin/python bench/campaign.py [--faults 60] [--seed 1] [--rate 1] [--kinds K,K,...]

Starts `runnerhub up --ha` without the demo (3 etcd members, 3 Patroni/PostgreSQL members in
synchronous mode, Redis behind 3 Sentinels, HAProxy, 3 RunnerHub nodes, the GitHub simulator
and its runners), keeps jobs flowing from the simulator, and injects `--faults` faults in a
random order (`--seed`: the same seed gives the same campaign), each kind about as often as
the others:

    leader-kill     the leading node SIGKILLed, restarted once a new leader provisions
    leader-freeze   the leading node SIGSTOPped for twice the lease, then SIGCONT
    node-kill       another node SIGKILLed for 5 s, then restarted
    node-freeze     another node SIGSTOPped for 5 s (behind HAProxy), then SIGCONT
    pg-kill         the PostgreSQL primary's machine SIGKILLed (Patroni and postmaster)
    pg-host-loss    the primary's machine frozen (SIGSTOP of Patroni, the postmaster and every
                    backend) for 30 s or until another member is writable, whichever is later
    pg-replica-kill the synchronous standby SIGKILLed, restarted once writes go on
    redis-kill      the Redis primary SIGKILLed (Sentinel promotes; the nodes follow)
    etcd-kill       an etcd member SIGKILLed for 5 s, then restarted

Before each fault the cluster must be whole again (a leader, every node healthy, Patroni
with its members streaming, Redis and etcd complete). It prints each fault as it goes, then,
per kind, how long GitHub's deliveries waited for their answer from the fault until the
cluster was whole again (p50/p99/max, how many over 1 s), beside a quiet window before the
first fault (the baseline), and at the end every job checked against the simulator: lost
(never completed), run twice, provisioned twice, and deliveries answered other than 2xx.

The rounds are the other benches' (bench/failover.py, bench/dbfailover.py), run in a mixed
order: this is the campaign the hardening issue's figures came from, made repeatable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The other benches' rounds: a script's own directory is first on sys.path.
import dbfailover
import failover
from runnerhub.dev.cluster import chaos
from runnerhub.dev.cluster.local import LocalCluster
from runnerhub.dev.cluster.workload import (
    Load,
    delivery_waits,
    missing_in_db,
    pct,
    verify,
    wait_completed,
    wait_row,
    waits_within,
)
from runnerhub.dev.waiting import wait_until_sync

KINDS = (
    "leader-kill",
    "leader-freeze",
    "node-kill",
    "node-freeze",
    "pg-kill",
    "pg-host-loss",
    "pg-replica-kill",
    "redis-kill",
    "etcd-kill",
)
HOLD_S = 5.0  # how long a killed or frozen non-leader node, or etcd member, stays down
HOST_LOSS_S = 30.0


@dataclass
class Fault:
    kind: str
    victim: str
    window: tuple[float, float]  # wall clock: the fault, the cluster whole again
    recovered_s: float  # the fault until the cluster was whole again


def whole(c: LocalCluster) -> None:
    """Wait until nothing is left of the last fault: every part complete and healthy."""
    assert c.pg_cluster is not None and c.redis is not None and c.etcd is not None
    c.etcd.wait_healthy(60)
    c.pg_cluster.wait_healthy(120)
    c.redis.wait_ready(60)
    failover.steady(c)


def node_fault(c: LocalCluster, kind: str) -> str:
    """A non-leader node killed or frozen for HOLD_S, then back."""
    leader, _ = failover.steady(c)
    svc = next(s for s in c.node_services if s.name != leader)
    assert svc.popen is not None
    if kind == "node-kill":
        svc.popen.send_signal(signal.SIGKILL)
        time.sleep(HOLD_S)  # the fault: the node is away this long
        failover.restart(c, svc)
    else:
        svc.popen.send_signal(signal.SIGSTOP)
        time.sleep(HOLD_S)  # the fault: frozen this long
        svc.popen.send_signal(signal.SIGCONT)
    return svc.name


def host_loss(c: LocalCluster) -> str:
    """The primary's machine frozen for HOST_LOSS_S, or until another member takes writes."""
    pg = c.pg_cluster
    assert pg is not None
    t0 = time.monotonic()
    old = pg.wait_primary()
    frozen = chaos.freeze_host(old.pid, str(old.data_dir))
    try:
        wait_until_sync(pg.writable, 90, "a writable primary", interval_s=0.1)
        time.sleep(max(0.0, HOST_LOSS_S - (time.monotonic() - t0)))  # the fault's length
    finally:
        chaos.thaw(frozen)  # Patroni wakes, finds its key gone, and demotes it
    return old.name


def etcd_fault(c: LocalCluster, rng: random.Random) -> str:
    etcd = c.etcd
    assert etcd is not None
    i = rng.randrange(len(etcd))
    etcd.member(i).kill(signal.SIGKILL)
    time.sleep(HOLD_S)  # the fault: the member is away this long
    etcd.member(i).start()
    return f"etcd-{i + 1}"


def inject(c: LocalCluster, kind: str, lease_s: float, rng: random.Random) -> str:
    """One fault of `kind`, until the faulty part is back; the victim's name."""
    pg = c.pg_cluster
    assert pg is not None
    run: dict[str, Callable[[], str]] = {
        "leader-kill": lambda: failover.one_round(c, "sigkill", lease_s).victim,
        "leader-freeze": lambda: failover.one_round(c, "sigstop", lease_s).victim,
        "node-kill": lambda: node_fault(c, kind),
        "node-freeze": lambda: node_fault(c, kind),
        "pg-kill": lambda: dbfailover.one_round(c, pg, "kill").victim,
        "pg-host-loss": lambda: host_loss(c),
        "pg-replica-kill": lambda: dbfailover.standby_round(c, pg).victim,
        "redis-kill": lambda: dbfailover.redis_round(c).victim,
        "etcd-kill": lambda: etcd_fault(c, rng),
    }
    return run[kind]()


def main() -> int:  # long: one campaign, then its report
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1, help="the same seed, the same campaign")
    ap.add_argument("--kinds", default=",".join(KINDS), help="which faults to pick among")
    ap.add_argument("--rate", type=float, default=1.0, help="jobs a second")
    ap.add_argument("--lease", type=float, default=2.0, help="leader lease TTL, seconds")
    ap.add_argument("--quiet-s", type=float, default=20.0, help="the baseline's window")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="run the cluster in this directory and keep it")
    args = ap.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",")]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        ap.error(f"--kinds: unknown {', '.join(unknown)}; known: {', '.join(KINDS)}")
    rng = random.Random(args.seed)
    # Each kind as often as the others (one more for some), in a random order.
    plan = kinds * -(-args.faults // len(kinds))
    rng.shuffle(plan)
    plan = plan[: args.faults]
    faults: list[Fault] = []

    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            d = str(args.keep)
        else:
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="rh-campaign-"))
        os.chmod(d, 0o755)  # PostgreSQL's service user keeps its data inside
        c = LocalCluster.for_faults(Path(d) / "state", args.lease, patroni=True)
        try:
            c.start()
            print(
                f"cluster up: {len(c.node_services)} nodes, Patroni x3, Redis + Sentinel, etcd "
                f"x3; seed {args.seed}, {args.faults} faults, load {args.rate:g} jobs/s",
                flush=True,
            )
            with Load(c.sim_url, args.rate) as load:
                whole(c)
                quiet = time.time()
                time.sleep(args.quiet_s)  # the baseline: the same load, no fault
                baseline = (quiet, time.time())
                for n, kind in enumerate(plan, 1):
                    whole(c)
                    start, t0 = time.time(), time.monotonic()
                    victim = inject(c, kind, args.lease, rng)
                    whole(c)
                    f = Fault(kind, victim, (start, time.time()), time.monotonic() - t0)
                    faults.append(f)
                    print(
                        f"  {n:>3}/{len(plan)} {kind:<16} {victim:<8} whole again in "
                        f"{f.recovered_s:6.1f} s",
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

    print()
    print(
        f"{'delivery answered in (ms)':<34} {'p50':>8} {'p99':>8} {'max':>8}  "
        f"{'count':>6} {'> 1 s':>6}"
    )
    base_waits = waits_within(waits, [baseline])
    base = pct(base_waits, 99)
    print(wait_row("no fault (baseline)", base_waits, base))
    summary: dict[str, Any] = {"seed": args.seed, "plan": plan, "baseline": base_waits}
    for kind in KINDS:
        of = [f for f in faults if f.kind == kind]
        if of:
            during = waits_within(waits, [f.window for f in of])
            summary[kind] = {
                "faults": len(of),
                "recovered_s": [f.recovered_s for f in of],
                "windows": [f.window for f in of],  # wall clock, to place other logs in
            }
            summary[kind]["delivery_wait_s"] = during
            print(wait_row(f"{kind} (x{len(of)})", during, base))
    every = waits_within(waits, [f.window for f in faults])
    print(wait_row(f"every fault (x{len(faults)})", every, base))
    print()
    print(
        f"jobs: {v.jobs}, acknowledged but missing or open in PostgreSQL: {missing}, "
        f"never completed: {len(v.not_completed)}, run twice: {len(v.ran_twice)}, "
        f"provisioned twice (overlapping runners): {len(v.overlapping_runners)}, "
        f"did not succeed: {len(v.failed)}"
    )
    over = sum(w > 1.0 for _, w in waits)
    print(
        f"deliveries: {v.deliveries}, answered other than 2xx: {len(v.deliveries_failed)}, "
        f"answered after more than 1 s: {over}"
    )
    if args.json:
        summary["verdict"] = {
            "jobs": v.jobs,
            "missing": missing,
            "lost": len(v.not_completed),
            "ran_twice": len(v.ran_twice),
            "overlapping": len(v.overlapping_runners),
            "deliveries": v.deliveries,
            "deliveries_failed": len(v.deliveries_failed),
            "over_1s": over,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if v.ok and missing == 0 and over == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
