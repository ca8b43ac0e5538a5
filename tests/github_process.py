"""The GitHub simulator as a process of its own on a free port, for tests whose nodes call
GitHub over real HTTP (`runnerhub github-sim`, as `runnerhub up` starts it)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from runnerhub.dev.cluster.local import Service
from runnerhub.dev.cluster.process import wait_ready
from runnerhub.dev.waiting import wait_until_sync

SECRET = "s3cret-current"  # the webhook secret (tests.conftest.make_settings' first)
PAT = "ghp_" + "5" * 36


@dataclass
class GitHub:
    url: str
    webhook_url: str  # where its hook delivers (at first)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {PAT}"}
        r = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kw)
        r.raise_for_status()
        return r.json()

    def enqueue(self, labels: list[str], count: int, repository: str = "acme/web") -> list[int]:
        body = {"repository": repository, "labels": labels, "count": count, "duration_s": 0.2}
        return [j["id"] for j in self.call("POST", "/_sim/jobs", json=body)["jobs"]]

    def jobs(self) -> dict[int, dict[str, Any]]:
        return {j["id"]: j for j in self.call("GET", "/_sim/jobs")["jobs"]}


@contextlib.contextmanager
def github_sim(base: Path, webhook_url: str) -> Iterator[GitHub]:
    """Organization acme with acme/web, hook 1 delivering to `webhook_url`."""
    ready = base / "ready.json"
    argv = [sys.executable, "-m", "runnerhub.cli.main", "github-sim", "--port", "0"]
    argv += ["--webhook-url", webhook_url, "--org", "acme", "--repo", "acme/web"]
    argv += ["--ready-file", str(ready), "--webhook-timeout", "2"]
    sim = Service("github-sim", argv, base / "sim.log")
    sim.start({"RUNNERHUB_SIM_WEBHOOK_SECRET": SECRET, "RUNNERHUB_SIM_PATS": PAT})
    try:
        wait_until_sync(ready.exists, 30, "the GitHub simulator")
        yield GitHub(f"http://127.0.0.1:{json.loads(ready.read_text())['port']}", webhook_url)
    finally:
        sim.stop()


RUNNER_CMD = [sys.executable, "-m", "runnerhub.dev.sim.runner", "--idle-timeout", "60"]
LINUX = ["self-hosted", "linux", "x64"]


def node_config(name: str, dsn: str, gh: GitHub, tmp: Path, **node: Any) -> dict[str, Any]:
    """A node's configuration that runs GitHub's jobs as runner-simulator processes."""
    return {
        "node": {"id": name, "state_dir": str(tmp / name), "host": "127.0.0.1", **node},
        "database": {"dsn": dsn, "pool_min_size": 1, "pool_max_size": 4},
        "webhook": {"secrets": [SECRET]},
        "github": {
            "api_url": gh.url,
            "auth": {"token": PAT},
            "organizations": ["acme"],
            "hooks": [{"organization": "acme", "hook_id": 1}],
        },
        "pools": [
            {
                "name": "linux",
                "labels": LINUX,
                "max_runners": 4,
                "process": {"command": RUNNER_CMD, "stop_grace_s": 2},
            }
        ],
        "api_tokens": [{"name": "reader", "token": "read-token-0123456789", "role": "read"}],
        "scheduler": {"tick_s": 1},
        "reconciler": {"interval_s": 2},
        "janitor": {"interval_s": 1},
    }


def start_node(config: dict[str, Any], path: Path) -> Service:
    """`runnerhub server` with `config`, once it answers /readyz."""
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    node = Service(
        config["node"]["id"],
        [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(path)],
        path.with_suffix(".log"),
    )
    node.start()
    url = f"http://127.0.0.1:{config['node']['port']}/readyz"

    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_ready(ready, 60, f"{node.name} to be ready", error=RuntimeError, watch=[node])
    return node
