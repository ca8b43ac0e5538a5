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
