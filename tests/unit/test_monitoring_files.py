"""The alert rules and the Grafana dashboard in deploy/: promtool accepts the rules and its
rule tests pass (each alert fires on what should raise it), and every RunnerHub metric they
name is one RunnerHub exports — a renamed metric must not silently blind an alert."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import runnerhub.node  # noqa: F401 - registers every metric RunnerHub exports

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
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
    return {m.name + s for m in REGISTRY.collect() for s in SUFFIXES}


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
