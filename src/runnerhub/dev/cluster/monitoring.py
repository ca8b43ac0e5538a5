"""Prometheus and Alertmanager for a local cluster or a test, from Debian's binaries (`make
deps` puts them in the virtualenv), configured by `render/alerting.py` exactly as a
production installation is, each on a free loopback port in its own directory."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.process import ManagedProcess, answers_ok, find_binary, wait_ready
from runnerhub.render.alerting import (
    RULES_FILE,
    SHIPPED_RULES,
    AlertRouting,
    ScrapeTarget,
    alertmanager_config,
    dump,
    prometheus_config,
)

RULES = SHIPPED_RULES
TEMPLATES = Path("/usr/share/prometheus/alertmanager")
INSTALL = "make deps (it takes the binary from Debian's package)"


class MonitoringError(RuntimeError):
    pass


def _binary(name: str) -> Path:
    return find_binary(name, MonitoringError, INSTALL, first=[Path(sys.executable).parent / name])


@dataclass
class LocalAlertmanager(ManagedProcess):
    root: Path
    routing: AlertRouting
    name: str = "alertmanager"
    port: int = field(default_factory=free_port)
    popen: Any = None

    def __post_init__(self) -> None:
        self.log_file = self.root / "alertmanager.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        if not (TEMPLATES / "default.tmpl").is_file():  # Debian's build reads them from there
            raise MonitoringError(f"{TEMPLATES}/default.tmpl not found: {INSTALL}")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "alertmanager.yml"
        config.write_text(dump(alertmanager_config(self.routing)))
        self.spawn(
            [
                str(_binary("alertmanager")),
                f"--config.file={config}",
                f"--storage.path={self.root / 'data'}",
                f"--web.listen-address={self.address}",
                "--cluster.listen-address=",  # one instance: no gossip port to collide on
            ]
        )
        wait_ready(
            lambda: answers_ok(f"http://{self.address}/-/ready"),
            timeout_s,
            "Alertmanager to be ready",
            error=MonitoringError,
            watch=[self],
        )

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts it holds now (firing, silenced or inhibited)."""
        answer = httpx.get(f"http://{self.address}/api/v2/alerts", timeout=5)
        answer.raise_for_status()
        alerts: list[dict[str, Any]] = answer.json()
        return alerts


@dataclass
class LocalPrometheus(ManagedProcess):
    root: Path
    targets: Sequence[ScrapeTarget]
    alertmanagers: Sequence[str]
    interval_s: float = 1.0  # scrapes and evaluations: a test waits on them
    name: str = "prometheus"
    port: int = field(default_factory=free_port)
    popen: Any = None

    def __post_init__(self) -> None:
        self.log_file = self.root / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copy(RULES, self.root / RULES_FILE)
        config = self.root / "prometheus.yml"
        config.write_text(
            dump(
                prometheus_config(
                    self.targets,
                    self.alertmanagers,
                    [RULES_FILE],  # relative to the configuration file
                    scrape_interval_s=self.interval_s,
                    evaluation_interval_s=self.interval_s,
                )
            )
        )
        self.spawn(
            [
                str(_binary("prometheus")),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )
        wait_ready(
            lambda: answers_ok(f"{self.url}/-/ready"),
            timeout_s,
            "Prometheus to be ready",
            error=MonitoringError,
            watch=[self],
        )

    def alerts(self) -> dict[str, str]:
        """Each alert's name and state (pending or firing) now."""
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        answer.raise_for_status()
        return {a["labels"]["alertname"]: a["state"] for a in answer.json()["data"]["alerts"]}

    def query(self, expr: str) -> list[tuple[dict[str, str], str]]:
        """An instant query's series: labels and value."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        answer.raise_for_status()
        return [(r["metric"], r["value"][1]) for r in answer.json()["data"]["result"]]

    def targets_up(self) -> int:
        answer = httpx.get(f"{self.url}/api/v1/targets", timeout=5)
        answer.raise_for_status()
        return sum(t["health"] == "up" for t in answer.json()["data"]["activeTargets"])


@dataclass
class Notification:
    at: float  # time.monotonic() when it arrived
    status: str  # "firing" or "resolved", for the group
    alerts: list[dict[str, Any]]

    def names(self, status: str | None = None) -> set[str]:
        return {a["labels"]["alertname"] for a in self.alerts if status in (None, a["status"])}


class WebhookSink:
    """A local HTTP receiver standing in for Slack or a pager: it keeps every notification
    Alertmanager's webhook receiver posts to it (Alertmanager's webhook format), with the
    time it arrived, and checks the bearer token when given one."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.received: list[Notification] = []
        self.refused = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if sink.token and self.headers.get("Authorization") != f"Bearer {sink.token}":
                    with sink._lock:
                        sink.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                payload = json.loads(body)
                with sink._lock:
                    sink.received.append(
                        Notification(time.monotonic(), payload["status"], payload["alerts"])
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None  # the test reports what matters

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def first(self, alertname: str, status: str, after: float) -> float | None:
        """When the first notification saying `alertname` is `status` arrived after `after`."""
        with self._lock:
            return next(
                (n.at for n in self.received if n.at > after and alertname in n.names(status)),
                None,
            )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
