from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerhub.dev.cluster.etcd import LocalEtcd
from tests.e2e.harness import Cluster


@pytest.fixture
def cluster(tmp_path: Path, dsn: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, dsn)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    """Three etcd members, for nodes electing a leader."""
    members = LocalEtcd(tmp_path / "etcd", members=3)
    members.start()
    yield members
    members.destroy()
