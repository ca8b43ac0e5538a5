#!/usr/bin/env python3
"""Benchmark: the dashboard's first page from a node (issue 15: under 200 ms, under 500 KB).

    .venv/bin/python bench/dashboard.py [--loads 200] [--url http://127.0.0.1:8080]

One "first page" is what a browser with an empty cache fetches before it can draw: the HTML
at `/ui/`, what it links (stylesheet, icon, the entry module) and the modules those import,
gzipped, one request after another on a new connection (a browser fetches them in
parallel, so this is the slower bound). It prints p50/p99 of `--loads` such loads and the
bytes transferred, beside `/livez` (a node's cheapest answer) measured in the same run as
the baseline, and whether the targets hold.

Without `--url` it starts a PostgreSQL and one node of its own (nothing else: the page does
not touch the database) in a temporary directory, and stops them at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from runnerhub.dev.cluster.ports import free_port
from runnerhub.dev.cluster.postgres import LocalPostgres
from runnerhub.dev.waiting import wait_until_sync

TARGET_MS = 200.0
TARGET_BYTES = 500_000
LINKS = re.compile(r"""(?:src|href)="([\w.-]+\.(?:js|css|svg))\"""")
IMPORTS = re.compile(r"""from\s+['"]\./([\w.-]+\.js)['"]""")


@contextmanager
def own_node(base: Path) -> Iterator[str]:
    pg = LocalPostgres(base / "pg")
    pg.init()
    pg.start()
    node: subprocess.Popen[bytes] | None = None
    try:
        pg.wait_ready()
        dsn = pg.create_database("bench")
        port = free_port()
        config = {
            "node": {"id": "bench", "host": "127.0.0.1", "port": port, "state_dir": str(base)},
            "database": {"dsn": dsn},
            "webhook": {"secrets": ["bench-secret-0123456789"]},
            "github": {"api_url": "http://127.0.0.1:9", "auth": {"token": "ghp_bench"}},
            "pools": [{"name": "linux", "labels": ["linux"], "process": {"command": ["true"]}}],
            "log": {"level": "warning"},
        }
        path = base / "node.yaml"
        path.write_text(yaml.safe_dump(config))
        log = (base / "node.log").open("wb")
        node = subprocess.Popen(
            [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            assert node is not None and node.poll() is None, "the node exited; see node.log"
            try:
                return httpx.get(f"{url}/livez", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until_sync(serving, 60, "the node to serve", interval_s=0.1)
        yield url
    finally:
        if node is not None:
            node.terminate()
            node.wait(timeout=20)
        pg.destroy()


def first_page(url: str) -> tuple[float, int, int]:
    """One load with an empty cache: (milliseconds, bytes on the wire, files)."""
    began = time.perf_counter()
    wire = 0
    with httpx.Client(base_url=url, headers={"Accept-Encoding": "gzip"}, timeout=10) as c:
        r = c.get("/ui/")
        r.raise_for_status()
        wire += int(r.headers.get("content-length", 0))
        todo, seen = LINKS.findall(r.text), {"index.html"}
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            a = c.get(f"/ui/{name}")
            a.raise_for_status()
            wire += int(a.headers.get("content-length", 0))
            if name.endswith(".js"):
                todo += IMPORTS.findall(a.text)
    return (time.perf_counter() - began) * 1000, wire, len(seen)


def livez(url: str) -> float:
    began = time.perf_counter()
    with httpx.Client(base_url=url, timeout=10) as c:
        c.get("/livez").raise_for_status()
    return (time.perf_counter() - began) * 1000


def pct(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1]


def run(url: str, loads: int) -> bool:
    first_page(url)  # the node's first answers warm its code paths
    pages, base = [], []
    wire = files = 0
    for _ in range(loads):
        ms, wire, files = first_page(url)
        pages.append(ms)
        base.append(livez(url))
    print(f"first page: {files} files, {wire} bytes transferred (gzip), {loads} loads")
    print(f"  first page  p50 {pct(pages, 50):7.2f} ms  p99 {pct(pages, 99):7.2f} ms")
    print(f"  /livez      p50 {pct(base, 50):7.2f} ms  p99 {pct(base, 99):7.2f} ms  (baseline)")
    ok = pct(pages, 99) < TARGET_MS and wire < TARGET_BYTES
    print(f"targets (p99 < {TARGET_MS:g} ms, < {TARGET_BYTES} bytes): {'met' if ok else 'MISSED'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=200)
    parser.add_argument("--url", help="a running node (default: start one)")
    args = parser.parse_args()
    if args.url:
        return 0 if run(args.url.rstrip("/"), args.loads) else 1
    with tempfile.TemporaryDirectory(prefix="rh-bench-dash-") as tmp, own_node(Path(tmp)) as url:
        return 0 if run(url, args.loads) else 1


if __name__ == "__main__":
    sys.exit(main())
