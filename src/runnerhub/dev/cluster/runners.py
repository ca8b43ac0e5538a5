"""How the local cluster's runners run: as root, under an unprivileged user of their own
(created when missing), from a copy of the runner simulator that user can read, run by the
system Python (the virtualenv may live where only root can look, such as /root), each in a
directory of its own. Not as root: as ourselves, which isolates nothing (the node says so)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from runnerhub.dev.cluster.postgres import private_dir
from runnerhub.dev.sim import runner as runner_sim

RUNNER_USER = "runnerhub-runner"
SYSTEM_PYTHON = Path("/usr/bin/python3")
# When the state directory is one the runner user cannot enter (pytest's, /root's).
FALLBACK_ROOT = Path("/var/tmp/runnerhub-runners")


@dataclass(frozen=True)
class RunnerSetup:
    command: list[str]
    user: str | None  # None: runners run as we do
    work_dir: Path | None

    def process(self, stop_grace_s: float) -> dict[str, object]:
        """A pool's `process` settings."""
        settings: dict[str, object] = {"command": self.command, "stop_grace_s": stop_grace_s}
        if self.user is not None:
            settings |= {"user": self.user, "work_dir": str(self.work_dir)}
        return settings


def ensure_user(name: str = RUNNER_USER) -> pwd.struct_passwd:
    """A system user with no login and no home of its own, created if missing (as root)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--no-create-home"),
                *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name),
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def runner_setup(state_dir: Path, idle_timeout_s: int = 600) -> RunnerSetup:
    args = ["--idle-timeout", str(idle_timeout_s)]
    if os.geteuid() != 0 or not SYSTEM_PYTHON.exists():
        return RunnerSetup([sys.executable, "-m", runner_sim.__name__, *args], None, None)
    pw = ensure_user()
    root = private_dir(state_dir / "runner-work", pw.pw_uid, pw.pw_gid, FALLBACK_ROOT)
    for d in (root.parent, root, root / "bin", root / "work"):
        d.mkdir(mode=0o755, exist_ok=True)
        d.chmod(0o755)  # theirs to enter (each runner's own directory is 0700, theirs)
    script = root / "bin" / "runner-sim.py"
    shutil.copyfile(str(runner_sim.__file__), script)
    script.chmod(0o644)
    return RunnerSetup([str(SYSTEM_PYTHON), str(script), *args], pw.pw_name, root / "work")
