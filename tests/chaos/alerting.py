"""The real Prometheus and Alertmanager watching a chaos test's cluster: Prometheus scrapes
every node with the rendered scrape configuration and evaluates the shipped rules,
Alertmanager (rendered too) sends every alert to a local webhook standing in for Slack. The
tests read what reached that webhook, and when."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runnerhub.dev.cluster.local import LocalCluster
from runnerhub.dev.cluster.monitoring import LocalAlertmanager, LocalPrometheus, WebhookSink
from runnerhub.dev.waiting import Timeout, wait_until_sync
from runnerhub.render.alerting import AlertRouting, ScrapeTarget, Webhook


@dataclass
class Watch:
    prometheus: LocalPrometheus
    alertmanager: LocalAlertmanager
    sink: WebhookSink

    def reached(self, alertname: str, status: str, since: float, timeout_s: float) -> float:
        """Seconds from `since` (time.monotonic()) until the webhook heard `alertname` was
        `status`; fails past `timeout_s` saying what Prometheus fired meanwhile."""

        def heard() -> float | None:
            return self.sink.first(alertname, status, since)

        try:
            at = wait_until_sync(heard, timeout_s, f"{alertname} {status} at the webhook")
        except Timeout as exc:
            scraped = self.prometheus.query("up")
            raise AssertionError(
                f"{exc}; alerts in Prometheus: {self.prometheus.alerts()}; scrapes: {scraped}; "
                f"notifications: {[(n.status, n.names()) for n in self.sink.received]}"
            ) from exc
        return at - since


@contextmanager
def watching(cluster: LocalCluster, root: Path) -> Iterator[Watch]:
    """Every node of `cluster` scraped."""
    targets = [
        ScrapeTarget(url.removeprefix("http://"), name) for name, url in cluster.node_urls.items()
    ]
    with watching_targets(targets, root) as watch:
        yield watch


@contextmanager
def watching_targets(targets: list[ScrapeTarget], root: Path) -> Iterator[Watch]:
    token = "sink-token"
    (root / "sink-token").parent.mkdir(parents=True, exist_ok=True)
    (root / "sink-token").write_text(token)
    sink = WebhookSink(token)
    routing = AlertRouting(
        webhook=Webhook(sink.url, str(root / "sink-token")),
        group_wait_s=0.5,  # production waits 30 s to gather; a test measures the rules
        group_interval_s=1.0,
        repeat_interval_s=3600.0,
    )
    am = LocalAlertmanager(root / "alertmanager", routing)
    prom = LocalPrometheus(root / "prometheus", targets, [am.address])
    try:  # Alertmanager first: Prometheus sends to it from its first evaluation
        am.start()
        prom.start()
        wait_until_sync(lambda: prom.targets_up() == len(targets), 30, "every node scraped")
        yield Watch(prom, am, sink)
    finally:
        prom.stop()
        am.stop()
        sink.close()
    assert not sink.refused, "Alertmanager called the webhook without its token"
