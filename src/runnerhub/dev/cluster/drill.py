"""`runnerhub dr drill`: a region failover on `runnerhub up --ha --dr`, measured.

Jobs flow from the GitHub simulator throughout. The drill takes region A down entirely
(every process of it, SIGKILL; `up` is told not to start them again), promotes region B
(`runnerhub dr promote`), restarts region B's node as active, and measures:

- **RTO**: fault → first delivery region B answered 2xx (recorded in its database), and
  fault → first runner provisioned for a job queued after the fault;
- **RPO**: deliveries region A acknowledged (2xx at GitHub) that region B's database does
  not hold after promotion; jobs that never ran, or ran twice, once everything settled;
- the replication lag region B reported just before the fault.

It writes a report (JSON and Markdown) under `<state>/drills/`, and records it in the
database of the region active at its end (`GET /api/v1/dr/drills`, the dashboard). It works through
`cluster.json` and pids only, so the same code drives a running `up` (the CLI) and a
cluster object in a benchmark. Interrupted, running it again finishes it (a region already
lost is not lost again; promotion is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from runnerhub.config import load_settings
from runnerhub.dev.cluster.asking import RequestFailed, ask_up
from runnerhub.dev.cluster.process import answers_ok, pid_running
from runnerhub.dev.cluster.region import activate_local_node
from runnerhub.dev.cluster.workload import Load, query, sim_jobs
from runnerhub.dev.waiting import Timeout, wait_until_sync
from runnerhub.dr.promote import promote
from runnerhub.paths import write_private
from runnerhub.store import drills
from runnerhub.store.db import connect

LOST_FLAG = "region-a.lost"  # while it exists, `up` starts no process of region A again
STANDBY_FLAG = "region-a.standby"  # region A came back as region B's standby


class DrillError(Exception):
    pass


@dataclass
class DrillReport:
    started_at: str
    rate: float
    lag_at_fault_s: float | None = None
    streaming_at_fault: bool | None = None
    killed: list[str] = field(default_factory=list)
    promoted_s: float | None = None  # fault → region B's database writable, hooks re-pointed
    era: int | None = None
    # Region B's node restarted as active until it takes deliveries: the floor of any RTO
    # here (the baseline bench/dr.py sets the RTO against).
    node_ready_s: float | None = None
    rto_webhook_s: float | None = None
    rto_runner_s: float | None = None
    acknowledged_by_a: int = 0
    acknowledged_missing_in_b: int = 0
    jobs_before_fault: int = 0
    jobs_after_fault: int = 0
    not_completed: list[int] = field(default_factory=list)
    ran_twice: list[int] = field(default_factory=list)
    failback: str = "not run: region B stays active"
    failback_s: float | None = None  # region A back as region B's standby, streaming
    switch_back_s: float | None = None  # the active role back to region A, B its standby
    # Region A was already down: an interrupted drill run again finishes it; its times
    # count from this run's start, not from the region's loss.
    resumed: bool = False

    @property
    def jobs_lost(self) -> int:
        return len(self.not_completed)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "jobs_lost": self.jobs_lost}

    def markdown(self) -> str:
        def s(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"

        return "\n".join(
            [
                f"# DR drill {self.started_at}",
                "",
                *(
                    [
                        "Resumed: region A was already down (an interrupted drill, run "
                        "again). The times count from this run, not from the region's loss.",
                        "",
                    ]
                    if self.resumed
                    else []
                ),
                "| measure | value |",
                "|---|---|",
                f"| replication lag at the fault | {s(self.lag_at_fault_s)} "
                f"({'streaming' if self.streaming_at_fault else 'not streaming'}) |",
                f"| fault → region B promoted | {s(self.promoted_s)} (era {self.era}) |",
                f"| region B's node restarted active → ready | {s(self.node_ready_s)} |",
                f"| **RTO** fault → first webhook answered by region B | {s(self.rto_webhook_s)} |",
                f"| **RTO** fault → first runner for a job queued after it | "
                f"{s(self.rto_runner_s)} |",
                f"| **RPO** deliveries acknowledged by region A, missing in B | "
                f"{self.acknowledged_missing_in_b} of {self.acknowledged_by_a} |",
                f"| jobs queued before / after the fault | {self.jobs_before_fault} / "
                f"{self.jobs_after_fault} |",
                f"| jobs never run / run twice | {len(self.not_completed)} / "
                f"{len(self.ran_twice)} |",
                f"| processes of region A killed | {len(self.killed)} |",
                f"| failback | {self.failback} ({s(self.failback_s)}) |",
                f"| switch back to region A (planned) | {s(self.switch_back_s)} |",
                "",
            ]
        )


def cluster_info(state_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((state_dir / "cluster.json").read_text())
    if not info.get("region_b"):
        raise DrillError("this cluster has no region B: start it with `runnerhub up --ha --dr`")
    return info


def region_a_pids(info: dict[str, Any]) -> dict[str, int]:
    """Every process of region A (not GitHub's simulator, not region B), with each
    PostgreSQL postmaster beside its Patroni (a machine dies with both)."""
    standby_nodes = set(info["region_b"]["node_urls"])
    pids = {
        name: int(pid)
        for name, pid in info["pids"].items()
        if pid
        and name != "github-sim"
        and not name.startswith("region-b-")
        and name not in standby_nodes
    }
    for name, member in (info.get("patroni") or {}).items():
        pidfile = Path(member["data_dir"]) / "postmaster.pid"
        try:
            pids[f"postgres-{name}"] = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pids


def lose_region_a(state_dir: Path, info: dict[str, Any]) -> list[str]:
    """SIGKILL every process of region A; `up` is told first not to start them again."""
    write_private(state_dir / LOST_FLAG, datetime.now(UTC).isoformat())
    pids = region_a_pids(info)
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    wait_until_sync(lambda: not any(pid_running(p) for p in pids.values()), 15, "region A to die")
    return sorted(pids)


def _standby_view(url: str, token: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(
            f"{url}/api/v1/cluster", headers={"Authorization": f"Bearer {token}"}, timeout=3
        )
        region = r.json().get("region") if r.status_code == 200 else None
        return dict(region.get("standby") or {}) if isinstance(region, dict) else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def run_drill(
    state_dir: Path,
    rate: float = 1.0,
    before_s: float = 10.0,
    after_s: float = 20.0,
    settle_s: float = 120.0,
    log: Callable[[str], None] = lambda line: None,
    failback: Callable[[], None] | None = None,
    switch_back: Callable[[], None] | None = None,
) -> DrillReport:
    """The whole drill; the report is written under `<state>/drills/` too. `failback`
    brings region A back as region B's standby at the end (`rejoin_region_a`), then
    `switch_back` moves the active role back to it: the drill ends where it began."""
    info = cluster_info(state_dir)
    (b_name, b_url), *_ = info["region_b"]["node_urls"].items()
    b_config = Path(info["config_files"][b_name])
    b_dsn = info["region_b"]["database_dsn"]
    report = DrillReport(datetime.now(UTC).isoformat(timespec="seconds"), rate)
    with Load(info["github_sim_url"], rate) as load:
        wait_until_sync(lambda: len(load.ids) >= rate * before_s, before_s * 3, "jobs before")
        view = _standby_view(b_url, info["read_token"])
        if view:
            report.lag_at_fault_s = view.get("replay_lag_s")
            report.streaming_at_fault = view.get("streaming")
        before = len(load.ids)
        fault = time.time()
        report.resumed = _lost(state_dir)
        report.killed = [] if report.resumed else lose_region_a(state_dir, info)
        log(f"region A down: {len(report.killed)} processes killed")
        webhook_url = f"{b_url}/webhooks/github"
        promoted = asyncio.run(promote(load_settings(b_config), webhook_url))
        report.promoted_s, report.era = round(time.time() - fault, 2), promoted.era
        log(f"region B promoted in {report.promoted_s:.1f} s (era {promoted.era})")
        activated = time.monotonic()
        b_pid = int(info["pids"].get(b_name) or 0)
        activate_local_node(b_config, b_pid, info["region_b"].get("backup"))
        wait_until_sync(
            lambda: answers_ok(f"{b_url}/readyz"), 90, f"{b_name} to take deliveries", 0.1
        )
        report.node_ready_s = round(time.monotonic() - activated, 2)
        wait_until_sync(
            lambda: time.time() >= fault + after_s and len(load.ids) > before,
            after_s * 3,
            "jobs after the fault",
        )
        ids = list(load.ids)
    report.jobs_before_fault, report.jobs_after_fault = before, len(ids) - before
    _settle(info["github_sim_url"], ids, settle_s, report)
    _measure(info, b_dsn, fault, ids[before:], report)
    if failback is not None:
        report.failback_s = _timed(failback)
        report.failback = "region A rejoined as region B's standby; region B stays active"
        log(f"region A rejoined as a standby in {report.failback_s:.1f} s")
    if failback is not None and switch_back is not None:
        report.switch_back_s = _timed(switch_back)
        report.failback = "region A rejoined as region B's standby, then active again"
        log(f"region A active again, region B its standby, in {report.switch_back_s:.1f} s")
    _write(state_dir, report)
    active_dsn = info["database_dsn"] if report.switch_back_s is not None else b_dsn
    try:
        asyncio.run(_record(active_dsn, report))
    except psycopg.Error as exc:  # the files above still hold it
        log(f"the drill's report was not recorded in the database: {exc}")
    return report


async def _record(dsn: str, report: DrillReport) -> None:
    async with await connect(dsn, autocommit=True) as conn:
        await drills.record(conn, report.as_dict())


def request_failback(state_dir: Path, action: str = "rejoin", timeout_s: float = 300.0) -> None:
    """Ask the running `up` to bring region A back as region B's standby (`rejoin`) or to
    move the active role back to it (`switch_back`), and wait."""
    try:
        ask_up(state_dir, action, "rejoin region A", timeout_s)
    except RequestFailed as exc:
        raise DrillError(f"region A did not rejoin: {exc}") from None


def _timed(step: Callable[[], None]) -> float:
    began = time.monotonic()
    step()
    return round(time.monotonic() - began, 1)


def _lost(state_dir: Path) -> bool:
    return (state_dir / LOST_FLAG).exists()


def _settle(sim_url: str, ids: list[int], settle_s: float, report: DrillReport) -> None:
    def done() -> bool:
        jobs = sim_jobs(sim_url)
        return all(jobs[i]["status"] == "completed" for i in ids)

    with contextlib.suppress(Timeout):  # reported below: a drill reports what it saw
        wait_until_sync(done, settle_s, "every job to complete", interval_s=0.5)
    jobs = sim_jobs(sim_url)
    report.not_completed = [i for i in ids if jobs[i]["status"] != "completed"]
    report.ran_twice = [i for i in ids if len(jobs[i]["executions"]) > 1]


def _measure(
    info: dict[str, Any], b_dsn: str, fault: float, after: list[int], report: DrillReport
) -> None:
    def seconds_to(sql: str, arg: Any) -> float | None:  # fault → the first such row
        t = query(b_dsn, sql, arg)[0]["t"]
        return round(t.timestamp() - fault, 2) if t else None

    report.rto_webhook_s = seconds_to(
        "SELECT min(received_at) AS t FROM webhook_deliveries WHERE received_at >= %s",
        datetime.fromtimestamp(fault, UTC),
    )
    report.rto_runner_s = seconds_to(
        "SELECT min(created_at) AS t FROM runners WHERE provisioned_for = ANY(%s)", after
    )
    r = httpx.get(f"{info['github_sim_url']}/_sim/deliveries", timeout=10)
    r.raise_for_status()
    acked = [
        d["guid"]
        for d in r.json()["deliveries"]
        if d["status"] == "OK" and d["url"] == info["webhook_url"]
    ]
    held = {
        row["delivery_guid"]
        for row in query(
            b_dsn,
            "SELECT delivery_guid FROM webhook_deliveries WHERE delivery_guid = ANY(%s)",
            acked,
        )
    }
    report.acknowledged_by_a = len(acked)
    report.acknowledged_missing_in_b = len(set(acked) - held)


def _write(state_dir: Path, report: DrillReport) -> None:
    out = state_dir / "drills"
    out.mkdir(mode=0o700, exist_ok=True)
    stem = out / f"drill-{report.started_at.replace(':', '')}"
    write_private(stem.with_suffix(".json"), json.dumps(report.as_dict(), indent=2))
    write_private(stem.with_suffix(".md"), report.markdown())
