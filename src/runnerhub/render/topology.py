"""A described installation: its regions, their hosts and what each host runs, and where
alerts go. `runnerhub render --topology FILE --out DIR` writes the configuration of the
programs around RunnerHub from it (see `render/files.py`); `examples/topology.yaml` is a
complete example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from runnerhub.config import ConfigError, describe_validation, read_yaml_mapping
from runnerhub.render.alerting import (
    RUNBOOK_BASE,
    AlertRouting,
    Email,
    PagerDuty,
    ScrapeTarget,
    Slack,
    Webhook,
)

EXAMPLE = "examples/topology.yaml"
Role = Literal["node", "postgres", "etcd", "redis", "haproxy", "prometheus", "alertmanager"]
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS label: it names files


def _dns_label(v: str) -> str:
    if not NAME.match(v):
        raise ValueError("must be a DNS label: lower-case letters, digits and '-'")
    return v


Label = Annotated[str, AfterValidator(_dns_label)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(_Strict):
    name: Label
    address: str  # how the others reach it: an IP address or a DNS name
    roles: list[Role] = Field(min_length=1)


class Region(_Strict):
    name: Label
    standby: bool = False  # the disaster-recovery region (docs/dr.md)
    hosts: list[Host] = Field(min_length=1)


class Ports(_Strict):
    node: int = Field(default=8080, ge=1, le=65535)
    prometheus: int = Field(default=9090, ge=1, le=65535)
    alertmanager: int = Field(default=9093, ge=1, le=65535)


class PrometheusSettings(_Strict):
    scrape_interval_s: float = Field(default=15.0, gt=0, le=300)
    evaluation_interval_s: float = Field(default=15.0, gt=0, le=300)
    scheme: Literal["http", "https"] = "http"  # how the nodes serve /metrics
    ca_file: str | None = None  # for https: the CA that signed the nodes' certificates


class SlackSettings(_Strict):
    api_url_file: str
    channel: str


class PagerDutySettings(_Strict):
    routing_key_file: str


class EmailSettings(_Strict):
    to: str
    sender: str
    smarthost: str
    username: str | None = None
    password_file: str | None = None
    require_tls: bool = True


class WebhookSettings(_Strict):
    url: str
    bearer_token_file: str | None = None


class AlertingSettings(_Strict):
    """Receivers: secrets are paths, read by Alertmanager, never written into a file."""

    slack: SlackSettings | None = None
    pagerduty: PagerDutySettings | None = None
    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None
    group_wait_s: float = Field(default=30.0, gt=0)
    group_interval_s: float = Field(default=300.0, gt=0)
    repeat_interval_s: float = Field(default=4 * 3600.0, gt=0)
    runbook_base_url: str = RUNBOOK_BASE  # where docs/runbooks/ is published for you

    def routing(self) -> AlertRouting:
        return AlertRouting(
            slack=Slack(self.slack.api_url_file, self.slack.channel) if self.slack else None,
            pagerduty=PagerDuty(self.pagerduty.routing_key_file) if self.pagerduty else None,
            email=Email(
                self.email.to,
                self.email.sender,
                self.email.smarthost,
                self.email.username,
                self.email.password_file,
            )
            if self.email
            else None,
            webhook=Webhook(self.webhook.url, self.webhook.bearer_token_file)
            if self.webhook
            else None,
            group_wait_s=self.group_wait_s,
            group_interval_s=self.group_interval_s,
            repeat_interval_s=self.repeat_interval_s,
            smtp_require_tls=self.email.require_tls if self.email else True,
        )


class Topology(_Strict):
    name: str
    regions: list[Region] = Field(min_length=1)
    ports: Ports = Ports()
    prometheus: PrometheusSettings = PrometheusSettings()
    alerting: AlertingSettings = AlertingSettings()

    @model_validator(mode="after")
    def _coherent(self) -> Topology:
        hosts = [h.name for r in self.regions for h in r.hosts]
        twice = sorted({h for h in hosts if hosts.count(h) > 1})
        if twice:
            raise ValueError(f"host names must be unique: {', '.join(twice)}")
        regions = [r.name for r in self.regions]
        if len(set(regions)) != len(regions):
            raise ValueError("region names must be unique")
        if sum(not r.standby for r in self.regions) != 1:
            raise ValueError("exactly one region must be active (the others: standby: true)")
        if not self.hosts_with("node"):
            raise ValueError("no host has the role node: RunnerHub runs nowhere")
        return self

    def hosts_with(self, role: Role) -> list[tuple[Region, Host]]:
        return [(r, h) for r in self.regions for h in r.hosts if role in h.roles]

    def scrape_targets(self) -> list[ScrapeTarget]:
        return [
            ScrapeTarget(f"{h.address}:{self.ports.node}", h.name, r.name)
            for r, h in self.hosts_with("node")
        ]

    def alertmanagers(self) -> list[str]:
        return [
            f"{h.address}:{self.ports.alertmanager}" for _, h in self.hosts_with("alertmanager")
        ]


def load_topology(path: str | Path) -> Topology:
    """Read and check a topology file; ConfigError naming the file and field otherwise."""
    path = Path(path)
    try:
        return Topology(**read_yaml_mapping(path))
    except ValidationError as exc:
        raise ConfigError(describe_validation(path, exc, EXAMPLE)) from None
