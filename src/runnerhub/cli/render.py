"""`runnerhub render`: the configuration of the programs around RunnerHub, for a topology."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runnerhub.config import ConfigError
from runnerhub.render.alerting import SHIPPED_RULES
from runnerhub.render.files import all_files
from runnerhub.render.topology import load_topology


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
    try:
        files = all_files(t, rules)
    except ValueError as exc:  # what a renderer refuses that the topology's checks let by
        print(f"runnerhub: {topology}: cannot render: {exc}", file=sys.stderr)
        return 2
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # whole or not at all
        tmp.write_text(text)
        os.replace(tmp, path)
        print(f"wrote {path}")
    hosts = len({rel.split("/", 1)[0] for rel in files} - {"prometheus", "alertmanager"})
    print(
        f"{len(files)} files for {t.name!r}: {hosts} hosts' etcd, Patroni, pgBackRest, "
        f"Redis, Sentinel, HAProxy and keepalived files by their roles, "
        f"{len(t.scrape_targets())} nodes scraped, {len(t.alertmanagers())} Alertmanagers "
        "(docs/deployment.md says where each goes and where its secrets go)."
    )
    return 0
