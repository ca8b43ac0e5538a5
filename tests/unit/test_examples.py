"""Every configuration under examples/ loads as it is: an example that drifts from the
settings it documents fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from runnerhub.config import load_settings

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_loads(path: Path) -> None:
    settings = load_settings(path)
    assert settings.pools and settings.api_tokens
