"""Fixtures the integration tests share (tests/conftest.py has the PostgreSQL ones)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerhub.dev.cluster.etcd import LocalEtcd


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    """One etcd member, for nodes electing a leader (a module may define its own)."""
    cluster = LocalEtcd(tmp_path / "etcd", members=1)
    cluster.start()
    yield cluster
    cluster.destroy()
