"""A throwaway network of Linux network namespaces, for tests that need machines with
addresses of their own (two load balancers sharing a virtual IP, a client, a server).

One namespace holds a bridge; each member is a namespace of its own joined to the bridge by
a veth pair, `eth0` inside the member with an address from `SUBNET`, and `lo` up. Nothing
is added to this machine's own namespace, so the addresses never meet its routes and the
only things to remove are the namespaces (deleting one deletes its links).

Every name carries the run's tag, `rhnet<pid>-`: runs side by side do not collide, and a
run that died leaves names whose pid is gone, which the next run removes before it starts.
Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from types import TracebackType

BASE = "rhnet"
SUBNET = IPv4Network("10.213.0.0/24")  # private; exists only inside the namespaces
FIRST_HOST = 11  # members get .11, .12, …; the rest of the range is free for virtual IPs
INTERFACE = "eth0"
BRIDGE = "br0"
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_TAGGED = re.compile(rf"^{BASE}(\d+)-")


class NetnsError(Exception):
    pass


@dataclass(frozen=True)
class Member:
    name: str  # as the caller calls it: "lb1"
    netns: str  # the namespace: "rhnet1234-lb1"
    address: IPv4Interface  # on `interface`: 10.213.0.11/24
    interface: str = INTERFACE

    @property
    def ip(self) -> IPv4Address:
        return self.address.ip


# -- decisions (pure) --------------------------------------------------------------------


def tag_for(pid: int) -> str:
    return f"{BASE}{pid}-"


def plan(names: Sequence[str], tag: str, subnet: IPv4Network = SUBNET) -> list[Member]:
    """One member per name, with consecutive addresses from `FIRST_HOST` on."""
    if len(set(names)) != len(names):
        raise ValueError(f"member names repeat: {list(names)}")
    hosts = list(subnet.hosts())
    if FIRST_HOST - 1 + len(names) > len(hosts):
        raise ValueError(f"{subnet} has no room for {len(names)} members")
    for name in names:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
            raise ValueError(f"member name {name!r}: lower-case letters, digits and '-'")
    return [
        Member(name, tag + name, IPv4Interface(f"{hosts[FIRST_HOST - 1 + i]}/{subnet.prefixlen}"))
        for i, name in enumerate(names)
    ]


def leftovers(existing: Iterable[str], alive: Callable[[int], bool], own_tag: str) -> list[str]:
    """The namespaces of ours (tagged) whose run is gone, and any carrying our own tag."""
    out = []
    for ns in existing:
        m = _TAGGED.match(ns)
        if m and (ns.startswith(own_tag) or not alive(int(m.group(1)))):
            out.append(ns)
    return sorted(out)


# -- effects -------------------------------------------------------------------------------


def unavailable() -> str | None:
    """Why this machine cannot build a network here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def namespaces() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def remove_namespace(netns: str) -> None:
    """Kill what still runs in it (a namespace outlives its name while a process holds it),
    then delete it with its links."""
    with contextlib.suppress(NetnsError):
        for pid in _ip("netns", "pids", netns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "delete", netns)


def enter(netns: str) -> None:
    """Move the calling thread (only it) into `netns`: sockets it opens from then on, and the
    threads it starts, live there. Python 3.11 has no os.setns."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if int(libc.setns(fd, _CLONE_NEWNET)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Network:
    """`Network(["lb1", "lb2", "app"])` as a context manager: built on entry, removed on exit
    however the block ends (a half-built one too)."""

    def __init__(self, names: Sequence[str], subnet: IPv4Network = SUBNET) -> None:
        self.tag = tag_for(os.getpid())
        self.subnet = subnet
        self.bridge_netns = self.tag + "bridge"
        self.members = {m.name: m for m in plan(names, self.tag, subnet)}
        self._created: list[str] = []

    def __enter__(self) -> Network:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def _add_namespace(self, netns: str) -> None:
        _ip("netns", "add", netns)
        self._created.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")

    def up(self) -> None:
        for ns in leftovers(namespaces(), _pid_alive, self.tag):
            with contextlib.suppress(NetnsError):
                remove_namespace(ns)
        self._add_namespace(self.bridge_netns)
        _ip("-n", self.bridge_netns, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.bridge_netns, "link", "set", BRIDGE, "up")
        for i, m in enumerate(self.members.values()):
            self._add_namespace(m.netns)
            port = f"p{i}"
            # Made inside the namespaces: no name ever exists in this machine's own.
            _ip(
                *("-n", self.bridge_netns, "link", "add", port, "type", "veth"),
                *("peer", "name", m.interface, "netns", m.netns),
            )
            _ip("-n", self.bridge_netns, "link", "set", port, "master", BRIDGE, "up")
            _ip("-n", m.netns, "addr", "add", str(m.address), "dev", m.interface)
            _ip("-n", m.netns, "link", "set", m.interface, "up")

    def down(self) -> None:
        """Remove every namespace this network made; try them all, then raise the first
        failure."""
        errors = []
        for ns in reversed(self._created):
            try:
                remove_namespace(ns)
            except NetnsError as exc:
                errors.append(exc)
        self._created.clear()
        if errors:
            raise errors[0]

    # -- in a member ---------------------------------------------------------------------

    def argv(self, name: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.members[name].netns, *argv]

    def run(
        self, name: str, argv: Sequence[str], check: bool = True, timeout_s: float = 30
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(name, argv), capture_output=True, text=True, check=False, timeout=timeout_s
        )
        if check and proc.returncode != 0:
            raise NetnsError(
                f"in {name}: {' '.join(argv)} exited {proc.returncode}: "
                f"{(proc.stdout + proc.stderr).strip()}"
            )
        return proc

    def spawn(self, name: str, argv: Sequence[str], log_file: Path) -> subprocess.Popen[bytes]:
        """Start `argv` in `name` in a session of its own (ours to signal, with its
        children), its output appended to `log_file`."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            return subprocess.Popen(
                self.argv(name, argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def thread(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """A daemon thread of ours that runs `target` inside `name` (started)."""
        netns = self.members[name].netns

        def inside() -> None:
            enter(netns)
            target()

        t = threading.Thread(target=inside, name=f"netns-{name}", daemon=True)
        t.start()
        return t

    def addresses(self, name: str) -> set[IPv4Address]:
        """The IPv4 addresses on the member's `eth0` now."""
        m = self.members[name]
        shown = json.loads(_ip("-n", m.netns, "-j", "addr", "show", "dev", m.interface))
        return {
            IPv4Address(a["local"])
            for link in shown
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        }

    def sysctl(self, name: str, key: str, value: str) -> None:
        """A per-namespace sysctl (net.*), written where `ip netns exec` would see it."""
        self.run(name, ["sysctl", "-q", "-w", f"{key}={value}"])
