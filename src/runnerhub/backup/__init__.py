"""Backups with pgBackRest: running its commands (`pgbackrest.py`) and testing that a
backup restores (`restore_test.py`). When to run what is `domain.backups`; the leader's
loop that runs them is `control.backups`."""
