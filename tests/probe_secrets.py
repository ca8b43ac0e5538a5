"""A job's "workload" that tries to get at RunnerHub's secrets, for the isolation tests.

It runs as a runner does (under /usr/bin/python3, stdlib only), tries each way in, and
writes what it got as JSON to argv[1]; argv[2] is a JSON object of where to look (or
"@" and the path of a file holding it):
{"files": {label: path}, "dirs": {label: path}, "writable": {label: path},
 "node_pid": pid, "conninfo": "host=... port=... user=... dbname=..."}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return "read: " + f.read().decode(errors="replace")
    except OSError as exc:
        return f"refused: {exc.strerror}"


def listing(path: str) -> str:
    try:
        return "listed: " + " ".join(sorted(os.listdir(path)))
    except OSError as exc:
        return f"refused: {exc.strerror}"


def write(directory: str) -> str:
    target = os.path.join(directory, "rh-forged-1.json")
    try:
        with open(target, "w") as f:
            f.write('{"name": "rh-forged-1", "pid": 1}')
        return "written"
    except OSError as exc:
        return f"refused: {exc.strerror}"


def psql(conninfo: str, env: dict[str, str]) -> dict[str, Any]:
    try:
        r = subprocess.run(
            ["psql", "-w", "-X", "-At", "-c", "SELECT current_user", conninfo],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"rc": -1, "out": "", "err": str(exc)}
    return {"rc": r.returncode, "out": r.stdout.strip(), "err": r.stderr.strip()}


def main() -> None:
    out, arg = sys.argv[1], sys.argv[2]
    if arg.startswith("@"):  # where to look, from a file (written once the cluster runs)
        with open(arg[1:]) as f:
            arg = f.read()
    where = json.loads(arg)
    env = dict(os.environ)
    report: dict[str, Any] = {"uid": os.getuid(), "env": env}
    report["files"] = {k: read(p) for k, p in where.get("files", {}).items()}
    report["dirs"] = {k: listing(p) for k, p in where.get("dirs", {}).items()}
    report["writable"] = {k: write(p) for k, p in where.get("writable", {}).items()}
    if "node_pid" in where:
        report["files"]["node_environ"] = read(f"/proc/{where['node_pid']}/environ")
    if "conninfo" in where:
        # With what the runner has (no password anywhere, if RunnerHub keeps its secrets),
        # then, as a control that the probe itself works, with the password the test gave.
        found = {k: v for k, v in env.items() if k != "PROBE_CONTROL_PGPASSWORD"}
        report["db"] = psql(where["conninfo"], found)
        control = env.get("PROBE_CONTROL_PGPASSWORD", "")
        report["db_control"] = psql(where["conninfo"], {**found, "PGPASSWORD": control})
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f)
    os.replace(tmp, out)
    if len(sys.argv) > 3:  # then carry on as the real runner
        os.execv(sys.argv[3], sys.argv[3:])


if __name__ == "__main__":
    main()
