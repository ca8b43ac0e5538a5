"""The systemd units in deploy/systemd/ pass `systemd-analyze verify`, alone and with their
drop-ins, and say what the node needs: Type=notify (the node sends READY=1, see
tests/unit/test_sd_notify.py), the hardening lines, a stop timeout longer than a clean
shutdown, and the real `runnerhub server` flags.

`systemd-analyze verify` answers 0 to a misspelt key or a value it cannot parse (it warns
and ignores the line), so any word from it fails the test; the last test breaks a unit on
purpose to show that it does."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runnerhub.config import Settings
from runnerhub.server import uvicorn_config

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_BINARY = "/opt/runnerhub/bin/runnerhub"
# The venv's own command: verify needs ExecStart's binary to exist.
RUNNERHUB = Path(sys.executable).with_name("runnerhub")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (make system installs systemd)"
)


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".socket"))


def verify(unit_dir: Path, unit: str) -> str:
    """What `systemd-analyze verify` says of `unit` in `unit_dir` (with its drop-ins, which
    it reads from <unit>.d/ beside it); empty when all is well."""
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit_dir / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit_dir,
    )
    said = (done.stdout + done.stderr).strip()
    return said if done.returncode == 0 or said else f"exit status {done.returncode}"


def staged(tmp_path: Path, with_dropins: bool) -> Path:
    """deploy/systemd copied, with ExecStart pointing at this checkout's runnerhub."""
    out = tmp_path / ("with-dropins" if with_dropins else "alone")
    shutil.copytree(UNITS, out, ignore=None if with_dropins else shutil.ignore_patterns("*.d"))
    for unit in out.glob("*.service"):
        unit.write_text(unit.read_text().replace(INSTALLED_BINARY, str(RUNNERHUB)))
    return out


def service_section(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return dict(parser["Service"])


@needs_analyze
@pytest.mark.parametrize("with_dropins", [False, True], ids=["alone", "with-dropins"])
def test_every_unit_verifies(tmp_path: Path, with_dropins: bool) -> None:
    assert unit_files(), f"no units in {UNITS}"
    units = staged(tmp_path, with_dropins)
    said = {u.name: verify(units, u.name) for u in unit_files()}
    assert not any(said.values()), "\n".join(f"{u}: {s}" for u, s in said.items() if s)


def test_the_node_unit_runs_the_real_server_command_as_a_hardened_notify_service() -> None:
    svc = service_section(UNITS / "runnerhub-node.service")
    argv = svc["ExecStart"].split()
    assert argv[:2] == [INSTALLED_BINARY, "server"]
    # The flags the command really takes.
    help_text = subprocess.run(
        [str(RUNNERHUB), "server", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert all(flag in help_text for flag in argv[2:] if flag.startswith("-"))
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "User": "runnerhub",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "StateDirectory": "runnerhub",
        "ReadWritePaths": "/var/lib/runnerhub",
        "LimitNOFILE": "65536",
        "UMask": "0077",
        "EnvironmentFile": "-/etc/runnerhub/runnerhub.env",
    }
    assert {k: svc.get(k) for k in expected} == expected


def test_the_stop_timeout_outlasts_a_clean_shutdown() -> None:
    """uvicorn's graceful wait, then Node.stop's two task waits (15 s each), then closing
    connections: a unit that kills sooner turns every restart into a crash."""
    svc = service_section(UNITS / "runnerhub-node.service")
    settings = Settings(
        database={"dsn": "host=/nowhere"},
        webhook={"secrets": ["x"]},
        github={"auth": {"token": "t"}},
    )
    node: Any = SimpleNamespace(app=None)  # all uvicorn_config reads of a node
    graceful = uvicorn_config(node, settings).timeout_graceful_shutdown
    assert graceful is not None
    assert int(svc["TimeoutStopSec"]) >= graceful + 2 * 15 + 10


def test_the_process_backend_dropin_lets_the_node_switch_users_and_keeps_runners() -> None:
    dropin = service_section(UNITS / "runnerhub-node.service.d" / "process-backend.conf")
    assert dropin["User"] == "root"  # setuid/setgid to process.user
    assert dropin["NoNewPrivileges"] == "no"  # jobs' sudo
    assert dropin["ProtectHome"] == "no"  # the runner user's home is its work directory
    assert dropin["KillMode"] == "process"  # runners outlive a node restart


@needs_analyze
def test_the_check_fails_on_a_broken_unit(tmp_path: Path) -> None:
    units = staged(tmp_path, with_dropins=False)
    unit = units / "runnerhub-node.service"
    good = unit.read_text()
    for broken, expected in [
        (good.replace("ProtectHome=yes", "ProtectHoem=yes"), "Unknown key"),
        (good.replace("Type=notify", "Type=notfy"), "service type"),
        (good.replace(str(RUNNERHUB), "/nonexistent/runnerhub"), "not executable"),
    ]:
        unit.write_text(broken)
        assert expected in verify(units, unit.name)
    unit.write_text(good)
    assert verify(units, unit.name) == ""
