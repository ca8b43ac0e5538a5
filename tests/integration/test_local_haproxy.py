"""A real HAProxy in front of two tiny HTTP backends: the configuration is valid, traffic is
balanced by the weight each node's agent asks for (the leader's 1%), a node failing /readyz
leaves the rotation, a node that dies mid-traffic costs no request (retry-on + redispatch +
a buffered body), and a reload refuses no request."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from runnerhub.dev.cluster.haproxy import (
    HAProxyError,
    LocalHAProxy,
    TlsFront,
    check_config,
    parse_show_proc,
    render_config,
)
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.tls import LocalCA
from runnerhub.dev.waiting import wait_until_sync
from runnerhub.health import checks
from runnerhub.health.model import Outcome
from runnerhub.lb.agent import LoadBalancerAgent
from runnerhub.render.haproxy import BACKEND, WEBHOOKS

REPO = Path(__file__).resolve().parents[2]
PRODUCTION_PEM = "/etc/haproxy/certs/runnerhub.pem"
# Larger than HAProxy's default 16 KiB buffer: a replay needs the whole request in one.
BODY = json.dumps({"action": "queued", "pad": "x" * 24_000}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so HAProxy reuses server connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.conns.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        if self.path == "/readyz":
            self._answer(200 if self.server.backend.ready else 503, {"ready": True})
        else:
            self._answer(404, {})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self._answer(
            200,
            {
                "backend": self.server.backend.name,
                "sha256": hashlib.sha256(body).hexdigest(),
                "id": self.headers.get("x-request-id"),
                "proto": self.headers.get("x-forwarded-proto"),
            },
        )

    def _answer(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        # One write for head and body: a backend killed between two writes would send a
        # truncated response, which no proxy may replay (the client already has part of it).
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, backend: HttpBackend) -> None:
        self.backend = backend
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # connections we cut on purpose


@dataclass
class HttpBackend:
    """A stand-in RunnerHub node: /readyz, and POSTs answered with its name."""

    name: str
    ready: bool = True
    _server: _Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    port: int = 0

    def start(self) -> None:
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def entry(self) -> tuple[str, str, int]:
        return (self.name, "127.0.0.1", self.port)

    def close(self) -> None:
        """Die like a crashed node: the port refuses, open connections are cut."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._server.lock:
            conns = list(self._server.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._server = None


@pytest.fixture
def backends() -> Iterator[list[HttpBackend]]:
    made = [HttpBackend("node-a"), HttpBackend("node-b"), HttpBackend("node-c")]
    for b in made:
        b.start()
    try:
        yield made
    finally:
        for b in made:
            b.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[LocalHAProxy]:
    hp = LocalHAProxy(tmp_path / "haproxy")
    try:
        yield hp
    finally:
        hp.stop()


def post(client: httpx.Client, i: int) -> tuple[int, str]:
    """POST a webhook-sized body; (status, backend that answered). The echoed digest proves
    the backend got the whole body, replay or not."""
    r = client.post("/webhooks/github", content=BODY, headers={"x-request-id": str(i)})
    if r.status_code != 200:
        return r.status_code, ""
    answer = r.json()
    assert answer["sha256"] == hashlib.sha256(BODY).hexdigest() and answer["id"] == str(i)
    return r.status_code, str(answer["backend"])


@dataclass
class Load:
    """Clients POSTing in a loop from threads until stopped; every outcome is kept."""

    url: str
    threads: int = 4
    keepalive: bool = True
    results: list[tuple[float, float, int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(30)

    def _run(self, n: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=4 if self.keepalive else 0)
        with httpx.Client(base_url=self.url, timeout=20, limits=limits) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                began = time.monotonic()
                try:
                    status, backend = post(client, n * 1_000_000 + i)
                except (httpx.HTTPError, AssertionError, ValueError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.results.append((began, time.monotonic(), status, backend))

    def count(self) -> int:
        return len(self.results)

    def served_since(self, t: float) -> Counter[str]:
        return Counter(b for began, _, s, b in list(self.results) if began >= t and s == 200)

    def failures(self) -> list[str]:
        bad = [f"HTTP {s}" for _, _, s, _ in self.results if s != 200]
        return bad + self.errors


def routed(hp: LocalHAProxy, n: int = 8) -> Counter[str]:
    with httpx.Client(base_url=hp.url, timeout=10) as client:
        return Counter(post(client, i)[1] for i in range(n))


def test_the_generated_configuration_passes_haproxy_check(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    nodes = [("node-1", "127.0.0.1", 18081), ("node-2", "127.0.0.1", 18082)]
    text = render_config(nodes, 18080, 18404)
    for line in [
        "option http-buffer-request",
        "retry-on conn-failure empty-response response-timeout 502 503 504",
        "option redispatch 1",
        "option httpchk GET /readyz",
        "http-check expect status 200",
    ]:
        assert line in text
    assert "postgres" not in text  # the Patroni section is off by default
    cfg.write_text(text)
    check_config(cfg)

    patroni = [("pg-1", "127.0.0.1", 15432, 18008), ("pg-2", "127.0.0.1", 15433, 18009)]
    cfg.write_text(render_config(nodes, 18080, None, postgres_port=15000, postgres_members=patroni))
    assert "option httpchk GET /primary" in cfg.read_text()
    check_config(cfg)

    cfg.write_text(text.replace("empty-response", "empty-reply"))
    with pytest.raises(HAProxyError, match="empty-reply"):
        check_config(cfg)


def sections(text: str) -> dict[str, set[str]]:
    """A configuration's directives by section, comments, binds and servers left out."""
    out: dict[str, set[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith(" "):
            current = line.strip()
            out[current] = set()
        elif not line.strip().startswith(("bind ", "server ", "log ", "maxconn ")):
            out[current].add(" ".join(line.split()))
    return out


def test_the_production_example_passes_haproxy_check_and_matches_the_generated_one(
    tmp_path: Path,
) -> None:
    # haproxy -c reads the certificate: the example's, made by a local CA, in its place.
    pem = LocalCA(tmp_path / "ca").issue("runnerhub").bundle(tmp_path / "runnerhub.pem")
    example = tmp_path / "haproxy.cfg"
    text = (REPO / "deploy" / "haproxy.cfg").read_text()
    assert PRODUCTION_PEM in text
    example.write_text(text.replace(PRODUCTION_PEM, str(pem)))
    check_config(example)
    tls = TlsFront(443, Path(PRODUCTION_PEM))
    ours = sections(
        render_config([], 8080, 8404, tls=tls, slots=16).replace(str(pem), PRODUCTION_PEM)
    )
    theirs = sections(text)
    for name in [
        "defaults",
        "backend runnerhub_webhooks",
        "backend runnerhub_nodes",
        "frontend stats",
    ]:
        assert ours[name] == theirs[name], name
    assert ours["frontend runnerhub"] <= theirs["frontend runnerhub"]
    assert ours["global"] <= theirs["global"]


def test_show_proc_is_parsed() -> None:
    text = (
        "#<PID>          <type>          <reloads>       <uptime>        <version>\n"
        "1162            master          5 [failed: 1]   0d00h02m07s     2.6.12\n"
        "# workers\n1271            worker          0               0d00h00m00s     2.6.12\n"
        "# old workers\n1233            worker          3               0d00h00m43s     2.6.12\n"
    )
    failed, procs = parse_show_proc(text)
    assert failed == 1
    assert [(p.pid, p.kind, p.reloads, p.old) for p in procs] == [
        (1162, "master", 5, False),
        (1271, "worker", 0, False),
        (1233, "worker", 3, True),
    ]


def test_requests_are_balanced_and_a_node_failing_readyz_leaves_the_rotation(
    proxy: LocalHAProxy, backends: list[HttpBackend]
) -> None:
    a, b, _ = backends
    began = time.monotonic()
    proxy.start([a.entry, b.entry])
    print(f"haproxy started in {time.monotonic() - began:.2f}s")
    assert proxy.pid is not None and proxy.url.endswith(str(proxy.frontend_port))

    assert set(routed(proxy, 20)) == {"node-a", "node-b"}  # drawn at random, by weight

    a.ready = False
    began = time.monotonic()
    wait_until_sync(lambda: routed(proxy, 6) == Counter({"node-b": 6}), 3, "node-a to leave")
    print(f"traffic left a node failing /readyz in {time.monotonic() - began:.2f}s")
    assert proxy.server_states()["node-a"].startswith("DOWN")

    a.ready = True
    wait_until_sync(lambda: len(routed(proxy, 6)) == 2, 5, "node-a to come back")


@contextlib.contextmanager
def agents(leader: list[str], *names: str) -> Iterator[dict[str, int]]:
    """A LoadBalancerAgent for each name (a node's), in an event loop of its own, answering
    as the leader while its name is `leader[0]`; their ports by name."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    made = [LoadBalancerAgent("127.0.0.1", free_port(), lambda n=n: leader[0] == n) for n in names]
    try:
        for a in made:
            asyncio.run_coroutine_threadsafe(a.start(), loop).result(5)
        yield {n: a.port for n, a in zip(names, made, strict=True)}
    finally:
        for a in made:
            asyncio.run_coroutine_threadsafe(a.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_the_leaders_agent_keeps_deliveries_away_from_it_unless_it_is_the_only_node(
    tmp_path: Path, backends: list[HttpBackend]
) -> None:
    a, b, _ = backends
    leader = ["node-a"]
    with agents(leader, "node-a", "node-b") as ports:
        hp = LocalHAProxy(tmp_path / "haproxy", agent_ports=ports)
        try:
            hp.start([a.entry, b.entry])
            wait_until_sync(
                lambda: hp.server_weights() == {"node-a": 1, "node-b": 100},
                5,
                "the leader's agent to ask for 1%",
            )
            assert hp.server_weights(BACKEND) == {"node-a": 1, "node-b": 1}  # API: untouched
            # The weights are HAProxy's draw (balance random(2)): about 1 delivery in 200
            # reaches the leader (at equal weights, 20 of these 40 would).
            assert routed(hp, 40)["node-a"] <= 4

            leader[0] = "node-b"  # leadership moves: the weights follow within agent-inter
            wait_until_sync(
                lambda: hp.server_weights() == {"node-a": 100, "node-b": 1}, 5, "the swap"
            )
            assert routed(hp, 40)["node-b"] <= 4

            # The leader's 1% is a weight, not a state: alone, it takes every delivery.
            a.ready = False
            wait_until_sync(
                lambda: routed(hp, 6) == Counter({"node-b": 6}), 5, "the leader to take all"
            )
            assert hp.server_states()["node-b"] == "UP"
        finally:
            hp.stop()


def test_a_node_dying_under_load_costs_no_request(
    proxy: LocalHAProxy, backends: list[HttpBackend]
) -> None:
    a, b, _ = backends
    proxy.start([a.entry, b.entry])
    with Load(proxy.url) as load:
        wait_until_sync(lambda: len(load.served_since(0)) == 2, 5, "both nodes to serve")
        a.close()
        closed = time.monotonic()
        wait_until_sync(
            lambda: proxy.server_states()["node-a"].startswith("DOWN"), 5, "node-a to be down"
        )
        down = time.monotonic()
        wait_until_sync(lambda: load.served_since(down)["node-b"] >= 50, 10, "more traffic")
    after = load.served_since(closed)
    counters = proxy.backend_counters()
    print(
        f"{load.count()} POSTs, {sum(after.values())} after node-a died, which HAProxy marked "
        f"down {down - closed:.2f}s later; retries {counters.get('wretr')}, "
        f"redispatches {counters.get('wredis')}"
    )
    assert load.failures() == []
    assert set(after) == {"node-b"}
    # Requests did meet the dead node (and were replayed): the test proved something.
    assert counters["wredis"] > 0


@pytest.mark.parametrize("keepalive", [False, True], ids=["new-connections", "keep-alive"])
def test_a_reload_with_new_backends_fails_no_request(
    proxy: LocalHAProxy, backends: list[HttpBackend], keepalive: bool
) -> None:
    """New connections meet the listening sockets handed from the old worker to the new;
    kept-alive ones are closed by the old worker only after an answer (with "Connection:
    close"), never while idle, when a request may be on its way."""
    a, b, c = backends
    proxy.start([a.entry])
    master = proxy.pid
    with Load(proxy.url, keepalive=keepalive) as load:
        wait_until_sync(lambda: load.count() >= 20, 5, "traffic")
        began = time.monotonic()
        proxy.reload([a.entry, b.entry])
        print(f"reload took {time.monotonic() - began:.3f}s")
        t = time.monotonic()
        wait_until_sync(lambda: set(load.served_since(t)) == {"node-a", "node-b"}, 5, "node-b")
        proxy.reload([c.entry])
        t = time.monotonic()
        wait_until_sync(lambda: load.served_since(t)["node-c"] >= 50, 5, "node-c")
    assert set(load.served_since(t)) == {"node-c"}
    assert load.failures() == []
    assert proxy.pid == master and proxy.backends == [c.entry]
    assert "server node-c" in proxy.config_file.read_text()

    pids = [p.pid for p in proxy.processes()]
    assert len(pids) >= 2  # the master and at least its current worker
    proxy.stop()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_a_bad_configuration_is_refused_before_the_running_proxy_sees_it(
    proxy: LocalHAProxy, backends: list[HttpBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, _ = backends
    proxy.start([a.entry])
    good = proxy.config_file.read_text()

    def broken(_: object) -> str:
        return good.replace("balance roundrobin", "balance nope")

    monkeypatch.setattr(proxy, "render", broken)
    with pytest.raises(HAProxyError, match="balance only supports"):
        proxy.reload([a.entry])
    assert proxy.config_file.read_text() == good
    assert routed(proxy, 2) == Counter({"node-a": 2})


def test_tls_is_terminated_plain_http_is_redirected_and_a_flooding_source_gets_429(
    tmp_path: Path, backends: list[HttpBackend]
) -> None:
    """HTTPS with a certificate from a local CA (verified by the client), X-Forwarded-Proto
    and HSTS on it; plain HTTP answered only with a 308 to HTTPS; more than the per-source
    limit of deliveries in 10 s answered 429 by HAProxy, other paths not limited."""
    ca = LocalCA(tmp_path / "ca")
    pem = ca.issue("haproxy").bundle(tmp_path / "haproxy.pem")
    hp = LocalHAProxy(tmp_path / "haproxy", tls=TlsFront(free_port(), pem), webhook_rate_per_10s=5)
    try:
        hp.start([backends[0].entry])
        assert hp.https_url is not None
        with httpx.Client(
            base_url=hp.https_url, verify=ssl.create_default_context(cafile=ca.cert), timeout=5
        ) as c:
            wait_until_sync(lambda: c.get("/readyz").status_code == 200, 10, "a node up")
            r = c.post("/webhooks/github", content=BODY)
            assert r.status_code == 200 and r.json()["backend"] == "node-a"
            assert r.json()["proto"] == "https"
            assert r.headers["strict-transport-security"] == "max-age=31536000"
            statuses = [c.post("/webhooks/github", content=BODY).status_code for _ in range(6)]
            assert statuses.count(429) >= 1 and statuses[:4] == [200] * 4, statuses
            assert c.get("/readyz").status_code == 200  # not a delivery: not limited
        with (
            httpx.Client(base_url=hp.https_url, timeout=5) as untrusting,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            untrusting.get("/readyz")
        r = httpx.post(
            f"{hp.url}/webhooks/github?x=1",
            content=BODY,
            headers={"Host": "runnerhub.example"},
            timeout=5,
        )
        assert r.status_code == 308
        assert r.headers["location"] == "https://runnerhub.example/webhooks/github?x=1"
    finally:
        hp.stop()


def test_the_load_balancers_check_reads_each_haproxy_and_says_what_is_down(
    proxy: LocalHAProxy, backends: list[HttpBackend]
) -> None:
    """The nodes' `load_balancers` health check (and so the dashboard) against a real
    HAProxy's stats page: each server's state; a backend with nobody up, and a stats page
    that does not answer (a closed port), make it degraded, never failing."""
    a, b, _ = backends
    proxy.start([a.entry, b.entry])
    url = proxy.stats_url
    assert url is not None
    closed = f"http://127.0.0.1:{free_port()}/stats"

    async def run(urls: list[str]) -> Outcome:
        async with httpx.AsyncClient(timeout=1) as http:
            return await checks.load_balancers(urls, http)()

    def states(o: Outcome) -> dict[str, str]:
        return {s["server"]: s["status"] for s in o.detail["servers"] if s["backend"] == WEBHOOKS}

    wait_until_sync(lambda: asyncio.run(run([url])).status == "ok", 5, "both up")
    ok = asyncio.run(run([url]))
    assert states(ok) == {"node-a": "up", "node-b": "up"}
    assert {s["addr"] for s in ok.detail["servers"] if s["server"] == "node-a"} == {
        f"127.0.0.1:{a.port}"
    }

    a.ready = b.ready = False
    both = {BACKEND, WEBHOOKS}  # each checks the nodes on its own
    wait_until_sync(
        lambda: {b.split()[-1] for b in asyncio.run(run([url])).detail["backends_down"]} == both,
        5,
        "nobody up in either backend",
    )
    down = asyncio.run(run([url, closed]))
    assert down.status == "degraded" and states(down) == {"node-a": "down", "node-b": "down"}
    assert down.message is not None and WEBHOOKS in down.message and closed in down.message, (
        down.message
    )
    assert down.detail["unreachable"] == [f"{closed}: ConnectError"]
