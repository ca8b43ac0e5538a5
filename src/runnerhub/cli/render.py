"""`runnerhub render`: the configuration of the programs around RunnerHub, for a topology."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runnerhub.config import ConfigError
from runnerhub.render.alerting import SHIPPED_RULES
from runnerhub.render.files import monitoring_files
from runnerhub.render.topology import load_topology

# What the topology describes but this version does not yet write (issue 14): said, not hidden.
NOT_YET = "etcd, Patroni, PostgreSQL, pgBackRest, Redis, Sentinel, HAProxy, keepalived"


def render_topology(topology: Path, out: Path) -> int:
    """Write every file for `topology` under `out`; 0, or 2 with a message naming the file
    and field when the topology is wrong (nothing is written then)."""
    try:
        t = load_topology(topology)
        rules = SHIPPED_RULES.read_text()
    except ConfigError as exc:
        print(f"runnerhub: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"runnerhub: cannot read the shipped alert rules: {exc}", file=sys.stderr)
        return 2
    files = monitoring_files(t, rules)
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # whole or not at all
        tmp.write_text(text)
        os.replace(tmp, path)
        print(f"wrote {path}")
    print(
        f"{len(files)} files for {t.name!r}: {len(t.scrape_targets())} nodes scraped, "
        f"{len(t.alertmanagers())} Alertmanagers. Not rendered by this version: {NOT_YET} "
        "(`runnerhub up --ha` shows working configurations of each; docs/deployment.md)."
    )
    return 0
