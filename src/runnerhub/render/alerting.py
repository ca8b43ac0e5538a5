"""Prometheus's and Alertmanager's configuration for a RunnerHub installation.

Prometheus scrapes every node's `/metrics` (public, nothing secret in it) under
job="runnerhub", each target labelled with its node and its region, and evaluates the rules
shipped in `deploy/prometheus/runnerhub-alerts.yml`. Alertmanager routes by severity:
critical pages (PagerDuty, and Slack), warning notifies (Slack and email), info is mailed;
a generic webhook, when there is one, receives every alert besides. Every secret is read
from a file by Alertmanager itself, so none is ever in a rendered file.

Inhibitions follow the cluster's shape: a region that is down silences what its own nodes
say, and a database without a primary silences what that causes downstream (a spool that
grows, jobs that wait, archiving that stops), so a person is paged for the cause only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RUNBOOK_BASE = "https://github.com/runnerhub/runnerhub/blob/main/docs/runbooks/"
RULES_FILE = "runnerhub-alerts.yml"
# The rules as shipped in the repository (tested there by promtool in make test).
SHIPPED_RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / RULES_FILE

# What a lost primary causes downstream: paged for the cause, these wait until it is mended.
CAUSED_BY_NO_PRIMARY = (
    "RunnerHubUnhealthy",
    "RunnerHubDegraded",
    "RunnerHubSpoolGrowing",
    "RunnerHubJobsQueuedTooLong",
    "RunnerHubProvisioningFailing",
    "RunnerHubReplicationLag",
    "RunnerHubReplicaNotStreaming",
    "RunnerHubReplicaStalled",
    "RunnerHubWalArchivingFailing",
    "RunnerHubWalArchiveStale",
    "RunnerHubBackupFailing",
    "RunnerHubBackupOverdue",
    "RunnerHubLeaderMissing",  # a leader cannot take office without the database
)
# No leader: nothing is scheduled, so jobs wait and the leader's backups do not run.
CAUSED_BY_NO_LEADER = ("RunnerHubJobsQueuedTooLong", "RunnerHubBackupOverdue")


@dataclass(frozen=True)
class ScrapeTarget:
    """One node's HTTP address (host:port), its name and its region."""

    address: str
    node: str
    region: str = "a"


@dataclass(frozen=True)
class Slack:
    api_url_file: str  # the incoming webhook's URL is its secret
    channel: str


@dataclass(frozen=True)
class PagerDuty:
    routing_key_file: str  # an Events API v2 integration key


@dataclass(frozen=True)
class Email:
    to: str
    sender: str
    smarthost: str  # host:port of the SMTP relay
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class Webhook:
    url: str
    bearer_token_file: str | None = None  # sent as "Authorization: Bearer …"


@dataclass(frozen=True)
class AlertRouting:
    """Where alerts go and how often. Without any receiver, Alertmanager still runs and
    shows the alerts in its UI and API, but tells nobody: `runnerhub doctor`-style checks
    and the docs say so."""

    slack: Slack | None = None
    pagerduty: PagerDuty | None = None
    email: Email | None = None
    webhook: Webhook | None = None
    group_wait_s: float = 30.0  # gather what fires together into one message
    group_interval_s: float = 300.0  # news about a group at most this often
    repeat_interval_s: float = 4 * 3600.0  # reminders while it still fires
    smtp_require_tls: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)  # merged into `global`


def _duration(seconds: float) -> str:
    """Prometheus's duration syntax (whole milliseconds: it takes no fractions)."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def prometheus_config(
    targets: Sequence[ScrapeTarget],
    alertmanagers: Sequence[str],
    rule_files: Sequence[str | Path] = (RULES_FILE,),
    *,
    scrape_interval_s: float = 15.0,
    evaluation_interval_s: float = 15.0,
    scheme: str = "http",
    ca_file: str | None = None,
) -> dict[str, Any]:
    """Prometheus's configuration: every node scraped under job="runnerhub" with its node
    and region as labels (the inhibitions match on region), alerts sent to `alertmanagers`
    (host:port each; all of them, Alertmanager's cluster deduplicates)."""
    by_region: dict[str, list[ScrapeTarget]] = {}
    for t in targets:
        by_region.setdefault(t.region, []).append(t)
    static = [
        {"targets": [t.address], "labels": {"node": t.node, "region": region}}
        for region, members in sorted(by_region.items())
        for t in members
    ]
    job: dict[str, Any] = {
        "job_name": "runnerhub",
        "scheme": scheme,
        "metrics_path": "/metrics",
        "static_configs": static,
    }
    if ca_file:
        job["tls_config"] = {"ca_file": ca_file}
    return {
        "global": {
            "scrape_interval": _duration(scrape_interval_s),
            "scrape_timeout": _duration(min(scrape_interval_s, 10.0)),
            "evaluation_interval": _duration(evaluation_interval_s),
        },
        "rule_files": [str(f) for f in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]},
        "scrape_configs": [job],
    }


def _receivers(r: AlertRouting) -> list[dict[str, Any]]:
    slack = (
        [
            {
                "api_url_file": r.slack.api_url_file,
                "channel": r.slack.channel,
                "send_resolved": True,
                "title": "{{ .Status | toUpper }}: {{ .CommonLabels.alertname }}",
                "text": (
                    "{{ range .Alerts }}{{ .Annotations.summary }}\n"
                    "{{ .Annotations.runbook_url }}\n{{ end }}"
                ),
            }
        ]
        if r.slack
        else []
    )
    pager = (
        [{"routing_key_file": r.pagerduty.routing_key_file, "send_resolved": True}]
        if r.pagerduty
        else []
    )
    mail: list[dict[str, Any]] = []
    if r.email:
        m: dict[str, Any] = {
            "to": r.email.to,
            "from": r.email.sender,
            "smarthost": r.email.smarthost,
            "require_tls": r.smtp_require_tls,
            "send_resolved": True,
        }
        if r.email.username:
            m["auth_username"] = r.email.username
        if r.email.password_file:
            m["auth_password_file"] = r.email.password_file
        mail = [m]
    hooks: list[dict[str, Any]] = []
    if r.webhook:
        h: dict[str, Any] = {"url": r.webhook.url, "send_resolved": True}
        if r.webhook.bearer_token_file:
            h["http_config"] = {
                "authorization": {"type": "Bearer", "credentials_file": r.webhook.bearer_token_file}
            }
        hooks = [h]

    def receiver(name: str, **configs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, **{k: v for k, v in configs.items() if v}}

    return [
        receiver("page", pagerduty_configs=pager, slack_configs=slack),
        receiver("notify", slack_configs=slack, email_configs=mail),
        receiver("mail", email_configs=mail),
        receiver("webhook", webhook_configs=hooks),
    ]


def _inhibitions() -> list[dict[str, Any]]:
    def names(alerts: Sequence[str]) -> str:
        return f'alertname=~"{"|".join(alerts)}"'

    return [
        {  # a region that is down: what its own nodes say follows from it
            "source_matchers": ['alertname="RunnerHubRegionDown"'],
            "target_matchers": ['alertname!="RunnerHubRegionDown"'],
            "equal": ["region"],
        },
        {
            "source_matchers": ['alertname="RunnerHubNoDatabasePrimary"'],
            "target_matchers": [names((*CAUSED_BY_NO_PRIMARY, "RunnerHubDatabaseFailover"))],
        },
        {  # during a failover (it lasts Patroni's ttl), the same, briefly
            "source_matchers": ['alertname="RunnerHubDatabaseFailover"'],
            "target_matchers": [names(CAUSED_BY_NO_PRIMARY)],
        },
        {
            "source_matchers": ['alertname="RunnerHubLeaderMissing"'],
            "target_matchers": [names(CAUSED_BY_NO_LEADER)],
        },
    ]


def alertmanager_config(r: AlertRouting) -> dict[str, Any]:
    """Alertmanager's configuration: routes by severity, receivers with secrets from files,
    grouping by alert and region, and the inhibitions above."""
    timing = {
        "group_wait": _duration(r.group_wait_s),
        "group_interval": _duration(r.group_interval_s),
        "repeat_interval": _duration(r.repeat_interval_s),
    }
    routes: list[dict[str, Any]] = []
    if r.webhook:  # first, and on to the others: it sees every alert
        routes.append({"receiver": "webhook", "matchers": ['alertname=~".+"'], "continue": True})
    routes += [
        {"receiver": "page", "matchers": ['severity="critical"']},
        {"receiver": "notify", "matchers": ['severity="warning"']},
        {"receiver": "mail", "matchers": ['severity="info"'], "repeat_interval": "24h"},
    ]
    return {
        "global": {"resolve_timeout": "5m", **r.extra},
        "route": {
            "receiver": "notify",  # an alert without a known severity still reaches someone
            "group_by": ["alertname", "region"],
            **timing,
            "routes": routes,
        },
        "inhibit_rules": _inhibitions(),
        "receivers": _receivers(r),
    }


def rules_with_runbook_base(rules_yaml: str, base: str) -> str:
    """The shipped rules with each runbook_url pointing under `base` instead (an internal
    mirror of docs/runbooks/)."""
    if not base.endswith("/"):
        base += "/"
    return rules_yaml.replace(RUNBOOK_BASE, base)


def dump(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, width=100)
