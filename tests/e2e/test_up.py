"""`runnerhub up` (what `make demo` runs): starts PostgreSQL, the simulator, a node and the
demo workload; every demo job runs once; a second run on the same directory resumes."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerhub.dev.cluster.podman import LocalPodman, PodmanError
from runnerhub.dev.cluster.postgres import LocalPostgres
from tests.browser import chromium, go, rows, signed_in, text, until

pytestmark = pytest.mark.e2e


def up_command(state: Path, demo_jobs: int, exit_after_demo: bool = True) -> list[str]:
    return [
        *(sys.executable, "-m", "runnerhub.cli.main", "up", "--state-dir", str(state)),
        *("--port", "0", "--demo-jobs", str(demo_jobs)),
        *(["--exit-after-demo"] if exit_after_demo else []),
    ]


def up(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        up_command(state, demo_jobs=8),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"
    # `runnerhub up` stopped its PostgreSQL; remove the data, which may live outside tmp_path.
    LocalPostgres(tmp_path / "state" / "postgres").destroy()


def test_up_runs_the_demo_and_resumes(state: Path) -> None:
    first = up(state)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "each run once" in first.stdout
    info = json.loads((state / "cluster.json").read_text())
    assert {
        "webhook_url",
        "api_url",
        "admin_token",
        "webhook_secret",
        "github_sim_url",
        "pids",
    } <= set(info)
    assert set(info["pids"]) == {"postgres", "github-sim", "node-1"}
    for secret_file in ("cluster.json", "secrets.json", "node-1.yaml"):
        assert stat.S_IMODE((state / secret_file).stat().st_mode) == 0o600
    # Stopped cleanly: no process of it is left.
    for pid in info["pids"].values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )

    again = up(state)  # resumes: same database, same jobs, nothing enqueued twice
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads((state / "cluster.json").read_text())["admin_token"] == info["admin_token"]
    assert re.search(r"demo complete: (\d+) jobs, each run once", again.stdout)


def test_up_with_the_container_backend_says_what_is_missing(tmp_path: Path) -> None:
    """No container engine on this PATH: `up --backend container` says which and how to
    install it, before starting anything."""
    state = tmp_path / "state"
    done = subprocess.run(
        [*up_command(state, demo_jobs=1), "--backend", "container"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "podman not found: apt-get install podman runc" in done.stdout
    assert not (state / "postgres").exists()  # nothing was started


def containers_running(engine: LocalPodman) -> bool:
    if not engine.socket.exists():
        return False  # its service is not up yet
    try:
        return bool(engine.podman("ps", "--quiet").strip())
    except PodmanError:
        return False  # its storage is being made


def running_with(arg: str) -> list[Path]:
    """The processes whose command line holds `arg`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if arg.encode() in cmdline.read_bytes():
                found.append(cmdline.parent)
        except OSError:
            continue  # it exited meanwhile
    return found


def test_the_dashboard_shows_the_demo_and_ctrl_c_stops_every_process(state: Path) -> None:
    """`runnerhub up` as `make demo` runs it: its dashboard in a real browser (sign in with
    the read token from cluster.json; the one node leads; the demo's pools; demo jobs
    complete on the page without a reload); then Ctrl-C with runners running stops every
    process."""
    import signal

    from runnerhub.dev.waiting import wait_until_sync

    proc = subprocess.Popen(
        up_command(state, demo_jobs=30, exit_after_demo=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cluster_file = state / "cluster.json"
        wait_until_sync(cluster_file.exists, 60, "the cluster to come up")
        info = json.loads(cluster_file.read_text())
        pids = info["pids"]
        assert info["dashboard_url"] == f"{info['api_url']}/ui/"
        b = chromium()
        try:
            signed_in(b, info["api_url"], info["read_token"])
            until(b, lambda b: text(b, "#leader-name") == "node-1", 10)
            go(b, "work")
            until(b, lambda b: len(rows(b, "#pools tbody tr[data-pool]")) >= 1, 10)
            b.execute_script("window.__sameDocument = true")  # gone if the page reloads
            until(b, lambda b: len(rows(b, "#jobs-done tbody tr[data-job]")) >= 2, 60)
            assert b.execute_script("return window.__sameDocument === true")
        finally:
            b.quit()
        runner_dir = state / "runners" / "runners"
        # Interrupt with runners running: Ctrl-C must stop those too.
        wait_until_sync(lambda: any(runner_dir.glob("*.json")), 60, "a runner to start")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        ), pid
    records = list(runner_dir.glob("*.json"))
    for record in records:  # runner processes were stopped too
        pid = json.loads(record.read_text())["pid"]
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        ), record.name


def test_a_node_killed_mid_demo_is_started_again_and_the_demo_completes(state: Path) -> None:
    """With the container backend (`up --backend container`: a Podman API service of the
    cluster's own, the runner image from Debian's packages): node-1 is SIGKILLed while
    runner containers run; `up` starts it again, the new node adopts the containers, and
    every demo job runs once. On the way out no container and no Podman service is left."""
    import os
    import signal

    from runnerhub.dev.waiting import wait_until_sync

    engine = LocalPodman(state / "podman")
    proc = subprocess.Popen(
        [*up_command(state, demo_jobs=8), "--backend", "container"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cluster_file = state / "cluster.json"
        wait_until_sync(cluster_file.exists, 60, "the cluster to come up")
        first = json.loads(cluster_file.read_text())["pids"]["node-1"]
        wait_until_sync(lambda: containers_running(engine), 60, "a runner container to start")
        os.kill(first, signal.SIGKILL)  # what `runnerhub chaos kill node-1` does

        def restarted() -> int | None:
            pid = json.loads(cluster_file.read_text())["pids"]["node-1"]
            return pid if pid != first else None

        second = wait_until_sync(restarted, 30, "node-1 to be started again")
        assert Path(f"/proc/{second}").exists()
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "node-1 exited; started again (1 time(s) in the last minute)" in out
    assert re.search(r"demo complete: \d+ jobs, each run once", out), out[-3000:]
    assert "Podman at unix://" in out
    info = json.loads((state / "cluster.json").read_text())
    assert info["container_engine"] == engine.endpoint
    assert not running_with(str(engine.socket))  # Podman's service stopped with the cluster
    assert engine.podman("ps", "--all", "--quiet").strip() == ""  # every runner removed
    engine.destroy()
