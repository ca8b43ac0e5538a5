"""Every file under examples/ loads as it is: an example that drifts from the settings it
documents fails here. Node configurations load as settings, topologies as topologies."""

from __future__ import annotations

from pathlib import Path

import pytest

from runnerhub.config import load_settings
from runnerhub.render.topology import load_topology

ALL = sorted((Path(__file__).resolve().parents[2] / "examples").iterdir())
TOPOLOGIES = [p for p in ALL if p.name.startswith("topology")]
EXAMPLES = [p for p in ALL if p not in TOPOLOGIES]


def test_there_are_examples_and_each_is_yaml() -> None:
    assert EXAMPLES and TOPOLOGIES
    assert all(p.suffix == ".yaml" for p in ALL), ALL


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_loads(path: Path) -> None:
    settings = load_settings(path)
    assert settings.pools and settings.api_tokens


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_each_topology_loads(path: Path) -> None:
    t = load_topology(path)
    assert t.scrape_targets() and t.alertmanagers()
