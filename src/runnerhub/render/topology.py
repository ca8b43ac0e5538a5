"""A described installation: its regions, their hosts and what each host runs, and where
alerts go. `runnerhub render --topology FILE --out DIR` writes the configuration of the
programs around RunnerHub from it (see `render/files.py`); `examples/topology.yaml` is a
complete example."""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Annotated, Any, Literal

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
from runnerhub.render.keepalived import LoadBalancer, VirtualIP, check_pair
from runnerhub.render.patroni import Timing

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


def is_ip(address: str) -> bool:
    try:
        ip_address(address)
    except ValueError:
        return False
    return True


def _vip(v: str) -> str:
    if "/" not in v:
        raise ValueError(
            "give the virtual IP with its prefix, as it goes on the interface: 10.0.1.10/24"
        )
    ip_interface(v)  # ValueError says what is wrong
    return v


class LoadBalancerSettings(_Strict):
    """keepalived's VRRP between a region's HAProxy hosts (docs/load-balancer.md)."""

    virtual_ip: Annotated[str, AfterValidator(_vip)]
    virtual_router_id: int = Field(ge=1, le=255)  # unique among VRRP routers on that network
    interface: str = "eth0"
    advert_int_s: float = 0.5  # 3 missed adverts + skew: a dead holder is noticed in ~1.8 s


class Region(_Strict):
    name: Label
    standby: bool = False  # the disaster-recovery region (docs/dr.md)
    hosts: list[Host] = Field(min_length=1)
    load_balancer: LoadBalancerSettings | None = None  # needed with two or more haproxy hosts

    def with_role(self, role: Role) -> list[Host]:
        return [h for h in self.hosts if role in h.roles]

    @model_validator(mode="after")
    def _renderable(self) -> Region:
        def names(hosts: list[Host]) -> str:
            return ", ".join(h.name for h in hosts)

        etcd, redis, haproxy = (self.with_role(r) for r in ("etcd", "redis", "haproxy"))
        if len(etcd) % 2 == 0 and etcd:
            raise ValueError(
                f"{len(etcd)} hosts have the role etcd ({names(etcd)}): etcd needs a majority "
                "of its members, so give it an odd number (1, 3 or 5)"
            )
        if self.with_role("postgres") and not etcd:
            raise ValueError("hosts have the role postgres but none etcd: Patroni needs etcd")
        if len(redis) % 2 == 0 and redis:
            raise ValueError(
                f"{len(redis)} hosts have the role redis ({names(redis)}): their Sentinels "
                "need a majority to fail over, so give it an odd number (1, 3 or 5)"
            )
        if len(haproxy) >= 2 and self.load_balancer is None:
            raise ValueError(
                f"load_balancer: {names(haproxy)} have the role haproxy: give the region a "
                "load_balancer (a virtual IP keepalived moves between them)"
            )
        if self.load_balancer is not None and len({h.name for h in self.hosts}) == len(self.hosts):
            self.keepalived()  # ValueError naming what keepalived would refuse
        return self

    def keepalived(self) -> tuple[list[LoadBalancer], VirtualIP] | None:
        """The region's HAProxy hosts as keepalived peers, first host highest priority."""
        lb = self.load_balancer
        if lb is None:
            return None
        hosts = self.with_role("haproxy")
        try:
            peers = [
                LoadBalancer(h.name, ip_address(h.address), lb.interface, 200 - 10 * i)
                for i, h in enumerate(hosts)
            ]
            vip = VirtualIP(ip_interface(lb.virtual_ip), lb.virtual_router_id, lb.advert_int_s)
            check_pair(peers, vip)
        except ValueError as exc:
            raise ValueError(f"load_balancer: {exc}") from None
        return peers, vip


class Ports(_Strict):
    node: int = Field(default=8080, ge=1, le=65535)
    prometheus: int = Field(default=9090, ge=1, le=65535)
    alertmanager: int = Field(default=9093, ge=1, le=65535)
    etcd_client: int = Field(default=2379, ge=1, le=65535)
    etcd_peer: int = Field(default=2380, ge=1, le=65535)
    postgres: int = Field(default=5432, ge=1, le=65535)
    patroni: int = Field(default=8008, ge=1, le=65535)  # Patroni's REST API
    redis: int = Field(default=6379, ge=1, le=65535)
    sentinel: int = Field(default=26379, ge=1, le=65535)
    haproxy_http: int = Field(default=80, ge=1, le=65535)
    haproxy_https: int = Field(default=443, ge=1, le=65535)  # with tls.haproxy_pem
    haproxy_stats: int = Field(default=8404, ge=1, le=65535)  # loopback; keepalived asks it
    haproxy_postgres: int = Field(default=5000, ge=1, le=65535)  # always the primary


class EtcdTlsSettings(_Strict):
    """Each host's own certificate and key at these paths (peers use them too, so they must
    serve as client and server certificates), and the CA that signed them."""

    cert_file: str
    key_file: str
    ca_file: str
    client_cert_auth: bool = False  # clients show a certificate too (else: etcd users)


class RedisTlsSettings(_Strict):
    cert_file: str
    key_file: str
    ca_file: str


class PostgresTlsSettings(_Strict):
    """Each PostgreSQL host's certificate and key (owned by postgres, 0600), and the CA of
    every member's: every TCP connection is then TLS (`hostssl`), members check each
    other against the CA."""

    cert_file: str
    key_file: str
    ca_file: str


class TlsSettings(_Strict):
    etcd: EtcdTlsSettings | None = None
    redis: RedisTlsSettings | None = None
    postgres: PostgresTlsSettings | None = None
    haproxy_pem: str | None = None  # certificate chain then key; HTTPS on ports.haproxy_https


class SecretFiles(_Strict):
    """Where each program finds its secrets on a host: written by you (or your secret
    store), never by `runnerhub render`; the rendered files name these paths only."""

    patroni_env: str = "/etc/patroni/secrets.env"  # PATRONI_*_PASSWORD=..., EnvironmentFile
    redis: str = "/etc/redis/runnerhub-secrets.conf"  # requirepass, masterauth, ACL users
    sentinel: str = "/etc/redis/runnerhub-sentinel-secrets.conf"  # requirepass, sentinel *-pass
    pgbackrest: str = "/etc/pgbackrest/conf.d/secrets.conf"  # repoN-cipher-pass, object store keys


class EtcdSettings(_Strict):
    data_dir: str = "/var/lib/etcd/runnerhub"
    heartbeat_ms: int = Field(default=100, ge=10)
    election_ms: int = Field(default=1000, ge=50)
    log_level: Literal["debug", "info", "warn", "error"] = "info"


class PostgresSettings(_Strict):
    """Patroni and the PostgreSQL it runs (Debian's postgresql-15 and patroni packages)."""

    scope: Label = "runnerhub"
    namespace: str = "/runnerhub-pg/"
    data_dir: str = "/var/lib/postgresql/15/runnerhub"
    bin_dir: str = "/usr/lib/postgresql/15/bin"
    socket_dir: str = "/var/run/postgresql"
    log_dir: str = "/var/log/postgresql/runnerhub"
    pgpass: str = "/var/lib/postgresql/patroni.pgpass"  # Patroni writes it itself
    ttl: int = 20
    loop_wait: int = 2
    retry_timeout: int = 9
    synchronous_mode: bool = True
    parameters: dict[str, Any] = {}  # cluster-wide PostgreSQL settings, at bootstrap
    local_parameters: dict[str, Any] = {}  # each member's own (shared_buffers: 128MB, ...)

    @model_validator(mode="after")
    def _timing(self) -> PostgresSettings:
        self.timing().validate()
        return self

    def timing(self) -> Timing:
        return Timing(self.ttl, self.loop_wait, self.retry_timeout)


class RepoSettings(_Strict):
    name: Label = "main"
    path: str = "/var/lib/pgbackrest"
    encrypted: bool = False  # its repoN-cipher-pass goes in secrets.pgbackrest
    retention_full: int = Field(default=2, ge=1)
    retention_diff: int = Field(default=3, ge=1)
    options: dict[str, str] = {}  # more repoN-* settings: type: s3, s3-bucket: ...


class PgBackRestSettings(_Strict):
    stanza: Label = "runnerhub"
    repos: list[RepoSettings] = Field(default_factory=lambda: [RepoSettings()], min_length=1)
    standby_repo: int | None = None  # the repo a standby region replays; default: the last
    log_path: str = "/var/log/pgbackrest"
    lock_path: str = "/tmp/pgbackrest"
    archive_queue_max: str = "1GB"

    @model_validator(mode="after")
    def _standby_repo(self) -> PgBackRestSettings:
        if self.standby_repo is not None and not 1 <= self.standby_repo <= len(self.repos):
            raise ValueError(f"standby_repo: no repository {self.standby_repo}")
        return self


class RedisSettings(_Strict):
    master_name: str = "runnerhub"
    data_dir: str = "/var/lib/redis"
    maxmemory: str = "256mb"
    down_after_ms: int = Field(default=5000, ge=100)
    failover_timeout_ms: int = Field(default=10_000, ge=1000)


class HAProxySettings(_Strict):
    maxconn: int = Field(default=2048, ge=1)
    # Free server slots in each node backend beside the topology's nodes, for nodes added
    # later: `runnerhub lb sync` fills them without a reload (docs/load-balancer.md).
    slots: int = Field(default=16, ge=0, le=256)


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
    etcd: EtcdSettings = EtcdSettings()
    postgres: PostgresSettings = PostgresSettings()
    pgbackrest: PgBackRestSettings = PgBackRestSettings()
    redis: RedisSettings = RedisSettings()
    haproxy: HAProxySettings = HAProxySettings()
    tls: TlsSettings = TlsSettings()
    secrets: SecretFiles = SecretFiles()

    @model_validator(mode="after")
    def _coherent(self) -> Topology:
        hosts = [h.name for r in self.regions for h in r.hosts]
        twice = sorted({h for h in hosts if hosts.count(h) > 1})
        if twice:
            raise ValueError(f"host names must be unique: {', '.join(twice)}")
        taken = sorted({"prometheus", "alertmanager"} & set(hosts))
        if taken:  # their directories hold the monitoring files
            raise ValueError(f"a host may not be named {taken[0]}: rendered files use the name")
        regions = [r.name for r in self.regions]
        if len(set(regions)) != len(regions):
            raise ValueError("region names must be unique")
        if sum(not r.standby for r in self.regions) != 1:
            raise ValueError("exactly one region must be active (the others: standby: true)")
        if not self.hosts_with("node"):
            raise ValueError("no host has the role node: RunnerHub runs nowhere")
        standby_pg = [r.name for r in self.regions if r.standby and r.with_role("postgres")]
        if standby_pg and self.primary_endpoint() is None:
            raise ValueError(
                f"region {standby_pg[0]} streams from the active region's PostgreSQL endpoint "
                "(HAProxy): give a host of the active region the role haproxy"
            )
        return self

    @property
    def active(self) -> Region:
        return next(r for r in self.regions if not r.standby)

    def primary_endpoint(self) -> str | None:
        """Where the active region's primary is reached from elsewhere: its virtual IP, or
        its one HAProxy host (port: ports.haproxy_postgres)."""
        region = self.active
        if region.load_balancer is not None:
            return str(ip_interface(region.load_balancer.virtual_ip).ip)
        haproxy = region.with_role("haproxy")
        return haproxy[0].address if haproxy else None

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
