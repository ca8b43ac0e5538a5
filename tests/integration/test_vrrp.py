"""Two HAProxy hosts behind one virtual IP held by keepalived (VRRP), for real.

Network namespaces on one bridge: `lb1` and `lb2` each run HAProxy (`render_config`, bound
to the VIP) and keepalived (`render_keepalived`); `app` stands in for the RunnerHub nodes
(answers each delivery 202 and records its id and which load balancer forwarded it);
`client` stands in for GitHub: ~20 deliveries a second to VIP:port, each with its own id,
a failed one sent again after 1 s up to 3 times (the way a redelivery would). Under that
load the HAProxy holding the VIP is SIGKILLed, then the keepalived holding it: the VIP
moves within 3 s and every delivery reaches the app at least once.

The app and the client are threads of this process moved into their namespaces (setns), so
every timestamp is on one monotonic clock. `Lab` is also what bench/vip_failover.py runs.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv4Interface, IPv6Address
from pathlib import Path
from types import TracebackType

import pytest

from runnerhub.dev.cluster import netns
from runnerhub.dev.cluster.haproxy import check_config, find_haproxy, render_config
from runnerhub.dev.cluster.netns import Network
from runnerhub.dev.cluster.process import find_binary
from runnerhub.dev.waiting import wait_until_sync
from runnerhub.render.keepalived import (
    HealthCheck,
    LoadBalancer,
    VirtualIP,
    render_all,
    render_keepalived,
)

VIP = IPv4Interface("10.213.0.100/24")
PORT = 8080  # HAProxy's frontend on the VIP; the app listens on the same port
STATS_PORT = 8404  # HAProxy's stats page on loopback: keepalived's health check asks it
ROUTER_ID = 51
# VRRPv3 lets adverts go every 0.5 s: a dead keepalived is noticed after 3 missed adverts
# plus the skew, ~1.8 s, inside the 3 s target (with 1 s adverts it would be ~3.6 s).
ADVERT_INT_S = 0.5
PRIORITIES = {"lb1": 150, "lb2": 100}
RATE = 20.0  # deliveries a second
RETRY_AFTER_S = 1.0
RETRIES = 3
ATTEMPT_TIMEOUT_S = 2.0
TARGET_S = 3.0
WEBHOOK_PATH = "/webhooks/github"
STATE = re.compile(r"\(runnerhub\) Entering (\w+) STATE")


def keepalived_binary() -> str:
    return str(
        find_binary(
            "keepalived",
            RuntimeError,
            "apt-get install keepalived (`make system` does)",
            then=[Path("/usr/sbin/keepalived")],
        )
    )


def config_test(conf: Path, in_netns: Network | None = None, name: str = "") -> str:
    """`keepalived -t` (config test mode: it exits 0 only if it found no error)."""
    argv = [keepalived_binary(), "-t", "-f", str(conf)]
    full = in_netns.argv(name, argv) if in_netns else argv
    proc = subprocess.run(full, capture_output=True, text=True, check=False, timeout=30)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, (
        f"keepalived -t rejected {conf} (exit {proc.returncode}):\n{output}"
    )
    return output


# -- the RunnerHub nodes' stand-in ----------------------------------------------------------


@dataclass(frozen=True)
class Received:
    delivery: str
    via: IPv4Address  # the load balancer that forwarded it (HAProxy connects from its own IP)
    at: float


class _AppServer(ThreadingHTTPServer):
    daemon_threads = True
    received: list[Received]
    lock: threading.Lock


class _AppHandler(BaseHTTPRequestHandler):
    server: _AppServer

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/readyz" else 404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != WEBHOOK_PATH:
            self._answer(404)
            return
        r = Received(
            self.headers["X-GitHub-Delivery"], IPv4Address(self.client_address[0]), time.monotonic()
        )
        with self.server.lock:
            self.server.received.append(r)
        self._answer(202)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class App:
    def __init__(self, net: Network) -> None:
        self.address = net.members["app"].ip
        started = threading.Event()
        self.server: _AppServer | None = None

        def serve() -> None:
            self.server = _AppServer((str(self.address), PORT), _AppHandler)
            self.server.received = []
            self.server.lock = threading.Lock()
            started.set()
            self.server.serve_forever(poll_interval=0.05)

        self.thread = net.thread("app", serve)
        assert started.wait(5), "the app did not start"

    def received(self) -> list[Received]:
        assert self.server is not None
        with self.server.lock:
            return list(self.server.received)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# -- GitHub's stand-in ----------------------------------------------------------------------


@dataclass
class Attempt:
    sent: float
    answered: float | None = None  # when a 2xx came back
    error: str = ""


@dataclass
class Delivery:
    id: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def answered(self) -> float | None:
        return next((a.answered for a in self.attempts if a.answered is not None), None)

    @property
    def settled(self) -> bool:
        """Answered, or every attempt made and refused: nothing more will happen to it."""
        last = self.attempts[-1] if self.attempts else None
        return self.answered is not None or (
            len(self.attempts) == 1 + RETRIES and last is not None and last.error is not None
        )


class Client:
    """Sends a delivery every 1/`rate` s from the `client` namespace until stopped."""

    def __init__(self, net: Network, rate: float = RATE) -> None:
        self.deliveries: list[Delivery] = []
        self._stop = threading.Event()
        self._done = threading.Event()
        self._rate = rate
        net.thread("client", self._run)

    def _run(self) -> None:
        # Created in this thread, so its workers live in the client namespace too.
        with ThreadPoolExecutor(max_workers=64) as pool:
            due = time.monotonic()
            while not self._stop.is_set():
                d = Delivery(str(uuid.uuid4()))
                self.deliveries.append(d)
                pool.submit(self._deliver, d)
                due += 1 / self._rate
                self._stop.wait(max(0.0, due - time.monotonic()))
        self._done.set()

    def _deliver(self, d: Delivery) -> None:
        body = json.dumps({"action": "queued", "workflow_job": {"id": len(d.id)}}).encode()
        for n in range(1 + RETRIES):
            if n:
                time.sleep(RETRY_AFTER_S)  # the redelivery's delay, not a wait for a condition
            a = Attempt(time.monotonic())
            d.attempts.append(a)
            try:
                conn = http.client.HTTPConnection(str(VIP.ip), PORT, timeout=ATTEMPT_TIMEOUT_S)
                try:
                    conn.request(
                        "POST",
                        WEBHOOK_PATH,
                        body,
                        {
                            "X-GitHub-Delivery": d.id,
                            "X-GitHub-Event": "workflow_job",
                            "Content-Type": "application/json",
                        },
                    )
                    status = conn.getresponse().status
                finally:
                    conn.close()
            except OSError as exc:
                a.error = type(exc).__name__
                continue
            if 200 <= status < 300:
                a.answered = time.monotonic()
                return
            a.error = f"HTTP {status}"

    def answers(self) -> list[float]:
        return sorted(t for d in list(self.deliveries) if (t := d.answered) is not None)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop sending; return once every delivery under way has its answer or gave up."""
        self._stop.set()
        assert self._done.wait(timeout_s), "deliveries still under way"


def longest_gap(answers: list[float], until: float) -> float:
    """The longest time without a delivery answered, among answers before `until`."""
    ts = [t for t in answers if t <= until]
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


# -- a load balancer host: HAProxy + keepalived --------------------------------------------


class LbHost:
    def __init__(self, net: Network, name: str, base: Path, app: IPv4Address, conf: str) -> None:
        self.net, self.name, self.dir = net, name, base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.haproxy_cfg = self.dir / "haproxy.cfg"
        self.haproxy_cfg.write_text(
            render_config([("app", str(app), PORT)], PORT, STATS_PORT, bind_host=str(VIP.ip))
        )
        check_config(self.haproxy_cfg)
        self.keepalived_conf = self.dir / "keepalived.conf"
        self.keepalived_conf.write_text(conf)
        config_test(self.keepalived_conf, net, name)  # in the namespace: its eth0 exists
        # HAProxy binds the VIP even while another host holds it.
        net.sysctl(name, "net.ipv4.ip_nonlocal_bind", "1")
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.keepalived: subprocess.Popen[bytes] | None = None
        self.keepalived_log = self.dir / "keepalived.log"
        self._log_from = 0

    @property
    def ip(self) -> IPv4Address:
        return self.net.members[self.name].ip

    def start_haproxy(self) -> None:
        self.haproxy = self.net.spawn(
            self.name,
            [str(find_haproxy()), "-W", "-db", "-f", str(self.haproxy_cfg)],
            self.dir / "haproxy.log",
        )
        wait_until_sync(self.haproxy_alive, 10, f"{self.name}'s HAProxy", interval_s=0.05)

    def start_keepalived(self) -> None:
        self._log_from = self.keepalived_log.stat().st_size if self.keepalived_log.exists() else 0
        self.keepalived = self.net.spawn(
            self.name,
            [
                keepalived_binary(),
                *("--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp"),
                *("-f", str(self.keepalived_conf)),
                # Pid files of its own: two keepalived on one machine would share /run's.
                *("-p", str(self.dir / "keepalived.pid"), "-r", str(self.dir / "vrrp.pid")),
            ],
            self.keepalived_log,
        )

    def kill(self, what: str) -> None:
        """SIGKILL every process of HAProxy's or keepalived's (master and workers, or parent
        and VRRP child: they share a process group) and reap them."""
        proc = self.haproxy if what == "haproxy" else self.keepalived
        assert proc is not None and proc.poll() is None, f"{self.name}'s {what} is not running"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def haproxy_alive(self) -> bool:
        url = f"http://127.0.0.1:{STATS_PORT}/stats"
        probe = ["curl", "-fs", "-o", "/dev/null", "-m", "1", url]
        return self.net.run(self.name, probe, check=False).returncode == 0

    def state(self) -> str | None:
        """keepalived's last VRRP state (MASTER, BACKUP, FAULT) since it was last started."""
        with contextlib.suppress(OSError), self.keepalived_log.open("rb") as f:
            f.seek(self._log_from)
            states = STATE.findall(f.read().decode(errors="replace"))
            return states[-1] if states else None
        return None

    def has_vip(self) -> bool:
        return VIP.ip in self.net.addresses(self.name)

    def stop(self) -> None:
        for proc in (self.keepalived, self.haproxy):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


# -- the lab -------------------------------------------------------------------------------


@dataclass
class Round:
    fault: str | None  # "haproxy", "keepalived", or None for the baseline
    old: str = ""
    new: str = ""
    vip_moved_s: float | None = None  # fault → the VIP on the other host's interface
    first_answer_s: float | None = None  # fault → first delivery answered through it
    stale_vip: bool = False  # the old holder still had the VIP when it moved
    deliveries: int = 0
    lost: int = 0  # never recorded by the app
    duplicates: int = 0  # recorded more than once (a retried delivery that had got through)
    retried: int = 0
    gave_up: int = 0  # no 2xx after every retry
    longest_gap_s: float = 0.0

    def line(self) -> str:
        def s(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f} s"

        moved = (
            f"{self.fault} killed on {self.old}: VIP on {self.new} after {s(self.vip_moved_s)}, "
            f"first delivery through it {s(self.first_answer_s)}"
            if self.fault
            else f"no fault, {self.old} holding the VIP"
        )
        return (
            f"{moved}; {self.deliveries} deliveries, {self.lost} lost, "
            f"{self.duplicates} duplicates, {self.retried} retried, {self.gave_up} gave up, "
            f"longest gap {self.longest_gap_s:.2f} s"
            + (", stale VIP left on the old host" if self.stale_vip else "")
        )


class Lab:
    """The namespaces, the app, and both load balancers, lb1 holding the VIP; everything is
    removed on exit however the block ends."""

    def __init__(self, base: Path, advert_int_s: float = ADVERT_INT_S) -> None:
        self.base = base
        self.vip = VirtualIP(VIP, ROUTER_ID, advert_int_s)
        self.stack = contextlib.ExitStack()
        self.hosts: dict[str, LbHost] = {}

    def __enter__(self) -> Lab:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stack.close()

    def _start(self) -> None:
        self.net = self.stack.enter_context(Network(["lb1", "lb2", "app", "client"]))
        self.app = App(self.net)
        self.stack.callback(self.app.stop)
        lbs = [LoadBalancer(n, self.net.members[n].ip, "eth0", p) for n, p in PRIORITIES.items()]
        check = HealthCheck(url=f"http://127.0.0.1:{STATS_PORT}/stats")
        confs = render_all(lbs, self.vip, check)
        for name in PRIORITIES:
            host = LbHost(self.net, name, self.base, self.app.address, confs[name])
            self.hosts[name] = host
            self.stack.callback(host.stop)
            host.start_haproxy()
        # lb1 first, so it is the one holding the VIP when the rounds begin.
        lb1, lb2 = self.hosts["lb1"], self.hosts["lb2"]
        lb1.start_keepalived()
        wait_until_sync(
            lambda: lb1.has_vip() and lb1.state() == "MASTER", 15, "lb1 to hold the VIP"
        )
        lb2.start_keepalived()
        wait_until_sync(lambda: lb2.state() == "BACKUP", 15, "lb2 to stand by")

    def holder(self) -> LbHost:
        held = [h for h in self.hosts.values() if h.has_vip()]
        assert len(held) == 1, f"the VIP is on {[h.name for h in held]}"
        return held[0]

    @contextlib.contextmanager
    def load(self) -> Iterator[Client]:
        client = Client(self.net)
        try:
            wait_until_sync(lambda: len(client.answers()) >= RATE, 10, "a second of answers")
            yield client
        finally:
            client.stop()

    def round(self, fault: str | None, after_s: float = TARGET_S, lead_s: float = 0.0) -> Round:
        """Deliveries flowing for a second and `lead_s` more; `fault` the holder's HAProxy
        or keepalived (or nothing); measure until the VIP moved and `after_s` more, then
        count what the app got."""
        old = self.holder()
        other = next(h for h in self.hosts.values() if h is not old)
        r = Round(fault, old=old.name)
        with self.load() as client:
            if lead_s:  # more load before the fault: counted in answers, not slept
                wanted = len(client.answers()) + int(RATE * lead_s)
                wait_until_sync(lambda: len(client.answers()) >= wanted, lead_s + 10, "more load")
            t0 = time.monotonic()
            if fault is not None:
                old.kill(fault)
                wait_until_sync(other.has_vip, 15, f"the VIP on {other.name}", interval_s=0.01)
                r.vip_moved_s = time.monotonic() - t0
                r.new = other.name
                r.stale_vip = old.has_vip()

                def through_new() -> float | None:
                    ids = {x.delivery for x in self.app.received() if x.via == other.ip}
                    times = [
                        a.answered
                        for d in list(client.deliveries)
                        if d.id in ids
                        for a in d.attempts
                        if a.answered is not None and a.answered > t0
                    ]
                    return min(times) - t0 if times else None

                r.first_answer_s = wait_until_sync(
                    through_new, 15, f"a delivery answered through {other.name}", interval_s=0.01
                )
            # The load goes on for `after_s` more seconds' worth of answers, and until every
            # delivery sent so far has settled (its retries landed or ran out).
            sent = list(client.deliveries)
            wanted = len(client.answers()) + int(RATE * after_s)
            wait_until_sync(
                lambda: len(client.answers()) >= wanted and all(d.settled for d in sent),
                after_s + (1 + RETRIES) * (RETRY_AFTER_S + ATTEMPT_TIMEOUT_S) + 10,
                "the deliveries sent during the move to settle",
            )
            r.longest_gap_s = longest_gap(client.answers(), until=time.monotonic())
        got = [x.delivery for x in self.app.received()]
        seen = set(got)
        ours = {d.id for d in client.deliveries}
        r.deliveries = len(ours)
        r.lost = len(ours - seen)
        r.duplicates = sum(1 for x in got if x in ours) - len(ours & seen)
        r.retried = sum(1 for d in client.deliveries if len(d.attempts) > 1)
        r.gave_up = sum(1 for d in client.deliveries if d.answered is None)
        return r

    def restore(self, r: Round, check_no_preempt: bool = False) -> None:
        """Start again what `r` killed; the host comes back as a backup and (nopreempt)
        leaves the VIP where it is."""
        if r.fault is None:
            return
        old, new = self.hosts[r.old], self.hosts[r.new]
        if r.fault == "haproxy":
            old.start_haproxy()  # keepalived sees it after `rise` good checks
        else:
            old.start_keepalived()  # it removes the VIP it left behind, then stands by
        wait_until_sync(
            lambda: old.state() == "BACKUP" and not old.has_vip(), 15, f"{old.name} to stand by"
        )
        if check_no_preempt:
            # The higher priority is back: without nopreempt it would take the VIP within
            # an advert or two. Watch three adverts' worth.
            until = time.monotonic() + 3 * self.vip.advert_int_s
            while time.monotonic() < until:
                assert new.has_vip() and not old.has_vip(), f"{old.name} took the VIP back"
                time.sleep(0.05)


# -- the renderer, checked by keepalived itself (no root needed) ---------------------------


def _some_interface() -> str:
    """keepalived -t wants the interface to exist and not be loopback."""
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not names:
        pytest.skip("this machine has no network interface but lo")
    return names[0]


def _pair(interface: str = "eth0", **vip: object) -> tuple[list[LoadBalancer], VirtualIP]:
    lbs = [
        LoadBalancer("lb1", IPv4Address("10.0.0.5"), interface, 150),
        LoadBalancer("lb2", IPv4Address("10.0.0.6"), interface, 100),
    ]
    return lbs, VirtualIP(IPv4Interface("10.0.0.10/24"), 51, **vip)  # type: ignore[arg-type]


def test_rendered_configs_pass_keepalived_config_test(tmp_path: Path) -> None:
    lbs, vip = _pair(_some_interface(), advert_int_s=0.5)
    for name, text in render_all(lbs, vip).items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text(text)
        config_test(conf)


def test_a_broken_config_fails_the_config_test(tmp_path: Path) -> None:
    """The check above would catch a renderer mistake: keepalived -t says no to one."""
    lbs, vip = _pair(_some_interface())
    conf = tmp_path / "bad.conf"
    conf.write_text(render_keepalived("lb1", lbs, vip).replace("priority 150", "priority 300"))
    with pytest.raises(AssertionError, match="Priority not valid"):
        config_test(conf)


def test_each_host_gets_the_other_as_its_only_peer_and_no_password() -> None:
    lbs, vip = _pair()
    confs = render_all(lbs, vip)
    lb1 = confs["lb1"]
    assert "unicast_src_ip 10.0.0.5" in lb1
    assert re.search(r"unicast_peer \{\n\s+10\.0\.0\.6\n\s+\}", lb1)
    assert "unicast_src_ip 10.0.0.6" in confs["lb2"] and "priority 100" in confs["lb2"]
    for text in confs.values():
        assert "state BACKUP" in text and "nopreempt" in text and "advert_int 0.5\n" in text
        assert "authentication" not in text and "auth_pass" not in text
        assert "10.0.0.10/24 dev eth0" in text and "vrrp_version 3" in text
        # A failing check is a FAULT (no weight): with nopreempt a weight would move nothing.
        assert "weight" not in text and "track_script" in text
        assert 'script "/usr/bin/curl -fs -o /dev/null -m 0.8 http://127.0.0.1:8404/stats"' in text


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LoadBalancer("lb1", IPv4Address("10.0.0.5"), "eth0", 0), "priority"),
        (lambda: LoadBalancer("lb1", IPv4Address("10.0.0.5"), "eth0", 255), "priority"),
        (lambda: LoadBalancer("lb1", IPv4Address("10.0.0.5"), "eth 0", 100), "interface"),
        (lambda: LoadBalancer("lb1", IPv4Address("10.0.0.5"), "e" * 16, 100), "interface"),
        (lambda: LoadBalancer("lb1", "10.0.0.300", "eth0", 100), "does not appear"),  # type: ignore[arg-type]
        (lambda: LoadBalancer("lb 1", IPv4Address("10.0.0.5"), "eth0", 100), "name"),
        (lambda: VirtualIP(IPv4Interface("10.0.0.10/24"), 0), "virtual_router_id"),
        (lambda: VirtualIP(IPv4Interface("10.0.0.10/24"), 256), "virtual_router_id"),
        (lambda: VirtualIP(IPv4Interface("10.0.0.10/24"), 51, 0.005), "advert_int"),
        (lambda: VirtualIP(IPv4Interface("10.0.0.10/24"), 51, 41.0), "advert_int"),
        (lambda: HealthCheck(url='http://127.0.0.1:8404/" ; rm'), "URL"),
        (lambda: HealthCheck(curl="curl"), "absolute"),
        (lambda: HealthCheck(fall=0), "fall"),
    ],
)
def test_bad_input_is_refused(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lbs: lbs[:1], "at least two"),
        (lambda lbs: [lbs[0], LoadBalancer("lb2", lbs[1].address, "eth0", 150)], "priorities"),
        (lambda lbs: [lbs[0], LoadBalancer("lb2", lbs[0].address, "eth0", 10)], "addresses"),
        (lambda lbs: [lbs[0], LoadBalancer("lb2", IPv4Address("10.0.0.10"), "eth0", 10)], "VIP"),
        (lambda lbs: [lbs[0], LoadBalancer("lb2", IPv6Address("fd00::6"), "eth0", 10)], "family"),
    ],
)
def test_a_bad_pair_is_refused(change: object, message: str) -> None:
    lbs, vip = _pair()
    with pytest.raises(ValueError, match=message):
        render_keepalived("lb1", change(lbs), vip)  # type: ignore[operator]


def test_a_host_not_in_the_pair_is_refused() -> None:
    lbs, vip = _pair()
    with pytest.raises(ValueError, match="not one of"):
        render_keepalived("lb3", lbs, vip)


# -- the real thing ------------------------------------------------------------------------

why_not = netns.unavailable()
needs_netns = pytest.mark.skipif(why_not is not None, reason=f"needs network namespaces: {why_not}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("vrrp")) as lab:
        yield lab


def _check(r: Round) -> None:
    print(r.line())
    assert r.vip_moved_s is not None and r.vip_moved_s <= TARGET_S, r.line()
    assert r.first_answer_s is not None, r.line()
    assert r.lost == 0, r.line()


@needs_netns
def test_a_killed_haproxy_moves_the_vip_and_loses_no_delivery(lab: Lab) -> None:
    r = lab.round("haproxy")
    _check(r)
    assert not r.stale_vip, "the host in FAULT drops the VIP itself"
    lab.restore(r, check_no_preempt=True)


@needs_netns
def test_a_killed_keepalived_moves_the_vip_and_loses_no_delivery(lab: Lab) -> None:
    r = lab.round("keepalived")
    _check(r)
    # Nothing removed the VIP from the host whose keepalived died: both hold it until it
    # restarts (the new holder's gratuitous ARPs draw the traffic); the restart removes it.
    lab.restore(r)
    assert lab.holder().name == r.new
