"""Health results add up as documented, and the monitor never waits on a check: a check
that hangs is reported failing after its own timeout and is not started again while it
hangs; a result nobody refreshed turns degraded."""

from __future__ import annotations

import asyncio
import time

import pytest

from runnerhub.dev.waiting import wait_until
from runnerhub.health.model import CheckResult, Outcome, aged, overall
from runnerhub.health.monitor import CheckSpec, HealthMonitor


def result(name: str, status: str, critical: bool = False, at: float = 0.0) -> CheckResult:
    return CheckResult(name, status, critical, at, 0.0, 1.0)  # type: ignore[arg-type]


def test_overall_is_failing_only_for_a_critical_failure() -> None:
    assert overall([result("a", "ok"), result("b", "ok", True)]) == "ok"
    assert overall([result("a", "failing"), result("b", "ok", True)]) == "degraded"
    assert overall([result("a", "degraded"), result("b", "ok", True)]) == "degraded"
    assert overall([result("a", "ok"), result("b", "failing", True)]) == "failing"


def test_an_old_result_turns_degraded_but_a_failure_stays_failing() -> None:
    ok = result("db", "ok", at=100.0)
    assert aged(ok, now=104.0, max_age_s=5) is ok
    old = aged(ok, now=106.0, max_age_s=5)
    assert old.status == "degraded" and "not checked for 6.0 s" in (old.message or "")
    assert aged(result("db", "failing", at=100.0), 200.0, 5).status == "failing"


class Hanging:
    """A check that never answers until released, counting how often it was started."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self) -> Outcome:
        self.started += 1
        await self.release.wait()
        return Outcome("ok")


async def test_a_hanging_check_fails_after_its_timeout_and_is_not_piled_up() -> None:
    hang = Hanging()
    monitor = HealthMonitor([CheckSpec("db", hang, interval_s=0.01, timeout_s=0.05, critical=True)])
    began = time.monotonic()
    first = await monitor.run_once("db")
    assert time.monotonic() - began < 0.5
    assert first.status == "failing" and first.latency_ms is None
    assert first.message == "no answer within 0.05 s"
    again = await monitor.run_once("db")  # still hanging: not started a second time
    assert hang.started == 1 and again.status == "failing"
    assert (again.message or "").startswith("no answer for")
    assert monitor.snapshot().status == "failing"
    hang.release.set()  # the stuck call ends; the next round starts a fresh one

    async def healthy() -> bool:
        return (await monitor.run_once("db")).status == "ok"

    await wait_until(healthy, 5, "the check to answer again")
    assert hang.started == 2
    assert monitor.snapshot().status == "ok"


async def test_a_check_that_raises_is_failing_with_the_reason() -> None:
    async def broken() -> Outcome:
        raise ConnectionRefusedError("connection refused")

    monitor = HealthMonitor([CheckSpec("etcd", broken, interval_s=1, timeout_s=1)])
    r = await monitor.run_once("etcd")
    assert r.status == "failing"
    assert r.message == "ConnectionRefusedError: connection refused"
    assert monitor.snapshot().status == "degraded"  # not critical


async def test_the_background_loop_refreshes_results_and_snapshot_awaits_nothing() -> None:
    calls = 0

    async def counting() -> Outcome:
        nonlocal calls
        calls += 1
        return Outcome("ok", {"n": calls})

    monitor = HealthMonitor([CheckSpec("spool", counting, interval_s=0.01, timeout_s=1)])
    assert monitor.snapshot().status == "degraded"  # not checked yet
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    await wait_until(lambda: calls >= 3, 5, "three rounds")
    stop.set()
    await task
    report = monitor.snapshot()
    assert calls >= 3 and report.status == "ok"
    assert report.as_json()["checks"]["spool"]["detail"]["n"] >= 3


def test_check_names_must_be_unique() -> None:
    async def ok() -> Outcome:
        return Outcome("ok")

    with pytest.raises(ValueError, match="unique"):
        HealthMonitor([CheckSpec("a", ok, 1, 1), CheckSpec("a", ok, 1, 1)])
