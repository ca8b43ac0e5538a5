"""RunnerHub: a highly available control plane for self-hosted GitHub Actions runners."""

__version__ = "0.1.0"
