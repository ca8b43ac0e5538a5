"""Forecasting on a real process: a writer filling a directory is predicted to reach the
directory's limit before it does — as a gauge, a health finding and an incident with the
expected time to failure — and the prediction is withdrawn once the writer stops."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from prometheus_client import REGISTRY

from runnerhub.dev.waiting import wait_until
from runnerhub.health import checks
from runnerhub.health.monitor import CheckSpec, HealthMonitor
from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.predict.forecast import ForecastPolicy
from runnerhub.predict.watch import PredictionWatch, Signal
from runnerhub.store import incidents as incident_store
from runnerhub.store.db import Pool

LIMIT = 40 * 1024 * 1024
WRITER = """
import pathlib, sys, time
d = pathlib.Path(sys.argv[1])
for n in range(100000):
    (d / f"f{n}").write_bytes(b"\\0" * 64 * 1024)  # 64 KiB every 10 ms: 6.4 MB/s
    time.sleep(0.01)
"""


def size(directory: Path) -> float:
    return float(sum(e.stat().st_size for e in os.scandir(directory)))


async def test_a_filling_directory_is_predicted_before_it_is_full(db: Pool, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    recorder = IncidentRecorder(db, "node-test", is_leader=lambda: True)
    policy = ForecastPolicy(limit=LIMIT, horizon_s=60, window_s=2, min_span_s=1, min_samples=10)
    watch = PredictionWatch(
        "node-test",
        [Signal("dir", lambda: size(directory), policy, "the spool directory fills up")],
        interval_s=0.05,
        incidents=recorder,
    )
    health = HealthMonitor(
        [CheckSpec("predictions", checks.predictions(lambda: watch.standing), 0.05, 1)]
    )
    stop = asyncio.Event()
    runs = (watch.run(stop), recorder.run(stop), health.run(stop))
    tasks = [asyncio.create_task(r) for r in runs]
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(directory))
    try:
        await wait_until(lambda: "dir" in watch.standing, 10, "a prediction")
        at_prediction = size(directory)
        assert at_prediction < LIMIT  # predicted before the failure
        eta = watch.standing["dir"]
        assert 0 < eta < 60
        assert (
            REGISTRY.get_sample_value("runnerhub_predicted_failure_seconds", {"signal": "dir"})
            == eta
            or "dir" in watch.standing
        )

        async def degraded() -> bool:
            r = health.result("predictions")
            return r is not None and r.status == "degraded" and "dir" in (r.message or "")

        await wait_until(degraded, 5, "/health to name the prediction")

        async def recorded() -> list[incident_store.IncidentRow]:
            async with db.connection() as conn:
                return await incident_store.list_incidents(conn, "predicted", False, 10, None)

        [incident] = await wait_until(recorded, 5, "the prediction as an incident")
        assert incident.component == "predicted:node-test:dir"
        assert incident.kind == "predicted" and incident.recovered_at is None
        assert "the spool directory fills up in about" in str(incident.summary)

        writer.kill()  # the writer stops: the trend is gone, and so is the prediction
        await writer.wait()
        await wait_until(lambda: "dir" not in watch.standing, 10, "the prediction withdrawn")

        async def closed() -> bool:
            rows = await recorded()
            return bool(rows) and rows[0].recovered_at is not None

        await wait_until(closed, 5, "the incident closed")
    finally:
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
        stop.set()
        await asyncio.gather(*tasks)
