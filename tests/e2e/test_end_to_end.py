"""End to end: GitHub simulator → webhooks → node → JIT configs → process backend → runner
simulators → jobs run. Every job runs exactly once and completes, whatever GitHub does."""

from __future__ import annotations

import random

import httpx
import pytest

from runnerhub.dev.waiting import wait_until_sync
from tests import checks
from tests.e2e.harness import Cluster
from tests.payloads import signed, workflow_job

pytestmark = pytest.mark.e2e

LINUX = ["self-hosted", "linux", "x64"]
GPU = ["self-hosted", "linux", "x64", "gpu"]
ARM = ["self-hosted", "Linux", "ARM64"]  # labels compare case-insensitively


def assert_each_ran_once(c: Cluster, ids: list[int]) -> None:
    checks.assert_each_ran_once(c.sim_url, c.dsn, ids)


def test_200_jobs_over_3_pools_each_run_exactly_once(cluster: Cluster) -> None:
    cluster.start_sim()
    cluster.start_node()
    # A node without etcd leads by itself, and says so (RunnerHubLeaderMissing stays quiet).
    wait_until_sync(
        lambda: "runnerhub_leader 1.0" in httpx.get(f"{cluster.api_url}/metrics", timeout=5).text,
        10,
        "the sole node to export runnerhub_leader 1",
    )
    rng = random.Random(2)
    ids: list[int] = []
    for n in range(40):
        labels = rng.choices([LINUX, GPU, ARM], [6, 1, 2])[0]
        ids += cluster.enqueue(cluster_repo(n), labels, count=5, duration_s=0.1)
    ids += cluster.enqueue("acme/web", ["ubuntu-latest"], count=2)  # GitHub's, not ours
    ours, hosted = ids[:-2], ids[-2:]
    assert len(ours) == 200
    cluster.wait_all_completed(ours, timeout_s=240)
    assert_each_ran_once(cluster, ours)
    cluster.wait_db_completed(ours, timeout_s=30)
    pools = {p["name"]: p for p in cluster.api("/api/v1/pools")}
    assert set(pools) == {"linux", "gpu", "arm"}
    rows = cluster.query("SELECT pool, count(*) AS n FROM jobs WHERE id = ANY(%s) GROUP BY 1", ours)
    assert {r["pool"] for r in rows} == {"linux", "gpu", "arm"}
    for job_id in hosted:
        job = cluster.api(f"/api/v1/jobs/{job_id}")
        assert (
            job["hosted"]
            and job["state"] == "queued"
            and "GitHub-hosted" in (job["waiting_reason"] or "")
        )
    # Every runner that ran has been reaped and its registration removed.
    wait_until_sync(
        lambda: (
            not [r for r in cluster.sim("GET", "/_sim/runners")["runners"] if not r.get("deleted")]
        ),
        30,
        "registrations to be removed",
    )


def cluster_repo(n: int) -> str:
    return ["acme/web", "acme/api", "solo/tool"][n % 3]


def test_dropped_and_lost_webhooks_are_healed_by_the_reconciler(cluster: Cluster) -> None:
    # Failed deliveries are redelivered; deliveries "lost" while GitHub believes they
    # arrived are found by the runs/jobs sweep.
    cluster.start_sim()
    cluster.sim(
        "POST", "/_sim/faults", json={"drop_webhooks": 0.3, "lose_webhooks": 0.2, "seed": 11}
    )
    cluster.start_node(reconciler={"interval_s": 1})
    ids = cluster.enqueue("acme/web", LINUX, count=30, duration_s=0.1)
    cluster.wait_all_completed(ids, timeout_s=120)
    assert_each_ran_once(cluster, ids)
    cluster.wait_db_completed(ids, timeout_s=60)
    repairs = cluster.query(
        "SELECT count(*) AS n FROM events WHERE kind LIKE 'job.%%' "
        "AND detail->>'source' = 'reconciler'"
    )
    assert repairs[0]["n"] > 0
    redelivered = [
        d for d in cluster.sim("GET", "/_sim/deliveries")["deliveries"] if d.get("redelivery")
    ]
    assert redelivered, "the reconciler redelivered nothing"


def test_github_errors_delay_but_never_duplicate_or_lose_a_job(cluster: Cluster) -> None:
    cluster.start_sim()
    cluster.sim(
        "POST",
        "/_sim/faults",
        json={
            "responses": {
                "generate-jitconfig": [500, 502, 422, 429, 403, 503, 500],
                "list-runners": [503],
            }
        },
    )
    cluster.start_node()
    ids = cluster.enqueue("acme/api", LINUX, count=6, duration_s=0.1)

    def a_reason_shows() -> bool:
        rows = cluster.query("SELECT waiting_reason FROM jobs WHERE id = ANY(%s)", ids)
        return any("failed" in (r["waiting_reason"] or "") for r in rows)

    wait_until_sync(a_reason_shows, 30, "a job to show its provisioning error")
    cluster.wait_all_completed(ids, timeout_s=90)
    assert_each_ran_once(cluster, ids)


def test_an_existing_registration_of_the_same_name_is_adopted_not_doubled(
    cluster: Cluster,
) -> None:
    # An earlier attempt registered the job's runner name, then died before starting it:
    # GitHub answers 409, and the scheduler must end with one runner under that name.
    cluster.start_sim()
    cluster.sim("POST", "/_sim/faults", json={"lose_webhooks": 1.0, "seed": 1})
    cluster.start_node(reconciler={"interval_s": 600})
    cluster.wait_loop_ran("reconciler")  # its first sweep must not find the job first
    [job_id] = cluster.enqueue("acme/web", GPU, count=1, duration_s=0.1)
    name = f"rh-{job_id}-1"
    jit = {"name": name, "runner_group_id": 1, "labels": GPU}
    auth = {"Authorization": f"Bearer {cluster.github_token}"}
    url = f"{cluster.sim_url}/orgs/acme/actions/runners/generate-jitconfig"
    assert httpx.post(url, headers=auth, json=jit).status_code == 201
    assert httpx.post(url, headers=auth, json=jit).status_code == 409
    cluster.sim("DELETE", "/_sim/faults")
    body, headers = signed(
        workflow_job(job_id, labels=GPU, repository="acme/web"), secret=cluster.webhook_secret
    )
    r = httpx.post(f"{cluster.api_url}/webhooks/github", content=body, headers=headers)
    assert r.status_code == 202
    cluster.wait_all_completed([job_id], timeout_s=60)
    assert_each_ran_once(cluster, [job_id])
    assert cluster.sim_jobs()[job_id]["executions"] == [name]
    replaced = cluster.query(
        "SELECT count(*) AS n FROM events WHERE subject = %s "
        "AND kind = 'runner.registration_replaced'",
        f"runner:{name}",
    )
    assert replaced[0]["n"] == 1


def test_forged_and_replayed_deliveries_change_nothing(cluster: Cluster) -> None:
    cluster.start_sim()
    cluster.start_node()
    ids = cluster.enqueue("acme/web", LINUX, count=3, duration_s=0.1)
    cluster.wait_all_completed(ids, timeout_s=60)
    cluster.wait_db_completed(ids, timeout_s=30)
    before = cluster.query("SELECT id, state, conclusion, runner_name FROM jobs ORDER BY id")
    # Replay every delivery the simulator made, with its original GUID and signature.
    for d in cluster.sim("GET", "/_sim/deliveries")["deliveries"][:20]:
        full = cluster.sim(
            "GET",
            f"/orgs/acme/hooks/1/deliveries/{d['id']}",
            headers={"Authorization": f"Bearer {cluster.github_token}"},
        )
        payload = full["request"]["payload"]
        body, headers = signed(payload, guid=d["guid"], secret=cluster.webhook_secret)
        r = httpx.post(f"{cluster.api_url}/webhooks/github", content=body, headers=headers)
        assert r.status_code in (200, 202)
    # A forged "queued" for a finished job, and a reordered stale event.
    body, headers = signed(workflow_job(ids[0], "queued", repository="acme/web"), secret="attacker")
    assert (
        httpx.post(f"{cluster.api_url}/webhooks/github", content=body, headers=headers).status_code
        == 401
    )
    body, headers = signed(
        workflow_job(ids[1], "queued", labels=LINUX, repository="acme/web"),
        secret=cluster.webhook_secret,
    )
    r = httpx.post(f"{cluster.api_url}/webhooks/github", content=body, headers=headers)
    assert r.json()["outcome"] == "stale"
    after = cluster.query("SELECT id, state, conclusion, runner_name FROM jobs ORDER BY id")
    assert after == before


def test_a_queued_job_wakes_the_scheduler_at_once_not_on_its_tick(cluster: Cluster) -> None:
    # The tick is a minute: only LISTEN/NOTIFY can explain a runner request within seconds.
    cluster.start_sim()
    cluster.start_node(scheduler={"tick_s": 60})
    cluster.wait_loop_ran("scheduler")  # its first cycle is behind it: the next needs a wake-up
    [job_id] = cluster.enqueue("acme/web", LINUX, count=1, duration_s=0.1)
    rows = wait_until_sync(
        lambda: cluster.query(
            "SELECT r.created_at - j.first_seen_at AS delay FROM runners r "
            "JOIN jobs j ON j.id = r.provisioned_for WHERE j.id = %s",
            job_id,
        ),
        10,
        "the runner request",
    )
    assert rows[0]["delay"].total_seconds() < 5
    cluster.wait_all_completed([job_id], timeout_s=30)


def test_a_github_app_node_heals_through_the_app_hook_deliveries(cluster: Cluster) -> None:
    # GitHub App auth end to end: App JWT → installation tokens that expire quickly, and
    # failed deliveries found and redelivered through /app/hook/deliveries (JWT auth).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = cluster.tmp / "app.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (cluster.tmp / "app.pem").write_text(pem)
    cluster.start_sim(
        "--app-id",
        "4242",
        "--app-public-key-file",
        str(public),
        "--installation-id",
        "77",
        "--token-ttl",
        "5",
    )
    cluster.sim("POST", "/_sim/faults", json={"drop_webhooks": 0.3, "seed": 5})
    app = {
        "app": {
            "app_id": 4242,
            "installation_id": 77,
            "private_key_file": str(cluster.tmp / "app.pem"),
        }
    }
    cluster.start_node(
        github={"auth": app, "hooks": [], "app_hook_deliveries": True}, reconciler={"interval_s": 1}
    )
    ids = cluster.enqueue("acme/web", LINUX, count=12, duration_s=0.1)
    cluster.wait_all_completed(ids, timeout_s=120)
    assert_each_ran_once(cluster, ids)
    cluster.wait_db_completed(ids, timeout_s=60)
    assert [d for d in cluster.sim("GET", "/_sim/deliveries")["deliveries"] if d.get("redelivery")]
    log = (cluster.tmp / "node.log").read_text()
    assert "BEGIN PRIVATE KEY" not in log and pem.splitlines()[1] not in log


def test_stray_registrations_are_removed_and_secrets_stay_out_of_the_log(
    cluster: Cluster,
) -> None:
    cluster.start_sim()
    cluster.start_node(reconciler={"interval_s": 1})
    auth = {"Authorization": f"Bearer {cluster.github_token}"}
    url = f"{cluster.sim_url}/orgs/acme/actions/runners/generate-jitconfig"
    for name in ("rh-stray-1", "someone-elses-runner"):
        body = {"name": name, "runner_group_id": 1, "labels": LINUX}
        assert httpx.post(url, headers=auth, json=body).status_code == 201
    # Something must give the reconciler the org scope to look at: run one job there.
    ids = cluster.enqueue("acme/web", LINUX, count=2, duration_s=0.1)
    cluster.wait_all_completed(ids, timeout_s=60)

    def registered() -> set[str]:
        return {
            r["name"]
            for r in cluster.sim("GET", "/_sim/runners")["runners"]
            if not r.get("deleted")
        }

    wait_until_sync(lambda: "rh-stray-1" not in registered(), 30, "the stray to be removed")
    assert "someone-elses-runner" in registered()  # not ours: left alone
    log = (cluster.tmp / "node.log").read_text()
    for secret in (
        cluster.github_token,
        cluster.webhook_secret,
        cluster.admin_token,
        cluster.dsn.split("password=")[1].split()[0],
    ):
        assert secret not in log
