"""`runnerhub doctor`: a node's configuration and every dependency it names, checked once
from this host, each finding with what to fix. Exit 0: nothing failed; 1: something did;
2: the configuration cannot be loaded (as `runnerhub server`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runnerhub import logs
from runnerhub.config import ConfigError, load_settings
from runnerhub.domain.doctor import Finding, exit_code
from runnerhub.health.doctor import diagnose

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
CONFIG_UNUSABLE = 2


def render(findings: list[Finding]) -> Table:
    table = Table(title="runnerhub doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("finding / what to fix")
    for f in findings:
        table.add_row(f.check, f"[{STYLE[f.level]}]{f.level}[/]", f.detail)
    return table


def summary(findings: list[Finding]) -> str:
    counts = {lvl: sum(f.level == lvl for f in findings) for lvl in ("fail", "warn", "ok")}
    return ", ".join(f"{n} {lvl}" for lvl, n in counts.items())


def emit(findings: list[Finding], code: int, as_json: bool) -> None:
    if as_json:
        body = {"exit_code": code, "findings": [f.to_json() for f in findings]}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return
    console = Console(soft_wrap=False)
    console.print(render(findings))
    console.print(summary(findings))


def doctor(config: Path, as_json: bool) -> int:
    # The checks' own clients log their failures: those are findings here, not noise.
    logs.setup("critical", "console")
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        emit([Finding("config", "fail", str(exc))], CONFIG_UNUSABLE, as_json)
        return CONFIG_UNUSABLE
    findings = asyncio.run(diagnose(settings, config))
    code = exit_code(findings)
    emit(findings, code, as_json)
    return code
