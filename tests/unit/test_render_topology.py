"""`runnerhub render --topology`: the example topology renders files that Prometheus's and
Alertmanager's own checkers accept, with the shipped rules pointing at the topology's
runbooks, and each host's etcd, Patroni, pgBackRest, Redis, Sentinel, HAProxy and
keepalived files by its roles (each checked by its own program in test_render_checks.py);
a wrong topology is refused naming the file and the field, and nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runnerhub.render.topology import load_topology
from tests.unit.test_alerting_config import check, tool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "topology.yaml"
RUNNERHUB = str(Path(sys.executable).parent / "runnerhub")


def render(topology: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNNERHUB, "render", "--topology", str(topology), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_renders_files_their_programs_accept(tmp_path: Path) -> None:
    done = render(EXAMPLE, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Not rendered" not in done.stdout  # everything the topology describes is written
    check(tool("promtool"), "check", "config", str(tmp_path / "prometheus" / "prometheus.yml"))
    check(tool("amtool"), "check-config", str(tmp_path / "alertmanager" / "alertmanager.yml"))
    scraped = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    labels = [s["labels"] for s in scraped["scrape_configs"][0]["static_configs"]]
    assert {"node": "rh-dr1", "region": "eu-north"} in labels and len(labels) == 4
    rules = (tmp_path / "prometheus" / "runnerhub-alerts.yml").read_text()
    base = load_topology(EXAMPLE).alerting.runbook_base_url
    assert f"{base}RunnerHubLeaderMissing.md" in rules


def test_each_host_gets_the_files_of_its_roles_and_no_other(tmp_path: Path) -> None:
    assert render(EXAMPLE, tmp_path).returncode == 0
    per_role = {
        "etcd": ["etcd/etcd.conf.yml"],
        "postgres": ["patroni/patroni.yml", "pgbackrest/pgbackrest.conf"],
        "redis": ["redis/redis.conf", "redis/sentinel.conf"],
        "haproxy": ["haproxy/haproxy.cfg", "keepalived/keepalived.conf"],
    }
    for region in load_topology(EXAMPLE).regions:
        for host in region.hosts:
            want = {f for role in host.roles for f in per_role.get(role, [])}
            got = {
                str(p.relative_to(tmp_path / host.name))
                for p in (tmp_path / host.name).rglob("*")
                if p.is_file()
            }
            assert got == want, host.name
    # The standby region: its own one-member etcd, a standby cluster of the active one.
    etcd = yaml.safe_load((tmp_path / "rh-dr1" / "etcd" / "etcd.conf.yml").read_text())
    assert etcd["initial-cluster"] == "rh-dr1=https://10.1.1.11:2380"
    patroni = yaml.safe_load((tmp_path / "rh-dr1" / "patroni" / "patroni.yml").read_text())
    standby = patroni["bootstrap"]["dcs"]["standby_cluster"]
    assert (standby["host"], standby["port"]) == ("10.0.1.10", 5000)  # the active region's VIP
    assert "--repo=2 archive-get" in standby["restore_command"]
    active = yaml.safe_load((tmp_path / "rh1" / "patroni" / "patroni.yml").read_text())
    assert "standby_cluster" not in active["bootstrap"]["dcs"]
    assert active["etcd3"]["hosts"] == ["10.0.1.11:2379", "10.0.1.12:2379", "10.0.1.13:2379"]


def test_the_secrets_stay_in_their_files(tmp_path: Path) -> None:
    assert render(EXAMPLE, tmp_path).returncode == 0
    text = (tmp_path / "alertmanager" / "alertmanager.yml").read_text()
    for path in ("slack-webhook-url", "pagerduty-routing-key", "smtp-password", "webhook-token"):
        assert f"/etc/alertmanager/secrets/{path}" in text


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda t: t["regions"][0]["hosts"][0].update(roles=["dishwasher"]),
            "regions.0.hosts.0.roles.0",
        ),
        (lambda t: t["regions"][1].update(standby=False), "exactly one region must be active"),
        (lambda t: t["regions"][0]["hosts"][1].update(name="rh1"), "unique: rh1"),
        (lambda t: t.update(alertmanager={}), "alertmanager: unknown field"),
        (
            lambda t: t["regions"][0]["hosts"][2].update(roles=["node"]),
            "regions.0: 2 hosts have the role etcd (rh1, rh2)",
        ),
        (lambda t: t["regions"][0].pop("load_balancer"), "regions.0: load_balancer: rh1, rh2"),
        (
            lambda t: t["regions"][0]["load_balancer"].update(virtual_ip="10.0.1.10"),
            "regions.0.load_balancer.virtual_ip: give the virtual IP with its prefix",
        ),
        (
            lambda t: t["regions"][0]["hosts"][0].update(address="rh1.example.com"),
            "regions.0: load_balancer: 'rh1.example.com' does not appear to be an IPv4",
        ),
        (
            lambda t: t["postgres"].update(ttl=10),
            "postgres: Patroni's ttl must be at least 20",
        ),
    ],
)
def test_a_wrong_topology_is_refused_by_file_and_field_and_nothing_is_written(
    tmp_path: Path, change: object, says: str
) -> None:
    topology = yaml.safe_load(EXAMPLE.read_text())
    change(topology)  # type: ignore[operator]
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(topology))
    done = render(wrong, tmp_path / "out")
    assert done.returncode == 2
    assert str(wrong) in done.stderr and says in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()
