"""The alert rules and the Grafana dashboard in deploy/: promtool accepts the rules and its
rule tests pass (each alert fires on what should raise it), every alert is tested both firing
and quiet, every alert links its runbook in docs/runbooks/, and every RunnerHub metric they
name is one RunnerHub exports — a renamed metric must not silently blind an alert."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import runnerhub.node  # noqa: F401 - registers every metric RunnerHub exports
from runnerhub.metrics import MEASURED

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/runnerhub/runnerhub/blob/main/docs/runbooks/"
RULES = DEPLOY / "prometheus" / "runnerhub-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "runnerhub-alerts-test.yml"
DASHBOARD = DEPLOY / "grafana" / "runnerhub-ha.json"
METRIC = re.compile(r"\brunnerhub_[a-z0-9_]+")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which(
        "promtool", path=str(Path(sys.executable).parent)
    )
    assert found, "promtool is missing: `make deps` fetches it"
    return found


def exported() -> set[str]:
    return {m.name + s for m in REGISTRY.collect() for s in SUFFIXES} | {
        g.name
        for g in MEASURED  # absent from a scrape until measured
    }


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def rule_tests() -> list[dict[str, Any]]:
    """Every alert_rule_test case of the promtool test file, whatever its input series."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return [case for t in tests for case in t.get("alert_rule_test") or []]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


@pytest.mark.parametrize("command", [["check", "rules", RULES], ["test", "rules", RULE_TESTS]])
def test_promtool_accepts_the_rules_and_their_tests(command: list[object]) -> None:
    done = subprocess.run(
        [promtool(), *map(str, command)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_the_alerts_and_the_dashboard_use_is_exported() -> None:
    used = set(METRIC.findall(RULES.read_text())) | {
        name for expr in dashboard_exprs() for name in METRIC.findall(expr)
    }
    assert len(used) > 15
    unknown = sorted(used - exported())
    assert not unknown, f"not exported by RunnerHub: {unknown}"


def test_the_dashboard_is_a_grafana_dashboard_with_unique_panels() -> None:
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert board["uid"] == "runnerhub-ha" and len(ids) == len(set(ids)) >= 12
    assert all(
        p["targets"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in board["panels"]
    )
    assert all(expr.strip() for expr in dashboard_exprs())


def test_every_alert_links_its_runbook_in_docs_runbooks() -> None:
    rules = alert_rules()
    assert len(rules) >= 24
    wrong = {
        r["alert"]: r["annotations"].get("runbook_url")
        for r in rules
        if r["annotations"].get("runbook_url") != f"{RUNBOOK_BASE}{r['alert']}.md"
    }
    assert not wrong, f"runbook_url not {RUNBOOK_BASE}<AlertName>.md: {wrong}"
    missing = sorted(
        f"docs/runbooks/{r['alert']}.md"
        for r in rules
        if not (RUNBOOKS / f"{r['alert']}.md").is_file()
    )
    assert not missing, f"runbook_url leads nowhere, no such page: {missing}"


def test_every_alert_is_tested_firing_and_quiet_and_every_test_names_an_alert() -> None:
    names = {r["alert"] for r in alert_rules()}
    cases = rule_tests()
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert not names - fires, f"never tested firing: {sorted(names - fires)}"
    assert not names - quiet, f"never tested quiet: {sorted(names - quiet)}"
    # promtool passes a test of an alert that does not exist (nothing fires): a renamed
    # alert would leave its tests proving nothing.
    unknown = sorted({c["alertname"] for c in cases} - names)
    assert not unknown, f"tested but not in {RULES.name}: {unknown}"
