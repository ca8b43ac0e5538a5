"""`runnerhub lb sync`: keep an HAProxy's server list in step with the cluster's nodes
(docs/load-balancer.md, "HAProxy follows the nodes")."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from runnerhub import logs
from runnerhub.lb.runtime import HAProxyRuntime
from runnerhub.lb.sync import LoadBalancerSync, SyncError


def read_token(token_file: Path | None) -> str:
    """The read token, from a file (systemd's LoadCredential, a mounted secret) or from
    RUNNERHUB_TOKEN: never from the command line, where `ps` would show it."""
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise SystemExit(f"runnerhub: --token-file {token_file}: {exc.strerror}") from None
    token = os.environ.get("RUNNERHUB_TOKEN", "").strip()
    if not token:
        raise SystemExit("runnerhub: give a read token with --token-file or RUNNERHUB_TOKEN")
    return token


def sync(
    apis: list[str],
    token_file: Path | None,
    socket: str,
    backends: list[str],
    interval_s: float,
    forget_after_s: float,
    once: bool,
    ca_file: Path | None,
    metrics_port: int | None,
) -> int:
    logs.setup("info", "json")
    syncer = LoadBalancerSync(
        apis,
        read_token(token_file),
        HAProxyRuntime(socket),
        backends,
        forget_after_s,
        verify=str(ca_file) if ca_file else True,
    )
    if once:
        try:
            p = asyncio.run(syncer.once())
        except SyncError as exc:
            print(f"runnerhub: {exc}", file=sys.stderr)
            return 1
        print(f"{len(p.changes)} server slots changed", file=sys.stderr)
        if p.unplaced:
            print(f"runnerhub: no free slot for {', '.join(p.unplaced)}", file=sys.stderr)
            return 1
        return 0
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1")
    asyncio.run(syncer.run(interval_s))
    return 0
