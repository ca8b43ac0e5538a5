#!/usr/bin/env python3
"""Benchmark: the load balancers' virtual IP moving under load (keepalived, VRRP).

    .venv/bin/python bench/vip_failover.py [--rounds 5] [--faults haproxy,keepalived]
                                           [--advert-int 0.5] [--json out.json]

Builds the lab of tests/integration/test_vrrp.py in network namespaces (needs root): two
HAProxy hosts, each with keepalived, sharing one VIP; an app standing in for the RunnerHub
nodes; a client standing in for GitHub (~20 deliveries a second to the VIP, a failed one
sent again after 1 s, up to 3 times). Each round kills, with SIGKILL, the holder's HAProxy
or its keepalived at a random point of keepalived's check interval, measures, then starts
it again; the VIP then stays where it went (nopreempt), so rounds alternate between hosts.

Per fault it prints p50 and max of: the fault → the VIP on the other host's interface;
→ the first delivery answered through that host; the longest time with no delivery
answered. The baseline is the same load with no fault, in rounds between the fault rounds
of this run; the ratio is the fault's p50 longest gap over the baseline's. Then the totals:
deliveries, lost (never reached the app), duplicates, retried, gave up.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from runnerhub.dev.cluster import netns
from runnerhub.dev.cluster.workload import pct

# The lab lives beside the test that checks it; one copy for both.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.test_vrrp import ADVERT_INT_S, TARGET_S, Lab, Round


def row(label: str, rounds: list[Round], base_gap: float) -> str:
    def col(values: list[float]) -> str:
        if not values:
            return f"{'-':>7} {'-':>7}"
        return f"{pct(values, 50):7.2f} {max(values):7.2f}"

    moved = [r.vip_moved_s for r in rounds if r.vip_moved_s is not None]
    first = [r.first_answer_s for r in rounds if r.first_answer_s is not None]
    gaps = [r.longest_gap_s for r in rounds]
    ratio = pct(gaps, 50) / base_gap if base_gap else float("nan")
    return f"{label:<12} {len(rounds):>6}  {col(moved)}  {col(first)}  {col(gaps)}  {ratio:7.1f}x"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per fault (and baseline)")
    ap.add_argument("--faults", default="haproxy,keepalived")
    ap.add_argument("--advert-int", type=float, default=ADVERT_INT_S, help="VRRP, seconds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    faults = [f.strip() for f in args.faults.split(",")]
    if bad := set(faults) - {"haproxy", "keepalived"}:
        ap.error(f"unknown faults: {sorted(bad)}")
    if why := netns.unavailable():
        print(f"cannot run: {why}", file=sys.stderr)
        return 2

    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="rh-vip-") as d, Lab(Path(d), args.advert_int) as lab:
        print(
            f"lab up: VIP {lab.vip.address} on {lab.holder().name}, advert_int "
            f"{args.advert_int:g} s, target {TARGET_S:g} s"
        )
        for n in range(args.rounds):
            for fault in [None, *faults]:  # the baseline interleaved with the faults
                # A random lead, so the fault lands anywhere within keepalived's 1 s
                # check interval rather than at the same point every round.
                r = lab.round(fault, lead_s=random.uniform(0, 1))
                rounds.append(r)
                print(f"  #{n + 1} {r.line()}", flush=True)
                lab.restore(r)

    base = [r for r in rounds if r.fault is None]
    base_gap = pct([r.longest_gap_s for r in base], 50)
    print()
    print(
        f"{'fault':<12} {'rounds':>6}  {'VIP moved (s)':>15}  {'first answer (s)':>15}  "
        f"{'longest gap (s)':>15}  {'vs base':>8}"
    )
    print(f"{'':<12} {'':>6}  {'p50':>7} {'max':>7}  {'p50':>7} {'max':>7}  {'p50':>7} {'max':>7}")
    print(row("no fault", base, base_gap))
    for fault in faults:
        print(row(fault, [r for r in rounds if r.fault == fault], base_gap))
    print()
    total = {
        k: sum(getattr(r, k) for r in rounds)
        for k in ("deliveries", "lost", "duplicates", "retried", "gave_up")
    }
    print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in total.items()))
    worst = max((r.vip_moved_s or 0.0) for r in rounds)
    print(f"worst VIP move {worst:.2f} s against the {TARGET_S:g} s target")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rounds], indent=2))
    return 0 if total["lost"] == 0 and worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
