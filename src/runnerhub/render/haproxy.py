"""HAProxy's configuration in front of RunnerHub nodes: the same function writes the local
cluster's (`runnerhub up --ha`, on loopback) and a production host's
`/etc/haproxy/haproxy.cfg` (`runnerhub render`), so the two cannot drift.

Webhook deliveries and API calls go to the nodes that answer `/readyz` (deliveries by the
weight each node's agent asks for: the leader's is 1%, lb/agent.py). A request that fails
because its node died (refused connection, connection closed before any answer, no answer
in time, or a 502/503/504) is replayed on another node. Deliveries have a
backend of their own (the same nodes) with a short answer timeout, so one that meets a hung
node is replayed within a second: GitHub does not retry a failed delivery by itself, and
RunnerHub deduplicates deliveries by their GUID, so a replay is safe. `deploy/haproxy.cfg`
is the commented production version of what `render_config` writes; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HEADER = "# Written by runnerhub.render.haproxy; deploy/haproxy.cfg explains every setting."
# What a system-wide HAProxy adds (Debian's unit starts it as root): it drops privileges,
# chroots, and keeps an admin socket, as deploy/haproxy.cfg does.
SYSTEM_GLOBAL = (
    "    chroot /var/lib/haproxy",
    "    user haproxy",
    "    group haproxy",
    "    stats socket /run/haproxy/admin.sock mode 660 level admin",
)

BACKEND = "runnerhub_nodes"
WEBHOOKS = "runnerhub_webhooks"  # the same nodes, with a short answer timeout for deliveries
# Free server slots are named slot1, slot2, ... (never a node's name: HAProxy refuses two
# servers of one name) and wait in maintenance at 0.0.0.0:0, which is how the stats page
# tells a free slot from a server (lb/stats.py).
SLOT_PREFIX = "slot"
Backend = tuple[str, str, int]  # (server name, host, port)
PatroniMember = tuple[str, str, int, int]  # (server name, host, PostgreSQL port, REST port)


# The port each node's HAProxy agent answers on (node.lb_agent_port), unless a server line
# names its own: the leader asks for 1% of the deliveries there (lb/agent.py).
AGENT_PORT = 8081

# Deliveries a single source may send in 10 s before HAProxy answers 429. GitHub sends
# every delivery from a few addresses (its `hooks` ranges, api.github.com/meta): the limit
# is there to stop a flood from one address, not to pace GitHub, so it is generous.
WEBHOOK_RATE_PER_10S = 1000


@dataclass(frozen=True)
class TlsFront:
    """TLS terminated by HAProxy: `pem` holds the certificate chain then the key. With
    `redirect`, the plain port only redirects to HTTPS (308: a POST stays a POST)."""

    port: int
    pem: Path
    redirect: bool = True


# long: one template, read top to bottom like the file it writes
def render_config(
    backends: Sequence[Backend],
    frontend_port: int,
    stats_port: int | None = None,
    *,
    bind_host: str = "127.0.0.1",
    log_target: str = "stdout format raw local0 info",
    maxconn: int = 1024,
    postgres_port: int | None = None,
    postgres_members: Sequence[PatroniMember] = (),
    tls: TlsFront | None = None,
    webhook_rate_per_10s: int | None = WEBHOOK_RATE_PER_10S,
    header: Sequence[str] = (HEADER,),
    system: bool = False,
    slots: int = 0,
    agent_ports: Mapping[str, int] | None = None,
) -> str:
    """An HAProxy 2.6 configuration for RunnerHub nodes; with `postgres_port`, also a TCP
    listener that always leads to the current Patroni primary among `postgres_members`;
    with `tls`, HTTPS too; with `webhook_rate_per_10s`, a per-source limit on deliveries.
    `bind_host` "" binds every address (a host behind a virtual IP accepts on it as soon
    as the VIP arrives); `system` adds what a system-wide HAProxy needs (SYSTEM_GLOBAL);
    `slots` adds that many free server slots to each node backend, for nodes added later
    (`runnerhub lb sync` fills them through the runtime API: docs/load-balancer.md);
    `agent_ports` gives a node's agent port where it is not AGENT_PORT (nodes sharing a
    host)."""
    if not 0 <= slots <= 256:
        raise ValueError(f"haproxy slots must be 0-256, not {slots}")
    spare = [f"    server-template {SLOT_PREFIX} 1-{slots} 0.0.0.0:0 disabled"] if slots else []
    out = [
        *header,
        "global",
        f"    log {log_target}",
        f"    maxconn {maxconn}",
        *(SYSTEM_GLOBAL if system else ()),
        # A request is replayed only if it fits in one buffer: room for large webhooks.
        "    tune.bufsize 65536",
        "    hard-stop-after 30s",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    timeout connect 1s",
        "    timeout client 15s",
        # Under GitHub's 10 s webhook timeout: a request stuck on a frozen node is replayed
        # on another (retry-on response-timeout) while GitHub still waits for the answer.
        "    timeout server 4s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 5s",
        "    timeout queue 5s",
        "    timeout check 2s",
        "",
        "frontend runnerhub",
        f"    bind {bind_host}:{frontend_port}",
    ]
    if tls is not None:
        out += [
            f"    bind {bind_host}:{tls.port} ssl crt {tls.pem} alpn h2,http/1.1",
            *(
                ["    http-request redirect scheme https code 308 unless { ssl_fc }"]
                if tls.redirect
                else []
            ),
            "    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
            '    http-response set-header Strict-Transport-Security "max-age=31536000" '
            "if { ssl_fc }",
        ]
    if webhook_rate_per_10s is not None:
        out += [
            "    stick-table type ip size 100k expire 30s store http_req_rate(10s)",
            "    http-request track-sc0 src if { path /webhooks/github }",
            "    http-request deny deny_status 429 if { path /webhooks/github } "
            f"{{ sc_http_req_rate(0) gt {webhook_rate_per_10s} }}",
        ]
    out += [
        "    option httplog",
        "    option dontlognull",
        "    option forwardfor",
        # On reload, the old worker answers a kept-alive client's next request with
        # "Connection: close" instead of closing the idle connection as the request comes in.
        "    option idle-close-on-response",
        f"    use_backend {WEBHOOKS} if {{ path /webhooks/github }}",
        f"    default_backend {BACKEND}",
        "",
        f"backend {WEBHOOKS}",
        # Two nodes drawn by weight, the one with fewer deliveries in flight taken: a hung
        # node keeps the delivery it was sent, so the next go elsewhere until it is out.
        # By weight, because each node's agent asks for its share: the leader 1%, so its
        # control work and its faults keep (almost) no delivery waiting. (leastconn would
        # ignore the weights whenever no delivery is in flight.)
        "    balance random(2)",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        "    option http-buffer-request",
        # A node answers a delivery within webhook.db_wait_s (0.1 s) and a spool write:
        # one that has not by 200 ms is hung, and the delivery is replayed on another node.
        # Not lower: when the database fails, every node's first delivery waits db_wait_s
        # at once; with db_wait_s at 0.15 s and the leader taking deliveries, 200 ms replayed
        # one delivery up to 3 times (docs/benchmarks.md).
        "    timeout server 200ms",
        # /readyz answers at once from the node's background checks: a hung node is out
        # of this backend after two checks of 200 ms, 100 ms apart.
        "    timeout check 200ms",
        "    retries 3",
        "    retry-on conn-failure empty-response response-timeout 502 503 504",
        "    option redispatch 1",
        "    http-reuse safe",
        # The agent, every 500 ms, sets the weight (lb/agent.py); one that does not answer
        # changes nothing: the health check alone decides whether a node is up.
        "    default-server check inter 100ms fastinter 100ms downinter 1s fall 2 rise 2 "
        f"weight 100 agent-check agent-port {AGENT_PORT} agent-inter 500ms",
    ]
    agents = agent_ports or {}
    out += [
        f"    server {name} {host}:{port}"
        + (f" agent-port {agents[name]}" if name in agents else "")
        for name, host, port in backends
    ] + spare
    out += [
        "",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        # HAProxy copies a request for replay only when it holds all of it when it first
        # sends it; without this, a POST whose body arrives after its headers is never retried.
        "    option http-buffer-request",
        "    retries 3",
        # Not on 503: the API says 503 when the database does not answer in time, and every
        # node would say the same.
        "    retry-on conn-failure empty-response response-timeout 502 504",
        "    option redispatch 1",
        "    http-reuse safe",
        "    default-server check inter 500ms fastinter 250ms downinter 1s fall 2 rise 2",
    ]
    out += [f"    server {name} {host}:{port}" for name, host, port in backends] + spare
    if stats_port is not None:
        out += [
            "",
            "frontend stats",
            f"    bind 127.0.0.1:{stats_port}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    stats enable",
            "    stats uri /stats",
            "    stats refresh 5s",
            # Server addresses in the CSV too: the nodes' load_balancers check (and the
            # dashboard) tell a free server-template slot from a server. Loopback only.
            "    stats show-legends",
        ]
    if postgres_port is not None:
        if not postgres_members:
            raise ValueError("a PostgreSQL primary endpoint needs postgres_members")
        out += [
            "",
            "listen postgres_primary",
            f"    bind {bind_host}:{postgres_port}",
            "    mode tcp",
            "    option tcplog",
            "    timeout client 30m",
            "    timeout server 30m",
            # Patroni answers 200 on /primary only on the leader: one server is ever up.
            "    option httpchk GET /primary",
            "    http-check expect status 200",
            "    default-server inter 1s fastinter 500ms downinter 2s fall 2 rise 2 "
            "on-marked-down shutdown-sessions",
        ]
        out += [
            f"    server {name} {host}:{port} check port {api_port}"
            for name, host, port, api_port in postgres_members
        ]
    return "\n".join(out) + "\n"
