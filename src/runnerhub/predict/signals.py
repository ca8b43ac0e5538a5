"""What RunnerHub samples to forecast failures: small readers of real resources. Each
returns None when it cannot read (the sample is skipped, not invented)."""

from __future__ import annotations

import os
from pathlib import Path


def free_bytes(path: Path) -> float | None:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return float(st.f_bavail * st.f_frsize)


def total_bytes(path: Path) -> float | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return float(st.f_blocks * st.f_frsize)


def rss_bytes(pid: int | None = None) -> float | None:
    """A process's resident memory (this one by default), from /proc."""
    try:
        text = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return None


def memory_limit_bytes() -> float | None:
    """The memory this process may use: its cgroup's `memory.max` when set, else the
    machine's memory."""
    try:
        cgroup = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[-1]
        raw = Path("/sys/fs/cgroup", cgroup.lstrip("/"), "memory.max").read_text().strip()
        if raw != "max":
            return float(raw)
    except (OSError, ValueError, IndexError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None
