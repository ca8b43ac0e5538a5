"""A real node, started as systemd starts a Type=notify service ($NOTIFY_SOCKET naming a
datagram socket we bound), says READY=1 once it serves HTTP — also while PostgreSQL does
not answer, since it spools meanwhile — and STOPPING=1 when SIGTERM arrives."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from runnerhub.dev.cluster.ports import free_port


def test_a_node_tells_systemd_it_is_ready_then_stopping(tmp_path: Path) -> None:
    port = free_port()
    config = {
        "node": {"id": "node-notify", "port": port, "state_dir": str(tmp_path / "state")},
        # Nothing listens there: readiness must not wait for the database.
        "database": {"dsn": f"host=127.0.0.1 port={free_port()} dbname=rh user=rh"},
        "webhook": {"secrets": ["s3cret-current"]},
        "github": {"api_url": "http://127.0.0.1:9", "auth": {"token": "ghp_testtoken"}},
        "log": {"level": "warning"},
    }
    path = tmp_path / "runnerhub.yaml"
    path.write_text(yaml.safe_dump(config))
    name = f"runnerhub-notify-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(30)
        log = (tmp_path / "node.log").open("wb")
        node = subprocess.Popen(
            [sys.executable, "-m", "runnerhub.cli.main", "server", "--config", str(path)],
            env={"NOTIFY_SOCKET": "@" + name, "PATH": "/usr/bin:/bin"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ready = sock.recv(4096).decode()
            assert ready.splitlines()[0] == "READY=1", ready
            assert f"STATUS=node node-notify serving on http://127.0.0.1:{port}" in ready
            # Ready means serving: the first request after READY=1 is answered.
            assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200

            began = time.monotonic()
            node.send_signal(signal.SIGTERM)
            stopping = sock.recv(4096).decode()
            assert stopping.splitlines()[0] == "STOPPING=1", stopping
            node.wait(timeout=30)
            print(f"stopped {time.monotonic() - began:.2f}s after SIGTERM")
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
            log.close()
    # The datagram is all: the node ran from its own process, which NotifyAccess=main wants.
    assert node.returncode in (0, -signal.SIGTERM), (tmp_path / "node.log").read_text()[-2000:]
