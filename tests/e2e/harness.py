"""End-to-end harness: a real GitHub simulator process, a real RunnerHub node process and the
runner simulators its process backend starts, on free loopback ports, against the session's
PostgreSQL (a database of its own per test)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from psycopg.rows import dict_row

from runnerhub.backends.process import running_runner_pids
from runnerhub.dev.cluster.local import Service
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.waiting import wait_until_sync

ORG = "acme"
REPOS = ["acme/web", "acme/api", "solo/tool"]  # solo/tool: a repository outside the org
RUNNER_CMD = [sys.executable, "-m", "runnerhub.dev.sim.runner", "--idle-timeout", "120"]
POOLS: list[dict[str, Any]] = [
    {"name": "linux", "labels": ["self-hosted", "linux", "x64"], "max_runners": 10},
    {"name": "gpu", "labels": ["self-hosted", "linux", "x64", "gpu"], "max_runners": 3},
    {"name": "arm", "labels": ["self-hosted", "linux", "arm64"], "max_runners": 5},
]


@dataclass
class Cluster:
    tmp: Path
    dsn: str
    webhook_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    github_token: str = field(default_factory=lambda: "ghp_" + secrets.token_hex(16))
    admin_token: str = field(default_factory=lambda: "adm_" + secrets.token_hex(16))
    services: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node_urls: dict[str, str] = {}
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.sim_url = ""

    # -- processes ---------------------------------------------------------------------------

    def start_sim(self, *extra: str) -> None:
        ready = self.tmp / "sim.ready"
        sim = Service(
            "github-sim",
            [
                sys.executable,
                "-m",
                "runnerhub.dev.sim.github",
                "--port",
                "0",
                "--webhook-url",
                f"{self.api_url}/webhooks/github",
                "--webhook-secret",
                self.webhook_secret,
                "--pat",
                self.github_token,
                "--org",
                ORG,
                *[a for r in REPOS for a in ("--repo", r)],
                "--ready-file",
                str(ready),
                *extra,
            ],
            self.tmp / "github-sim.log",
        )
        sim.start()
        self.services.append(sim)
        wait_until_sync(lambda: ready.exists() or not sim.alive(), 30, "the simulator")
        assert sim.alive(), sim.tail()
        self.sim_url = f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"

    def config(self, **overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "node": {
                "id": "node-e2e",
                "host": "127.0.0.1",
                "port": self.port,
                "state_dir": str(self.tmp / "node"),
            },
            "database": {"dsn": self.dsn, "pool_max_size": 10},
            "webhook": {"secrets": [self.webhook_secret]},
            "github": {
                "api_url": self.sim_url,
                "auth": {"token": self.github_token},
                "organizations": [ORG],
                "repositories": ["solo/tool"],
                "hooks": [{"organization": ORG, "hook_id": 1}],
                "timeout_s": 5,
            },
            "pools": [{**p, "process": {"command": RUNNER_CMD, "stop_grace_s": 2}} for p in POOLS],
            "api_tokens": [{"name": "admin", "token": self.admin_token, "role": "admin"}],
            "scheduler": {"tick_s": 1, "retry_base_s": 0.2, "retry_max_s": 2},
            "janitor": {"interval_s": 0.5},
            "reconciler": {"interval_s": 3},
            "log": {"level": "info"},
        }
        for key, value in overrides.items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
        return cfg

    def start_ha_nodes(
        self, count: int, etcd_endpoints: list[str], **overrides: Any
    ) -> list[Service]:
        """`count` nodes electing a leader through etcd; node-0 listens on `self.port`
        (where the simulator sends webhooks); all share one runner state directory."""
        nodes = []
        for i in range(count):
            port = self.port if i == 0 else free_port()
            node_cfg = {
                "id": f"node-{i}",
                "port": port,
                "state_dir": str(self.tmp / f"node-{i}"),
                "runner_state_dir": str(self.tmp / "runners"),
            }
            ha = {"etcd_endpoints": etcd_endpoints, "lease_ttl_s": 2, "heartbeat_s": 0.5}
            cfg = self.config(
                **{
                    **overrides,
                    "node": {**node_cfg, **overrides.get("node", {})},
                    "ha": {**ha, **overrides.get("ha", {})},
                }
            )
            nodes.append(self._start_node_process(f"node-{i}", cfg, port))

        def all_taking_part() -> bool:  # heartbeats run beside the election loop
            info = self.api("/api/v1/cluster", base=self.node_urls[nodes[0].name])
            return sum(n["healthy"] for n in info["nodes"]) == count

        wait_until_sync(all_taking_part, 30, "every node to take part", interval_s=0.1)
        return nodes

    def node_url(self, node: Service) -> str:
        return self.node_urls[node.name]

    def _start_node_process(self, name: str, cfg: dict[str, Any], port: int) -> Service:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        node = Service(
            name,
            [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(path)],
            self.tmp / f"{name}.log",
        )
        node.start()
        self.services.append(node)
        url = f"http://127.0.0.1:{port}"
        self.node_urls[name] = url

        def ready() -> bool:
            assert node.alive(), f"{name} exited:\n{node.tail(40)}"
            try:
                return httpx.get(f"{url}/livez", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until_sync(ready, 60, f"{name} to serve", interval_s=0.1)
        return node

    def start_node(self, **overrides: Any) -> Service:
        path = self.tmp / "runnerhub.yaml"
        path.write_text(yaml.safe_dump(self.config(**overrides)))
        node = Service(
            "node",
            [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(path)],
            self.tmp / "node.log",
        )
        node.start()
        self.services.append(node)

        def ready() -> bool:
            assert node.alive(), f"the node exited:\n{node.tail(40)}"
            try:
                return httpx.get(f"{self.api_url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until_sync(ready, 60, "the node to become ready", interval_s=0.1)
        return node

    def stop(self) -> None:
        for svc in reversed(self.services):
            svc.stop()
        for d in (self.tmp / "node" / "process", self.tmp / "runners"):
            for pid in running_runner_pids(d):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)

    # -- driving and observing -------------------------------------------------------------

    def wait_loop_ran(self, loop: str, timeout_s: float = 20) -> None:
        """Until the node's control loop `loop` has finished a cycle: what a test enqueues
        afterwards reaches it through a wake-up or its next tick, not its first pass."""

        def ran() -> bool:
            text = httpx.get(f"{self.api_url}/metrics", timeout=5).text
            return f'runnerhub_control_loop_runs_total{{loop="{loop}",result="ok"}}' in text

        wait_until_sync(ran, timeout_s, f"the {loop}'s first cycle")

    def sim(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, f"{self.sim_url}{path}", timeout=10, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def enqueue(
        self, repository: str, labels: list[str], count: int = 1, duration_s: float = 0.2
    ) -> list[int]:
        body = {
            "repository": repository,
            "labels": labels,
            "count": count,
            "duration_s": duration_s,
        }
        return [j["id"] for j in self.sim("POST", "/_sim/jobs", json=body)["jobs"]]

    def sim_jobs(self) -> dict[int, dict[str, Any]]:
        return {j["id"]: j for j in self.sim("GET", "/_sim/jobs")["jobs"]}

    def api(self, path: str, base: str | None = None) -> Any:
        r = httpx.get(
            f"{base or self.api_url}{path}",
            timeout=10,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        r.raise_for_status()
        return r.json()

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, row_factory=dict_row) as conn:
            return conn.execute(sql, args).fetchall()

    def wait_all_completed(self, ids: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
        def done() -> dict[int, dict[str, Any]] | None:
            jobs = self.sim_jobs()
            return jobs if all(jobs[i]["status"] == "completed" for i in ids) else None

        try:
            return wait_until_sync(done, timeout_s, "every job to complete", interval_s=0.25)
        except AssertionError:
            jobs = self.sim_jobs()
            stuck = [(i, jobs[i]["status"]) for i in ids if jobs[i]["status"] != "completed"]
            reasons = self.query(
                "SELECT id, state, waiting_reason FROM jobs WHERE id = ANY(%s)",
                [i for i, _ in stuck[:10]],
            )
            raise AssertionError(
                f"{len(stuck)} jobs not completed, e.g. {stuck[:10]}; "
                f"RunnerHub says {reasons}\n{self.services[-1].tail(30)}"
            ) from None

    def wait_db_completed(self, ids: list[int], timeout_s: float) -> None:
        def done() -> bool:
            rows = self.query(
                "SELECT count(*) AS n FROM jobs WHERE id = ANY(%s) AND state = 'completed'", ids
            )
            return rows[0]["n"] == len(ids)

        wait_until_sync(done, timeout_s, "RunnerHub to see every job completed", interval_s=0.25)
