"""Configuration files for the programs around RunnerHub, rendered from one description of
an installation: pure functions from settings to text or YAML-ready dicts, used by the local
cluster and by the tests, and meant for production installations too (issue 14)."""
