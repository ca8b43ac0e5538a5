from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster


@pytest.fixture
def cluster(tmp_path: Path, dsn: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, dsn)
    try:
        yield c
    finally:
        c.stop()
