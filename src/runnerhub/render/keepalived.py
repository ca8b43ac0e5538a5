"""keepalived.conf for the HAProxy hosts in front of RunnerHub: one virtual IP (VIP) that
GitHub's webhook URL points at, held by one HAProxy host at a time and moved by VRRP to
another when the holder's HAProxy or keepalived or the host itself fails
(docs/load-balancer.md).

Choices, each for a reason:

- **Every host starts BACKUP, with `nopreempt`.** The VIP moves only when its holder fails;
  a host that comes back does not take it back, since every move costs the clients a
  second or so of refused connections for nothing. The priorities differ only so that the
  first election, and two hosts starting together, end the same way every time.
- **The health check has no weight: failing it is a FAULT.** With `nopreempt`, a lowered
  priority moves nothing (the backup never preempts), so a check that only subtracted a
  weight would leave the VIP on a host whose HAProxy is dead. In FAULT the host drops the
  VIP at once and sends a priority-0 advert, and the backup takes over within its skew
  time (under one advert interval) instead of waiting for three missed adverts.
- **The check asks HAProxy itself** (its stats page on loopback), not `pidof`: a killed
  HAProxy refuses the connection at the next check, a hung one fails it by the timeout,
  and a process that exists but serves nothing is not counted as alive.
- **VRRPv3, unicast, no authentication.** v3 allows sub-second adverts (v2 whole seconds
  only) and has no authentication at all (RFC 5798 removed it; v2's PASS is plaintext on
  the wire and stops nothing). Adverts go only to the listed peers, and with
  `vrrp_check_unicast_src` an advert from any other source is dropped; firewall IP
  protocol 112 to the peers as well. Unicast also works where multicast does not (clouds,
  some switches).
- **Scripts run as root only under `enable_script_security`**, which refuses a script a
  non-root user could change (keepalived wants `script_user` named when it is root).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from ipaddress import ip_interface as parse_interface

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface

INSTANCE = "runnerhub"
SCRIPT = "haproxy_alive"
# Linux's own rule (dev_valid_name, at most IFNAMSIZ - 1 bytes) without the characters
# that would need quoting in keepalived.conf.
_IFNAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/;=?&%-]*)?$")


def _check_int(what: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}, not {value!r}")


@dataclass(frozen=True)
class LoadBalancer:
    """One HAProxy host."""

    name: str  # keepalived's router_id; a DNS label
    address: IPAddress  # its own address on `interface`: adverts go from it to the peers
    interface: str  # where the VIP goes, e.g. "eth0"
    priority: int  # 1-254 (255 means "owns the address", which no host here does)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _LABEL.match(self.name):
            raise ValueError(f"load balancer name {self.name!r}: letters, digits and '-'")
        if not isinstance(self.interface, str) or not _IFNAME.match(self.interface):
            raise ValueError(
                f"{self.name}: interface {self.interface!r} is not a network interface name "
                "(1-15 of letters, digits and _.@+-)"
            )
        if self.interface in (".", ".."):
            raise ValueError(f"{self.name}: interface {self.interface!r}")
        object.__setattr__(self, "address", ip_address(str(self.address)))
        _check_int(f"{self.name}: priority", self.priority, 1, 254)


@dataclass(frozen=True)
class VirtualIP:
    """The address GitHub's webhook URL resolves to, and how VRRP keeps it."""

    address: IPInterface  # with its prefix, as it is added to the interface: 10.0.0.10/24
    virtual_router_id: int  # 1-255, unique among the VRRP routers on that network
    # A dead keepalived is noticed after 3 missed adverts plus the skew: 1.8 s at 0.5 s,
    # inside the 3 s target; VRRP's own default of 1 s would take 3.6 s.
    advert_int_s: float = 0.5
    nopreempt: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", parse_interface(str(self.address)))
        _check_int("virtual_router_id", self.virtual_router_id, 1, 255)
        # VRRPv3 counts in centiseconds, in 12 bits.
        cs = self.advert_int_s * 100
        if not (1 <= cs <= 4095 and math.isclose(cs, round(cs), abs_tol=1e-6)):
            raise ValueError(
                f"advert_int_s must be 0.01-40.95 s in steps of 0.01, not {self.advert_int_s!r}"
            )


@dataclass(frozen=True)
class HealthCheck:
    """How keepalived decides that this host's HAProxy is alive: `url` answers 2xx or 3xx."""

    url: str = "http://127.0.0.1:8404/stats"  # HAProxy's stats page (deploy/haproxy.cfg)
    curl: str = "/usr/bin/curl"
    interval_s: int = 1  # keepalived takes whole seconds here
    timeout_s: int = 1
    fall: int = 1  # failed checks before FAULT: one, so a dead HAProxy costs ≤ 1 interval
    rise: int = 2  # good checks before leaving FAULT: a flapping HAProxy is not trusted

    def __post_init__(self) -> None:
        if not _URL.match(self.url):
            raise ValueError(f"health check URL {self.url!r}: http(s)://host:port/path")
        if not self.curl.startswith("/") or not re.fullmatch(r"[A-Za-z0-9_./-]+", self.curl):
            raise ValueError(f"curl must be an absolute path, not {self.curl!r}")
        _check_int("health check interval_s", self.interval_s, 1, 3600)
        _check_int("health check timeout_s", self.timeout_s, 1, 3600)
        _check_int("health check fall", self.fall, 1, 100)
        _check_int("health check rise", self.rise, 1, 100)

    def command(self) -> str:
        # curl gives up a little before keepalived's timeout, so it is curl that says why.
        return f"{self.curl} -fs -o /dev/null -m {self.timeout_s * 0.8:g} {self.url}"


def check_pair(balancers: Sequence[LoadBalancer], vip: VirtualIP) -> None:
    """Refuse what keepalived would accept and then behave badly with."""
    if len(balancers) < 2:
        raise ValueError("a virtual IP needs at least two load balancers")
    for what, values in (
        ("names", [b.name for b in balancers]),
        ("addresses", [b.address for b in balancers]),
        # Equal priorities make the first election depend on the addresses; say it instead.
        ("priorities", [b.priority for b in balancers]),
    ):
        if len(set(values)) != len(values):
            raise ValueError(f"load balancer {what} must differ: {[str(v) for v in values]}")
    for b in balancers:
        if b.address.version != vip.address.version:
            raise ValueError(f"{b.name}: {b.address} and the VIP {vip.address} differ in family")
        if b.address == vip.address.ip:
            raise ValueError(f"{b.name}: its own address cannot be the VIP")


def render_keepalived(
    me: str,
    balancers: Sequence[LoadBalancer],
    vip: VirtualIP,
    check: HealthCheck | None = None,
) -> str:
    """keepalived.conf for the load balancer named `me`, one of `balancers`."""
    check_pair(balancers, vip)
    check = check or HealthCheck()
    try:
        host = next(b for b in balancers if b.name == me)
    except StopIteration:
        raise ValueError(f"{me!r} is not one of {[b.name for b in balancers]}") from None
    peers = [b for b in balancers if b is not host]
    out = [
        f"# Written by runnerhub.render.keepalived for {host.name}; "
        "docs/load-balancer.md explains it.",
        "global_defs {",
        f"    router_id {host.name}",
        "    enable_script_security",
        "    script_user root",
        "    vrrp_version 3",
        "    vrrp_check_unicast_src",
        # A VRRP process starved of CPU sends its adverts late, and the peer takes the VIP
        # from a healthy host; keepalived raises its own priority when it sees it ran late.
        "    max_auto_priority",
        "}",
        "",
        f"vrrp_script {SCRIPT} {{",
        f'    script "{check.command()}"',
        f"    interval {check.interval_s}",
        f"    timeout {check.timeout_s}",
        f"    fall {check.fall}",
        f"    rise {check.rise}",
        "}",
        "",
        f"vrrp_instance {INSTANCE} {{",
        "    state BACKUP",
        f"    interface {host.interface}",
        f"    virtual_router_id {vip.virtual_router_id}",
        f"    priority {host.priority}",
        f"    advert_int {vip.advert_int_s:g}",
        *(["    nopreempt"] if vip.nopreempt else []),
        f"    unicast_src_ip {host.address}",
        "    unicast_peer {",
        *(f"        {p.address}" for p in peers),
        "    }",
        "    virtual_ipaddress {",
        f"        {vip.address} dev {host.interface}",
        "    }",
        "    track_script {",
        f"        {SCRIPT}",
        "    }",
        "}",
    ]
    return "\n".join(out) + "\n"


def render_all(
    balancers: Sequence[LoadBalancer], vip: VirtualIP, check: HealthCheck | None = None
) -> dict[str, str]:
    """Every load balancer's keepalived.conf, by its name."""
    return {b.name: render_keepalived(b.name, balancers, vip, check) for b in balancers}
