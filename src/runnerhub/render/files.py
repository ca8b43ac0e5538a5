"""The files `runnerhub render` writes for a topology, as {relative path: text}: kept pure
(no writing here) so tests can check each with its program's own checker."""

from __future__ import annotations

from runnerhub.render.alerting import (
    RULES_FILE,
    alertmanager_config,
    dump,
    prometheus_config,
    rules_with_runbook_base,
)
from runnerhub.render.topology import Topology

HEADER = "# Rendered by `runnerhub render` from topology {name!r}: edit the topology, not this.\n"


def monitoring_files(t: Topology, shipped_rules: str) -> dict[str, str]:
    """Prometheus (scrape configuration and the shipped alert rules, their runbook links
    pointing where the topology says) and Alertmanager (routes, receivers, inhibitions)."""
    head = HEADER.format(name=t.name)
    prom = prometheus_config(
        t.scrape_targets(),
        t.alertmanagers(),
        [RULES_FILE],
        scrape_interval_s=t.prometheus.scrape_interval_s,
        evaluation_interval_s=t.prometheus.evaluation_interval_s,
        scheme=t.prometheus.scheme,
        ca_file=t.prometheus.ca_file,
    )
    return {
        "prometheus/prometheus.yml": head + dump(prom),
        f"prometheus/{RULES_FILE}": rules_with_runbook_base(
            shipped_rules, t.alerting.runbook_base_url
        ),
        "alertmanager/alertmanager.yml": head + dump(alertmanager_config(t.alerting.routing())),
    }
