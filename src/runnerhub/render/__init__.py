"""Configuration files for the programs around RunnerHub, rendered from one description of
an installation: pure functions from settings to text or YAML-ready dicts, used by the local
cluster (`runnerhub up --ha`), by the tests, and by `runnerhub render` for production hosts
(`files.py`), so the two cannot drift."""
