"""RunnerHub's own directories: readable by its user only (they hold the spool of signed
deliveries, runner records and logs; a runner running as another user must not read them)."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) with mode 0700, or make it 0700 if it is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str, uid: int | None = None, gid: int | None = None) -> None:
    """Write a file readable by its owner only, atomically: created with that mode (never
    readable for a moment by anyone else), then owned by `uid`/`gid` if given, then renamed
    into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old temporary file keeps its mode through O_CREAT
        if uid is not None and gid is not None:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w") as f:
            fd = -1
            f.write(text)
    finally:
        if fd >= 0:
            os.close(fd)
    tmp.replace(path)
