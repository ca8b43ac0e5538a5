"""Live cluster events for dashboards, fanned out between nodes through Redis."""
