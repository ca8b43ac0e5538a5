"""`runnerhub render --topology`: the example topology renders files that Prometheus's and
Alertmanager's own checkers accept, with the shipped rules pointing at the topology's
runbooks; a wrong topology is refused naming the file and the field, and nothing is
written."""

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
    assert "Not rendered by this version" in done.stdout  # said, not hidden
    check(tool("promtool"), "check", "config", str(tmp_path / "prometheus" / "prometheus.yml"))
    check(tool("amtool"), "check-config", str(tmp_path / "alertmanager" / "alertmanager.yml"))
    scraped = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    labels = [s["labels"] for s in scraped["scrape_configs"][0]["static_configs"]]
    assert {"node": "rh-dr1", "region": "eu-north"} in labels and len(labels) == 4
    rules = (tmp_path / "prometheus" / "runnerhub-alerts.yml").read_text()
    base = load_topology(EXAMPLE).alerting.runbook_base_url
    assert f"{base}RunnerHubLeaderMissing.md" in rules


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
