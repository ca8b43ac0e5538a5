"""The audit's verdict on pip-audit's report, and the lock file make installs from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from runnerhub.dev.audit import judge

ROOT = Path(__file__).resolve().parents[2]


def test_a_known_vulnerability_fails_with_its_fix() -> None:
    verdict = judge(
        {
            "dependencies": [
                {"name": "a", "version": "1.0", "vulns": []},
                {
                    "name": "b",
                    "version": "2.0",
                    "vulns": [{"id": "GHSA-x", "fix_versions": ["2.1"]}],
                },
                {"name": "c", "skip_reason": "Dependency not found on PyPI"},
            ]
        }
    )
    assert verdict.failed
    assert verdict.vulnerable == ["b 2.0: GHSA-x (fixed in 2.1)"]
    assert (verdict.audited, verdict.unreachable) == (2, 1)


def test_unreachable_data_is_said_and_does_not_fail() -> None:
    verdict = judge({"dependencies": [{"name": "a", "skip_reason": "not found"}]})
    assert not verdict.failed
    assert "cannot be reached" in verdict.summary() and "not audited" in verdict.summary()
    clean = judge({"dependencies": [{"name": "a", "version": "1", "vulns": []}]})
    assert not clean.failed and "no known vulnerability" in clean.summary()


def _requirement_names(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    """make installs only from requirements.lock (hash-checked, no resolution): every
    dependency of pyproject.toml must be in it (`make lock` after editing pyproject)."""
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", lock, re.M)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_requirement_names(d) for d in project["dependencies"]}
    wanted |= {_requirement_names(d) for d in project["optional-dependencies"]["dev"]}
    assert wanted - pinned == set()
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock)
    assert [e.split()[0] for e in entries if "==" in e and "--hash=sha256:" not in e] == []
