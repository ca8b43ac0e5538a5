"""The evaluation stack of deploy/compose/ as a user would run it: the images `make image`
builds (from the cache when this checkout's were built before), `podman-compose up` of the
shipped compose file, three nodes electing a leader, seen through HAProxy; a job queued at
the GitHub simulator runs; the leader's container is SIGKILLed, another node leads and a
second job runs; the PostgreSQL primary's container (Patroni) is SIGKILLed, a standby is
promoted and a third job runs. Podman has a configuration and storage of its own under the test's
directory (ImageEngine), so neither the host's containers nor other tests' are touched."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from runnerhub.dev.cluster.node_image import CHECKOUT, ImageEngine, ensure_images
from runnerhub.dev.cluster.podman import PodmanError
from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.waiting import wait_until_sync

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("podman") is None or shutil.which("podman-compose") is None,
        reason="needs podman and podman-compose (make system installs both)",
    ),
]

COMPOSE = CHECKOUT / "deploy" / "compose" / "compose.yaml"
NODES = ("node1", "node2", "node3")
PG_MEMBERS = ("pg1", "pg2", "pg3")
LINUX = ["self-hosted", "linux", "x64"]


@dataclass
class Stack:
    engine: ImageEngine
    project: str
    env: dict[str, str]
    api: httpx.Client  # through HAProxy, with the admin token
    sim: httpx.Client
    logs: Path

    def compose(self, *args: str, timeout_s: float = 180) -> str:
        r = subprocess.run(
            ["podman-compose", "--no-ansi", "-p", self.project, "-f", str(COMPOSE), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout_s,
            check=False,
        )
        assert r.returncode == 0, f"podman-compose {' '.join(args)}: {r.stderr[-3000:]}"
        return r.stdout

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def leader(self) -> tuple[str, int] | None:
        """The leader and its epoch, as any node answers through HAProxy."""
        try:
            r = self.api.get("/api/v1/cluster")
            body: dict[str, Any] = r.json() if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return None
        if body.get("leader") is None or body.get("epoch") is None:
            return None
        return str(body["leader"]), int(body["epoch"])

    def pg_primary(self, ask: str) -> str | None:
        """The Patroni leader, as member `ask` sees it (patronictl in its container)."""
        try:
            out = self.engine.podman(
                "exec",
                self.container(ask),
                "patronictl",
                "-c",
                "/etc/runnerhub-compose/patroni.yml",
                "list",
                "-f",
                "json",
            )
            members = json.loads(out)
        except (PodmanError, subprocess.SubprocessError, ValueError):
            return None
        leaders = [m["Member"] for m in members if m["Role"] == "Leader"]
        running = [m for m in members if m["Member"] in leaders and m["State"] == "running"]
        return leaders[0] if len(leaders) == 1 and running else None

    def enqueue(self) -> int:
        r = self.sim.post(
            "/_sim/jobs",
            json={"repository": "acme/web", "labels": LINUX, "duration_s": 0.5, "count": 1},
        )
        r.raise_for_status()
        return int(r.json()["jobs"][0]["id"])

    def completed(self, job_id: int) -> dict[str, Any] | None:
        try:
            jobs = self.sim.get("/_sim/jobs").json()["jobs"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        job = next((j for j in jobs if j["id"] == job_id), None)
        return job if job is not None and job["status"] == "completed" else None

    def save_logs(self) -> None:
        """Every container's output as <service>.log under the test's directory, where the
        report of a failed test shows it (tests/conftest.py)."""
        self.logs.mkdir(exist_ok=True)
        for service in ("etcd1", *PG_MEMBERS, "haproxy-pg", "github-sim", *NODES, "haproxy"):
            with contextlib.suppress(Exception):
                r = subprocess.run(
                    ["podman", "logs", self.container(service)],
                    capture_output=True,
                    text=True,
                    env=self.env,
                    timeout=30,
                    check=False,
                )
                (self.logs / f"{service}.log").write_text(r.stdout + r.stderr)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    engine = ImageEngine(tmp_path / "engine").prepare()
    try:
        ensure_images(engine)
        http_port, sim_port = free_port(), free_port()
        token = secrets.token_hex(32)
        env = {
            **engine.env(),
            "RH_WEBHOOK_SECRET": secrets.token_hex(32),
            "RH_GITHUB_TOKEN": secrets.token_hex(20),
            "RH_ADMIN_TOKEN": token,
            "RH_DB_PASSWORD": secrets.token_hex(16),
            "RH_PG_SUPERUSER_PASSWORD": secrets.token_hex(16),
            "RH_PG_REPLICATION_PASSWORD": secrets.token_hex(16),
            "RH_HTTP_PORT": str(http_port),
            "RH_SIM_PORT": str(sim_port),
        }
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(
                base_url=f"http://127.0.0.1:{http_port}", headers=headers, timeout=5
            ) as api,
            httpx.Client(base_url=f"http://127.0.0.1:{sim_port}", timeout=5) as sim,
        ):
            s = Stack(engine, f"rh{secrets.token_hex(4)}", env, api, sim, tmp_path / "logs")
            try:
                s.compose("up", "-d")
                yield s
            finally:
                # Its containers; their volumes, the network and the images go with the
                # engine's storage (`down -v` would take a second per volume).
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    s.compose("down", timeout_s=120)
    finally:
        engine.destroy()


# pytest-timeout counts the fixture too: with no cached image (a fresh machine, or every
# change to RunnerHub's sources for the node image) the stack's setup builds them first,
# 4 minutes of the 5 on two busy cores (2026-12-07), and its teardown then had too little.
@pytest.mark.timeout(600)
def test_the_compose_stack_elects_runs_jobs_and_survives_its_leaders_and_primarys_sigkill(
    stack: Stack,
) -> None:
    try:
        primary = wait_until_sync(
            lambda: stack.pg_primary("pg1"), 90, "a Patroni primary", interval_s=0.5
        )
        leader, epoch = wait_until_sync(
            stack.leader, 90, "a leader reported through HAProxy", interval_s=0.25
        )
        assert leader in NODES
        # The image's HEALTHCHECK passes on a serving node, which runs as its own user.
        node = stack.container(leader)
        assert stack.engine.podman("healthcheck", "run", node).strip() in ("", "healthy")
        assert stack.engine.podman("exec", node, "id", "-u").strip() == "10001"
        # Patroni as `make deps` has it (patroni.lock), not Debian's 3.0.2.
        version = stack.engine.podman("exec", stack.container("pg1"), "patroni", "--version")
        assert version.split() == ["patroni", "3.0.4"], version

        first = stack.enqueue()
        done = wait_until_sync(
            lambda: stack.completed(first), 60, f"job {first} completed", interval_s=0.25
        )
        assert done["conclusion"] == "success", done

        stack.engine.podman("kill", "--signal", "KILL", stack.container(leader))
        new_leader, new_epoch = wait_until_sync(
            lambda: (lead := stack.leader()) and lead[0] != leader and lead,
            30,
            f"a node other than {leader} leading",
            interval_s=0.1,
        )
        assert new_leader in NODES
        assert new_epoch > epoch
        state = stack.engine.podman(
            "inspect", "--format", "{{.State.Status}}", stack.container(leader)
        )
        assert state.strip() == "exited"

        second = stack.enqueue()
        done = wait_until_sync(
            lambda: stack.completed(second), 60, f"job {second} completed", interval_s=0.25
        )
        assert done["conclusion"] == "success", done

        # PostgreSQL's primary container SIGKILLed: Patroni promotes the synchronous
        # standby, HAProxy's port 5000 leads the nodes to it, and a third job runs.
        stack.engine.podman("kill", "--signal", "KILL", stack.container(primary))
        survivor = next(m for m in PG_MEMBERS if m != primary)
        promoted = wait_until_sync(
            lambda: (p := stack.pg_primary(survivor)) and p != primary and p,
            60,
            f"a Patroni primary other than {primary}",
            interval_s=0.5,
        )
        assert promoted in PG_MEMBERS
        third = stack.enqueue()
        done = wait_until_sync(
            lambda: stack.completed(third), 90, f"job {third} completed", interval_s=0.25
        )
        assert done["conclusion"] == "success", done
        assert len(done["executions"]) == 1, done
    except BaseException:
        stack.save_logs()
        raise
