"""A job on the local cluster (`runnerhub up`'s, as root) runs as the runner user and gets
none of RunnerHub's secrets: the job's workload (`tests/probe_secrets.py`, run in place of
the runner, which it then becomes) tries the node's environment, its configuration file,
`cluster.json`, `secrets.json`, the database password file, the node's state, the runner
records and logs, the services' logs, the simulator's state, the node process itself, and
PostgreSQL through the DSN it can guess. The job then runs to completion, once."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from runnerhub.dev.cluster.local import DEMO_POOLS, LocalCluster
from runnerhub.dev.cluster.runners import SYSTEM_PYTHON, ensure_user
from runnerhub.dev.waiting import wait_until_sync
from tests import probe_secrets

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="a runner user of its own needs root"),
]

REFUSED = "refused: Permission denied"


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    # Where `runnerhub up` keeps its state in a checkout anyone may enter (not pytest's
    # directories, which nobody else may): only the cluster's own modes keep a job out.
    parent = Path(tempfile.mkdtemp(prefix="runnerhub-up-"))
    parent.chmod(0o755)
    c = LocalCluster(parent / "state", port=0, demo_jobs=0, console=Console(file=io.StringIO()))
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_job_gets_none_of_the_clusters_secrets_and_still_runs_once(
    cluster: LocalCluster,
) -> None:
    user = ensure_user()
    setup = cluster.runners
    assert setup.user == user.pw_name and setup.work_dir is not None
    bin_dir = setup.work_dir.parent / "bin"
    probe = bin_dir / "probe.py"
    shutil.copyfile(probe_secrets.__file__, probe)
    probe.chmod(0o644)
    reports = setup.work_dir.parent / "reports"
    reports.mkdir(mode=0o700, exist_ok=True)
    os.chown(reports, user.pw_uid, user.pw_gid)  # the only place the job may write to
    state = cluster.state_dir
    where: dict[str, object] = {
        "files": {
            "config": str(state / "node-1.yaml"),
            "cluster_json": str(state / "cluster.json"),
            "secrets_json": str(state / "secrets.json"),
            "pg_password": str(state / "postgres" / "pg-password"),
            "node_log": str(state / "logs" / "node-1.log"),
            "sim_state": str(state / "github-sim.json"),
        },
        "dirs": {
            "node_state": str(state / "node-1"),
            "runner_records": str(state / "runners" / "runners"),
            "runner_logs": str(state / "runners" / "logs"),
            "logs": str(state / "logs"),
        },
        "writable": {"runner_records": str(state / "runners" / "runners")},
    }
    # The probe needs the node's pid and the DSN's host and port, which exist only once the
    # cluster runs: it reads them from a file the test writes then (as an attacker would
    # find them with `ps` and `ss`).
    target = setup.work_dir.parent / "target.json"
    command = [
        str(SYSTEM_PYTHON),
        str(probe),
        str(reports / "{name}.json"),
        f"@{target}",
        *setup.command,
    ]
    pool = {**DEMO_POOLS[0], "process": {**setup.process(stop_grace_s=5), "command": command}}
    cluster.overrides = {"pools": [pool], "scheduler": {"tick_s": 1}}
    cluster.start()
    password = cluster.dsn.split("password=")[1].split()[0]
    [node] = cluster.node_services
    where |= {"node_pid": node.pid, "conninfo": cluster.dsn.replace(f"password={password}", "")}
    target.write_text(json.dumps(where))
    target.chmod(0o644)
    job = {"repository": "acme/web", "labels": pool["labels"], "duration_s": 0.5, "count": 1}
    ids = [j["id"] for j in httpx.post(f"{cluster.sim_url}/_sim/jobs", json=job).json()["jobs"]]

    wait_until_sync(lambda: cluster.demo_progress(ids)[0] == 1, 90, "the job to complete")
    [report] = list(reports.glob("*.json"))
    got = json.loads(report.read_text())
    assert cluster.demo_progress(ids) == (1, 1, 0)  # completed, once

    assert got["uid"] == user.pw_uid
    env = got["env"]
    assert env["ACTIONS_RUNNER_INPUT_JITCONFIG"]  # the job reads its own environment...
    assert [k for k in env if k.startswith("RUNNERHUB_")] == ["RUNNERHUB_RUNNER_NAME"]
    secrets = [
        password,
        cluster.secrets.github_token,
        cluster.secrets.webhook_secret,
        cluster.secrets.admin_token,
    ]
    assert not [s for s in secrets if any(s in v for v in env.values())]
    # ...and nothing else of the cluster's.
    assert {k: v[:40] for k, v in got["files"].items()} == dict.fromkeys(got["files"], REFUSED)
    assert set(got["files"]) == {*where["files"], "node_environ"}  # type: ignore[misc]
    assert set(got["dirs"].values()) == {REFUSED}
    assert got["writable"] == {"runner_records": REFUSED}
    # PostgreSQL answers (the error is its own) but lets nobody in without the password.
    assert got["db"]["rc"] != 0 and "password" in got["db"]["err"], got["db"]
