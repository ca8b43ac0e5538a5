"""Samples every signal now and then, forecasts each (`forecast.Detector`), and makes a
standing prediction visible: a gauge (`runnerhub_predicted_failure_seconds`, for the alert
rule), a log line, an incident (kind `predicted`, with the expected time to failure) and
the `predictions` health check."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog
from prometheus_client import Gauge

from runnerhub.incidents.recorder import IncidentRecorder
from runnerhub.predict.forecast import Detector, ForecastPolicy

log = structlog.get_logger("runnerhub.predict")

PREDICTED = Gauge(
    "runnerhub_predicted_failure_seconds",
    "Seconds until a signal is forecast to reach its limit, while a prediction stands "
    "(the series is absent otherwise).",
    ["signal"],
)
SIGNAL_VALUE = Gauge(
    "runnerhub_predicted_signal_value", "The last sample of each forecast signal.", ["signal"]
)


@dataclass(frozen=True)
class Signal:
    name: str  # e.g. disk:/var/lib/runnerhub, memory, replica_lag:pg-2, db_pool
    sample: Callable[[], float | None]
    policy: ForecastPolicy
    what: str  # the failure, for people: "the disk holding /var/lib/runnerhub fills up"


class PredictionWatch:
    def __init__(
        self,
        node: str,
        signals: list[Signal],
        interval_s: float,
        incidents: IncidentRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.interval_s = interval_s
        self._signals = {s.name: s for s in signals}
        self._detectors = {s.name: Detector(s.name, s.policy) for s in signals}
        self._incidents = incidents
        self._clock = clock
        self.standing: dict[str, float] = {}  # signal -> seconds to failure, as last forecast
        for s in signals:
            self._track(s)

    def _component(self, signal: Signal) -> str:
        return f"predicted:{self.node}:{signal.name}"

    def _track(self, signal: Signal) -> None:
        if self._incidents is not None:  # no prediction yet: the incident tracker's "up"
            self._incidents.started(self._component(signal))

    def add(self, signal: Signal) -> None:
        """A signal found later (a new replica)."""
        if signal.name not in self._signals:
            self._signals[signal.name] = signal
            self._detectors[signal.name] = Detector(signal.name, signal.policy)
            self._track(signal)

    def tick(self) -> None:
        now = self._clock()
        for name, signal in self._signals.items():
            value = signal.sample()
            if value is None:
                continue
            SIGNAL_VALUE.labels(name).set(value)
            eta = self._detectors[name].observe(now, value)
            self._publish(signal, eta)

    def _publish(self, signal: Signal, eta: float | None) -> None:
        name = signal.name
        was = name in self.standing
        if eta is None:
            if was:
                del self.standing[name]
                with contextlib.suppress(KeyError):
                    PREDICTED.remove(name)
                log.info("prediction withdrawn", signal=name)
                self._incident(signal, None)
            return
        self.standing[name] = eta
        PREDICTED.labels(name).set(eta)
        if not was:
            log.warning("failure predicted", signal=name, what=signal.what, in_s=round(eta))
            self._incident(signal, eta)

    def _incident(self, signal: Signal, eta: float | None) -> None:
        if self._incidents is None:
            return
        change = self._incidents.tracker.observe(
            self._component(signal),
            eta is None,
            datetime.now(UTC),
            kind="predicted",
            summary=f"predicted: {signal.what} in about {eta or 0:.0f} s",
            detail={"signal": signal.name, "eta_s": None if eta is None else round(eta, 1)},
            action="alert raised (runnerhub_predicted_failure_seconds); act before it happens",
        )
        if change is not None:
            what, incident = change
            if what == "opened":  # a forecast, not an outage: it begins when it is made
                incident = replace(incident, started_at=incident.detected_at)
            self._incidents.submit(incident)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a broken signal must not end forecasting
                log.exception("forecasting failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
