"""Run a command of the backup tooling (pgBackRest, pg_ctl) as the user that owns the
database files, bounded in time, with an environment of its own: never RunnerHub's, which
holds the DSN and the GitHub token."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import tempfile
from collections.abc import Mapping, Sequence

SETPRIV = "setpriv"


class CommandError(Exception):
    """It could not be started, or did not finish in time."""


async def run(
    argv: Sequence[str],
    *,
    user: pwd.struct_passwd | None,
    env: Mapping[str, str],
    timeout_s: float,
) -> tuple[int, str]:
    """(exit code, output with stderr) of `argv`. A timeout, or the caller being cancelled
    (this node stopped leading), kills it and everything it started."""
    if user is not None and user.pw_uid != os.geteuid():
        # setpriv (util-linux) execs the command as the user, with that user's groups:
        # uvloop's subprocesses take no user or group of their own.
        argv = [
            SETPRIV,
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]
    # Output goes to a file, not a pipe: what a command leaves running (pg_ctl leaves the
    # server) may hold a pipe open long after the command itself has exited.
    with tempfile.TemporaryFile() as out:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandError(f"cannot run {argv[0]}: {exc.strerror}") from None
        try:
            code = await asyncio.wait_for(proc.wait(), timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            if isinstance(exc, asyncio.CancelledError):
                raise
            name = os.path.basename(argv[0])
            raise CommandError(f"{name} did not finish within {timeout_s:g} s") from None
        out.seek(0)
        return code, out.read().decode(errors="replace")


def base_env(user: pwd.struct_passwd | None) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if user is not None:
        env["HOME"] = user.pw_dir
    return env
