"""A node's Prometheus metrics as a test reads them, in process."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The sample's value now; 0 for one not yet written (a counter never incremented)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
