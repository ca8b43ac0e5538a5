"""The unprivileged user the isolation tests run runners as (created when missing)."""

from __future__ import annotations

import pwd
import subprocess

RUNNER_USER = "runnerhub-runner"


def ensure_runner_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(RUNNER_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                RUNNER_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(RUNNER_USER)
