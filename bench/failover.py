#!/usr/bin/env python3
"""Benchmark: leader failover under load on the local HA cluster.

    .venv/bin/python bench/failover.py [--rounds 20] [--faults sigkill,sigterm,sigstop]
                                       [--rate 5] [--lease 2]

Starts `runnerhub up --ha` without the demo (3 etcd members, PostgreSQL, HAProxy, 3 nodes,
the GitHub simulator and its runners), keeps a steady job load flowing through HAProxy, and
injects each fault repeatedly into whichever node leads: SIGKILL, SIGTERM, or SIGSTOP for
twice the lease followed by SIGCONT. A killed or stopped node is restarted between rounds.

Per fault it prints the time from the fault to a new leader being elected and to the new
leader's first runner provisioning (p50, p99, max), how long GitHub's deliveries waited for
their answer from the fault until the node was back (beside a quiet window before the first
fault, the baseline), and at the end the deliveries answered
other than 2xx, jobs lost (never completed), and jobs provisioned twice or run twice. The
baselines printed beside them are the plan's 30 s re-election target and the 15 s lease of
Kubernetes-style controllers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runnerhub.dev.cluster.local import LocalCluster, Service
from runnerhub.dev.cluster.workload import (
    Load,
    delivery_waits,
    pct,
    query,
    verify,
    wait_completed,
    wait_row,
    waits_within,
)
from runnerhub.dev.waiting import wait_until_sync

PLAN_TARGET_S = 30.0
K8S_LEASE_S = 15.0


@dataclass
class Round:
    fault: str
    victim: str
    elected_s: float
    first_provision_s: float | None
    window: tuple[float, float] = (0.0, 0.0)  # wall clock: the fault, the node back


@dataclass
class Results:
    rounds: list[Round] = field(default_factory=list)

    def of(self, fault: str) -> list[Round]:
        return [r for r in self.rounds if r.fault == fault]


def cluster_info(c: LocalCluster) -> dict[str, Any]:
    r = httpx.get(
        f"{c.api_url}/api/v1/cluster",
        timeout=3,
        headers={"Authorization": f"Bearer {c.secrets.admin_token}"},
    )
    r.raise_for_status()
    return dict(r.json())


def steady(c: LocalCluster) -> tuple[str, int]:
    """Wait for a leader and every node healthy; return the leader and its epoch."""

    def ok() -> tuple[str, int] | None:
        try:
            info = cluster_info(c)
        except httpx.HTTPError:
            return None
        healthy = [n for n in info["nodes"] if n["healthy"]]
        if info["leader"] and len(healthy) == len(c.node_services):
            return str(info["leader"]), int(info["epoch"])
        return None

    return wait_until_sync(ok, 60, "a steady cluster", interval_s=0.1)


def restart(c: LocalCluster, svc: Service) -> None:
    svc.stop()
    svc.start()
    url = c.node_urls[svc.name]
    wait_until_sync(lambda: _ready(url), 60, f"{svc.name} to be ready again", interval_s=0.1)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def one_round(c: LocalCluster, fault: str, lease_s: float) -> Round:
    leader, epoch = steady(c)
    svc = next(s for s in c.node_services if s.name == leader)
    assert svc.popen is not None
    fault_wall = time.time()
    t0 = time.monotonic()
    sig = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigstop": signal.SIGSTOP}
    svc.popen.send_signal(sig[fault])

    def elected() -> str | None:
        """The new leader, once there is one (an answer from a frozen node may time out:
        HAProxy replays the call only after its own 4 s)."""
        try:
            info = cluster_info(c)
        except httpx.HTTPError:
            return None
        ok = bool(info["leader"]) and (info["epoch"] or 0) > epoch
        return str(info["leader"]) if ok else None

    new = wait_until_sync(elected, 60, "a new leader", interval_s=0.02)
    elected_s = time.monotonic() - t0

    def provisioned() -> float | None:
        rows = query(
            c.dsn,
            "SELECT extract(epoch FROM min(at)) AS t FROM events "
            "WHERE kind = 'runner.requested' AND node = %s "
            "AND at > to_timestamp(%s)",
            new,
            fault_wall,
        )
        t = rows[0]["t"]
        return float(t) - fault_wall if t is not None else None

    try:
        first = wait_until_sync(
            provisioned, 30, "the new leader's first provisioning", interval_s=0.05
        )
    except AssertionError:
        first = None
    if fault == "sigstop":
        remaining = 2 * lease_s - (time.monotonic() - t0)
        if remaining > 0:
            time.sleep(remaining)  # the fault: frozen for twice the lease
        svc.popen.send_signal(signal.SIGCONT)
    else:
        restart(c, svc)
    return Round(fault, leader, elected_s, first, (fault_wall, time.time()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--faults", default="sigkill,sigterm,sigstop")
    ap.add_argument(
        "--rate",
        type=float,
        default=2.0,
        help="jobs a second (runner processes are Python: ~2/s is what 2 cores sustain)",
    )
    ap.add_argument("--lease", type=float, default=2.0, help="leader lease TTL, seconds")
    ap.add_argument("--quiet-s", type=float, default=20.0, help="the baseline's window")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--keep", type=Path, help="run the cluster in this directory and keep it (its logs)"
    )
    args = ap.parse_args()
    faults = [f.strip() for f in args.faults.split(",")]
    results = Results()

    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            d = str(args.keep)
        else:
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="rh-failover-"))
        os.chmod(d, 0o755)  # PostgreSQL's service user keeps its data inside
        c = LocalCluster.for_faults(Path(d) / "state", args.lease)
        try:
            c.start()
            print(
                f"cluster up: {len(c.node_services)} nodes behind HAProxy {c.api_url}, "
                f"lease {args.lease:g} s, load {args.rate:g} jobs/s"
            )
            with Load(c.sim_url, args.rate) as load:
                quiet = time.time()
                time.sleep(args.quiet_s)  # the baseline: the same load, no fault
                baseline = (quiet, time.time())
                for fault in faults:
                    for n in range(args.rounds):
                        r = one_round(c, fault, args.lease)
                        results.rounds.append(r)
                        first = f"{r.first_provision_s:.2f}" if r.first_provision_s else "-"
                        print(
                            f"  {fault} #{n + 1:>2}: leader {r.victim} → elected in "
                            f"{r.elected_s:.2f} s, first provisioning {first} s",
                            flush=True,
                        )
            ids = list(load.ids)

            wait_completed(c.sim_url, ids, 180)
            v = verify(c.sim_url, c.dsn, ids)
            waits = delivery_waits(c.sim_url)
        finally:
            c.stop()

    print()
    print(
        f"{'fault':<8} {'rounds':>6}  {'elected p50/p99/max (s)':>26}  "
        f"{'first provisioning p50/p99/max (s)':>36}"
    )
    summary: dict[str, Any] = {}
    for fault in faults:
        rs = results.of(fault)
        el = [r.elected_s for r in rs]
        fp = [r.first_provision_s for r in rs if r.first_provision_s is not None]
        summary[fault] = {"rounds": len(rs), "elected": el, "first_provisioning": fp}
        print(
            f"{fault:<8} {len(rs):>6}  {pct(el, 50):8.2f} {pct(el, 99):8.2f} {max(el):8.2f}  "
            f"{pct(fp, 50):11.2f} {pct(fp, 99):11.2f} {max(fp, default=float('nan')):11.2f}"
            f"{'' if len(fp) == len(rs) else f'  ({len(rs) - len(fp)} rounds unmeasured)'}"
        )
    print()
    print(
        f"{'delivery answered in (ms)':<34} {'p50':>8} {'p99':>8} {'max':>8}  "
        f"{'count':>6} {'> 1 s':>6}"
    )
    base_waits = waits_within(waits, [baseline])
    print(wait_row("no fault (baseline)", base_waits, pct(base_waits, 99)))
    for fault in faults:
        during = waits_within(waits, [r.window for r in results.of(fault)])
        summary[fault]["delivery_wait_s"] = during
        print(wait_row(f"leader {fault}", during, pct(base_waits, 99)))
    worst = max((r.first_provision_s or 0.0) for r in results.rounds)
    print()
    print(
        f"jobs: {v.jobs}, lost (never completed): {len(v.not_completed)}, run twice: "
        f"{len(v.ran_twice)}, provisioned twice (overlapping runners): "
        f"{len(v.overlapping_runners)}, failed: {len(v.failed)}"
    )
    print(f"deliveries: {v.deliveries}, answered other than 2xx: {len(v.deliveries_failed)}")
    print(
        f"worst fault→first provisioning {worst:.2f} s: {PLAN_TARGET_S / worst:.0f}x inside "
        f"the plan's {PLAN_TARGET_S:g} s, {K8S_LEASE_S / worst:.1f}x shorter than a "
        f"{K8S_LEASE_S:g} s controller lease alone"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary["verdict"] = {
            "jobs": v.jobs,
            "lost": len(v.not_completed),
            "ran_twice": len(v.ran_twice),
            "overlapping": len(v.overlapping_runners),
            "deliveries": v.deliveries,
            "deliveries_failed": len(v.deliveries_failed),
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
