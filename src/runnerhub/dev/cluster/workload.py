"""Drive a local cluster with jobs and check what became of them: shared by the chaos tests,
the failover benchmark and the demo."""

from __future__ import annotations

import contextlib
import itertools
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from runnerhub.dev.waiting import wait_until_sync

LINUX = ["self-hosted", "linux", "x64"]


class Load:
    """Enqueue jobs on the GitHub simulator at a steady rate until stopped (a thread)."""

    def __init__(
        self,
        sim_url: str,
        rate: float,
        labels: Sequence[str] = LINUX,
        duration_s: float = 0.2,
        repository: str = "acme/web",
    ) -> None:
        self.sim_url = sim_url
        self.rate = rate
        self.body = {
            "repository": repository,
            "labels": list(labels),
            "duration_s": duration_s,
            "count": 1,
        }
        self.ids: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="load")

    def _run(self) -> None:
        with httpx.Client(base_url=self.sim_url, timeout=10) as sim:
            start = time.monotonic()
            for n in itertools.count(1):
                if self._stop.is_set():
                    return
                try:
                    r = sim.post("/_sim/jobs", json=self.body)
                    r.raise_for_status()
                    self.ids += [j["id"] for j in r.json()["jobs"]]
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))
                self._stop.wait(max(0.0, start + n / self.rate - time.monotonic()))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def sim_jobs(sim_url: str) -> dict[int, dict[str, Any]]:
    r = httpx.get(f"{sim_url}/_sim/jobs", timeout=10)
    r.raise_for_status()
    return {j["id"]: j for j in r.json()["jobs"]}


def query(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(sql.encode(), args).fetchall()


@dataclass
class Verdict:
    jobs: int
    not_completed: list[int] = field(default_factory=list)
    ran_twice: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    overlapping_runners: list[int] = field(default_factory=list)
    names_reused: list[str] = field(default_factory=list)
    deliveries: int = 0
    deliveries_failed: list[dict[str, Any]] = field(default_factory=list)
    # How long each delivery waited for its answer (seconds, as GitHub's simulator saw it).
    delivery_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.not_completed
            or self.ran_twice
            or self.failed
            or self.overlapping_runners
            or self.names_reused
            or self.deliveries_failed
        )


def verify(sim_url: str, dsn: str, ids: Sequence[int]) -> Verdict:
    """Every job completed once with success; no job had two runners of its own at a time
    (I5); no runner name ran two jobs; the simulator got a 2xx for every delivery."""
    jobs = sim_jobs(sim_url)
    v = Verdict(jobs=len(ids))
    for i in ids:
        j = jobs[i]
        if j["status"] != "completed":
            v.not_completed.append(i)
        elif j["conclusion"] != "success":
            v.failed.append(i)
        if len(j["executions"]) > 1:
            v.ran_twice.append(i)
    rows = query(
        dsn,
        "SELECT provisioned_for AS job, generation, created_at, busy_at, "
        "exited_at, removed_at FROM runners WHERE provisioned_for = ANY(%s) "
        "ORDER BY provisioned_for, generation",
        list(ids),
    )
    for prev, nxt in itertools.pairwise(rows):
        ended = [t for t in (prev["busy_at"], prev["exited_at"], prev["removed_at"]) if t]
        if prev["job"] == nxt["job"] and not (ended and min(ended) <= nxt["created_at"]):
            v.overlapping_runners.append(int(nxt["job"]))
    names = [name for j in jobs.values() for name in j["executions"]]
    v.names_reused = sorted({n for n in names if names.count(n) > 1})
    r = httpx.get(f"{sim_url}/_sim/deliveries", timeout=10)
    r.raise_for_status()
    deliveries = r.json()["deliveries"]
    # Only the deliveries about these jobs: a cluster shared by several tests keeps the
    # record of earlier ones, which are not this check's to judge.
    wanted = set(ids)
    mine = [d for d in deliveries if _job_of(d) in wanted]
    v.deliveries = len(mine)
    v.deliveries_failed = [d for d in mine if d["status"] != "OK"]
    v.delivery_s = sorted(float(d["duration"]) for d in mine)
    return v


def pct(values: Sequence[float], p: float) -> float:
    """The `p`th percentile of `values` (NaN for none)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def percentiles(values: Sequence[float]) -> str:
    """p50, p99 and the slowest of `values` (seconds), for people."""
    if not values:
        return "none"
    p50, p99 = pct(values, 50) * 1000, pct(values, 99) * 1000
    return f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(values):.2f} s"


def _job_of(delivery: dict[str, Any]) -> int | None:
    job = ((delivery.get("request") or {}).get("payload") or {}).get("workflow_job") or {}
    return job.get("id")


def delivery_waits(sim_url: str) -> list[tuple[float, float]]:
    """(when it was sent, seconds to its answer) of every delivery GitHub's simulator made
    (benches). Not `delivered_at`: GitHub's shape gives whole seconds, which moved a
    delivery made early in a fault window out of it."""
    r = httpx.get(f"{sim_url}/_sim/deliveries", timeout=30)
    r.raise_for_status()
    return [(float(d["delivered_at_s"]), float(d["duration"])) for d in r.json()["deliveries"]]


def waits_within(
    waits: list[tuple[float, float]], windows: list[tuple[float, float]]
) -> list[float]:
    """The waits of the deliveries made within one of `windows` (wall clock)."""
    return [w for t, w in waits if any(a <= t <= b for a, b in windows)]


def wait_row(label: str, waits: list[float], base: float) -> str:
    """A bench's table row: p50/p99/max in ms, how many, how many over 1 s, p99 / `base`."""
    slow = sum(w > 1.0 for w in waits)
    p99 = pct(waits, 99)
    return (
        f"{label:<34} {pct(waits, 50) * 1000:8.0f} {p99 * 1000:8.0f} "
        f"{max(waits, default=float('nan')) * 1000:8.0f}  {len(waits):>6} {slow:>6}  "
        f"p99 {p99 / base:.1f}x the baseline"
    )


def wait_completed(sim_url: str, ids: Sequence[int], timeout_s: float) -> None:
    """Until the simulator has every job in `ids` completed, or `timeout_s` (benches: what
    never completes counts as lost, so running out of time is no error here)."""

    def settled() -> bool:
        jobs = sim_jobs(sim_url)
        return all(jobs[i]["status"] == "completed" for i in ids)

    with contextlib.suppress(AssertionError):
        wait_until_sync(settled, timeout_s, "every job to complete", interval_s=0.5)


def missing_in_db(dsn: str, ids: Sequence[int], timeout_s: float = 60.0) -> int:
    """Jobs in `ids` PostgreSQL does not have completed. The last completions may still wait
    in a node's spool (acknowledged, durable): the drainers get `timeout_s` first."""

    def recorded() -> int:
        sql = "SELECT count(*) AS n FROM jobs WHERE id = ANY(%s) AND state = 'completed'"
        return int(query(dsn, sql, list(ids))[0]["n"])

    with contextlib.suppress(AssertionError):
        wait_until_sync(lambda: recorded() == len(ids), timeout_s, "PostgreSQL to catch up")
    return len(ids) - recorded()
