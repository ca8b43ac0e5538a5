"""`runnerhub doctor`'s verdicts: what each measurement means and what to do about it. Pure,
no I/O; `health.doctor` takes the measurements.

Every finding is one line an operator can act on: `ok`, `warn` (works, but fix it before it
bites), `fail` (the node cannot do its job, or a secret is exposed) or `skip` (not
configured, or not measurable from here). Only a `fail` makes doctor exit 1.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

Level = Literal["ok", "warn", "fail", "skip"]
LEVELS: tuple[Level, ...] = ("ok", "warn", "fail", "skip")

GiB = 1024**3
# The leader compares its own clock with times PostgreSQL wrote with now() (a runner's age:
# stuck or zombie; when a retry is due; retention cutoffs), and nodes stamp deliveries with
# theirs. The lease and fencing rest on etcd's TTLs and epochs, not on wall clocks, but
# every timeout around them is a few seconds: a skew that size makes the loops misjudge
# what is stuck or due. NTP keeps clocks within milliseconds; a second means it is not.
SKEW_WARN_S = 1.0
SKEW_FAIL_S = 5.0
CERT_WARN_DAYS = 30
DISK_WARN_FRACTION = 0.10
DISK_WARN_BYTES = GiB
DISK_FAIL_FRACTION = 0.02
# What RunnerHub is built and tested on (docs/ha.md); older ones may lack what it uses.
POSTGRES_TESTED_MAJOR = 15


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    detail: str  # what was found and, unless ok, what to fix

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(findings: Iterable[Finding]) -> int:
    """1 when anything failed, else 0 (warnings are for people, not for scripts)."""
    return 1 if any(f.level == "fail" for f in findings) else 0


def clock_skew(skew_s: float, uncertainty_s: float = 0.0) -> Finding:
    """This machine's clock against PostgreSQL's; `uncertainty_s` (half the round trip) is
    given the benefit of the doubt."""
    off = max(0.0, abs(skew_s) - uncertainty_s)
    said = f"this host is {abs(skew_s):.3f} s {'behind' if skew_s > 0 else 'ahead of'} PostgreSQL"
    why = (
        "; run NTP (chrony) on every node and database host: the leader compares its clock "
        "with times PostgreSQL wrote (runner ages, retries due, retention)"
    )
    if off > SKEW_FAIL_S:
        return Finding("clock skew", "fail", said + why)
    if off > SKEW_WARN_S:
        return Finding("clock skew", "warn", said + why)
    return Finding("clock skew", "ok", said)


def certificate(name: str, path: str, not_after: datetime, now: datetime) -> Finding:
    """A certificate file's earliest expiry (a CA bundle: its first certificate to expire)."""
    left = not_after - now
    when = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if left.total_seconds() <= 0:
        return Finding(name, "fail", f"{path} expired on {when}: renew it and restart the node")
    if left.days < CERT_WARN_DAYS:
        return Finding(name, "warn", f"{path} expires in {left.days} day(s) ({when}): renew it")
    return Finding(name, "ok", f"{path} valid until {when}")


def secret_file(name: str, path: str, mode: int, group: str) -> Finding:
    """A file holding a secret (a key, a password): anyone else who reads it has it.

    Readable by other users: fail. Writable by anyone but its owner: fail (a key swapped
    under the node). Readable by its group: warn, not fail, because root-owned 0640 with a
    group of RunnerHub's user alone is a common and sound way to install it."""
    perms = stat.S_IMODE(mode)
    octal = f"{perms:04o}"
    if perms & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        return Finding(name, "fail", f"{path} is mode {octal}: chmod 600 {path}")
    if perms & stat.S_IRGRP:
        return Finding(
            name,
            "warn",
            f"{path} is readable by group {group} (mode {octal}): chmod 600 {path}, unless "
            "only RunnerHub's user is in that group",
        )
    return Finding(name, "ok", f"{path} mode {octal}")


def disk_headroom(name: str, path: str, free_bytes: int, total_bytes: int) -> Finding:
    fraction = free_bytes / total_bytes if total_bytes else 0.0
    said = f"{path}: {_size(free_bytes)} free ({fraction:.1%} of {_size(total_bytes)})"
    if fraction < DISK_FAIL_FRACTION:
        return Finding(name, "fail", said + ": free space now, writes are about to fail")
    if fraction < DISK_WARN_FRACTION or free_bytes < DISK_WARN_BYTES:
        return Finding(name, "warn", said + ": free space or grow the file system")
    return Finding(name, "ok", said)


def postgres_version(version_num: int, version: str) -> Finding:
    """`server_version_num` (150004 is 15.4) and PostgreSQL's own wording of it."""
    major = version_num // 10000
    if major < POSTGRES_TESTED_MAJOR:
        return Finding(
            "postgres version",
            "warn",
            f"PostgreSQL {version}: RunnerHub is built and tested on {POSTGRES_TESTED_MAJOR}; "
            "upgrade",
        )
    return Finding("postgres version", "ok", f"PostgreSQL {version}")


def schema(current: int, latest: int) -> Finding:
    """The newest migration applied against the newest this RunnerHub knows. Behind is a
    warning: a node applies what is missing when it starts (or `runnerhub db migrate`)."""
    if current == latest:
        return Finding("postgres schema", "ok", f"migrated to {latest}")
    if current < latest:
        return Finding(
            "postgres schema",
            "warn",
            f"at {current}, {latest - current} migration(s) pending: run `runnerhub db migrate` "
            "(a node also applies them when it starts)",
        )
    return Finding(
        "postgres schema",
        "warn",
        f"at {current}, newer than this RunnerHub knows ({latest}): upgrade this node",
    )


def etcd_members(answered: dict[str, str], failed: dict[str, str]) -> Finding:
    """Each endpoint's version, or why it did not answer. A majority is needed for the
    leader lease; one member down is survivable but leaves no room for another."""
    total = len(answered) + len(failed)
    versions = ", ".join(sorted(set(answered.values()))) or "?"
    reasons: dict[str, list[str]] = {}
    for endpoint, why in sorted(failed.items()):
        reasons.setdefault(why, []).append(endpoint)
    down = "; ".join(f"{', '.join(eps)}: {why}" for why, eps in reasons.items())
    if len(answered) * 2 <= total:
        return Finding(
            "etcd",
            "fail",
            f"{len(answered)} of {total} members answer (no quorum: no leader, no control "
            f"loops): {down}; check ha.etcd_endpoints and that etcd runs",
        )
    if failed:
        return Finding(
            "etcd",
            "warn",
            f"{len(answered)} of {total} members answer (etcd {versions}); bring back {down}",
        )
    return Finding("etcd", "ok", f"{total} of {total} members answer (etcd {versions})")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
