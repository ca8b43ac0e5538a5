"""Prometheus's and Alertmanager's configuration as `render/alerting.py` writes it: the
programs' own checkers accept it (promtool, amtool), secrets stay in their files, each
severity reaches its receivers, and the inhibitions silence consequences, not causes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runnerhub.dev.cluster.monitoring import RULES
from runnerhub.render.alerting import (
    RULES_FILE,
    RUNBOOK_BASE,
    AlertRouting,
    Email,
    PagerDuty,
    ScrapeTarget,
    Slack,
    Webhook,
    alertmanager_config,
    dump,
    prometheus_config,
    rules_with_runbook_base,
)


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: `make deps` fetches it"
    return found


def check(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def everything(tmp_path: Path) -> AlertRouting:
    for name in ("slack-url", "pagerduty-key", "smtp-password", "hook-token"):
        (tmp_path / name).write_text(f"very-secret-{name}\n")
    return AlertRouting(
        slack=Slack(str(tmp_path / "slack-url"), "#runnerhub"),
        pagerduty=PagerDuty(str(tmp_path / "pagerduty-key")),
        email=Email(
            "oncall@example.com",
            "alerts@example.com",
            "smtp.example.com:587",
            "alerts",
            str(tmp_path / "smtp-password"),
        ),
        webhook=Webhook("https://hooks.example.com/alerts", str(tmp_path / "hook-token")),
    )


def test_amtool_accepts_every_receiver_and_no_secret_is_in_the_file(
    tmp_path: Path, everything: AlertRouting
) -> None:
    for routing in (everything, AlertRouting()):  # and with nobody to tell
        path = tmp_path / "alertmanager.yml"
        path.write_text(dump(alertmanager_config(routing)))
        check(tool("amtool"), "check-config", str(path))
        assert "very-secret" not in path.read_text()


def test_promtool_accepts_the_scrape_config_with_the_shipped_rules(tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / RULES_FILE)
    targets = [ScrapeTarget("10.0.0.1:8080", "n1"), ScrapeTarget("10.1.0.1:8080", "b1", "b")]
    config = prometheus_config(targets, ["10.0.0.9:9093"], scrape_interval_s=0.5)
    (tmp_path / "prometheus.yml").write_text(dump(config))
    check(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    static = config["scrape_configs"][0]["static_configs"]
    assert {"targets": ["10.1.0.1:8080"], "labels": {"node": "b1", "region": "b"}} in static
    assert config["global"]["scrape_interval"] == "500ms"


def test_each_severity_reaches_its_receivers(everything: AlertRouting) -> None:
    config = alertmanager_config(everything)
    routes = config["route"]["routes"]
    assert routes[0] == {"receiver": "webhook", "matchers": ['alertname=~".+"'], "continue": True}
    by_severity = {r["matchers"][0]: r["receiver"] for r in routes[1:]}
    assert by_severity == {
        'severity="critical"': "page",
        'severity="warning"': "notify",
        'severity="info"': "mail",
    }
    receivers = {r["name"]: set(r) - {"name"} for r in config["receivers"]}
    assert receivers["page"] == {"pagerduty_configs", "slack_configs"}
    assert receivers["notify"] == {"slack_configs", "email_configs"}
    assert config["route"]["group_by"] == ["alertname", "region"]
    # Without a webhook, nothing is routed to an empty receiver first.
    assert alertmanager_config(AlertRouting())["route"]["routes"][0]["receiver"] == "page"


def test_inhibitions_silence_what_a_cause_brings_about_but_never_the_cause(
    everything: AlertRouting,
) -> None:
    rules = yaml.safe_load(RULES.read_text())
    shipped = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    inhibit = alertmanager_config(everything)["inhibit_rules"]
    for rule in inhibit:
        source = rule["source_matchers"][0].split('"')[1]
        assert source in shipped, source
        for matcher in rule["target_matchers"]:
            names = matcher.split('"')[1].split("|")
            assert source not in names or "!=" in matcher, rule  # never itself
            assert set(names) <= shipped | {source}, set(names) - shipped
    region = next(r for r in inhibit if r["source_matchers"] == ['alertname="RunnerHubRegionDown"'])
    assert region["equal"] == ["region"]  # one region's loss silences only that region


def test_the_runbook_base_can_point_at_a_mirror() -> None:
    text = RULES.read_text()
    assert RUNBOOK_BASE in text
    moved = rules_with_runbook_base(text, "https://wiki.internal/runbooks")
    assert RUNBOOK_BASE not in moved
    assert "https://wiki.internal/runbooks/RunnerHubLeaderMissing.md" in moved
