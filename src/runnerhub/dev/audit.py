"""`make audit`: the locked dependencies (requirements.lock) against known vulnerabilities.

pip-audit does the work, over the lock's pinned, hashed requirements (no resolution, no
install). What this adds is the verdict CI needs: a known vulnerability fails; data that
cannot be reached (no PyPI per-release API, no OSV, as on machines that only reach a
package mirror) is said plainly and does not fail, because nothing was learned either way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Advisories looked at and accepted, each with why; pip-audit is told to ignore them.
ACCEPTED: dict[str, str] = {}


@dataclass(frozen=True)
class Verdict:
    vulnerable: list[str]  # "name version: id (fixed in ...)"
    audited: int
    unreachable: int

    @property
    def failed(self) -> bool:
        return bool(self.vulnerable)

    def summary(self) -> str:
        if self.vulnerable:
            return "known vulnerabilities in locked dependencies:\n  " + "\n  ".join(
                self.vulnerable
            )
        if self.audited == 0:
            return (
                f"dependency audit: vulnerability data cannot be reached from this machine "
                f"(none of {self.unreachable} locked packages could be looked up): not audited"
            )
        tail = f"; {self.unreachable} could not be looked up" if self.unreachable else ""
        return f"dependency audit: {self.audited} locked packages, no known vulnerability{tail}"


def judge(report: dict[str, Any]) -> Verdict:
    """The verdict on pip-audit's JSON report (`-f json`)."""
    vulnerable, audited, unreachable = [], 0, 0
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            unreachable += 1
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            vulnerable.append(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    return Verdict(vulnerable, audited, unreachable)


def main(argv: list[str]) -> int:
    lock = Path(argv[0]) if argv else Path("requirements.lock")
    cmd = [
        *(sys.executable, "-m", "pip_audit"),
        *("-r", str(lock), "--require-hashes", "--disable-pip"),
        *("--progress-spinner", "off", "-f", "json", "--timeout", "10"),
        *(a for vid in ACCEPTED for a in ("--ignore-vuln", vid)),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        print(f"dependency audit could not run: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    verdict = judge(report)
    print(verdict.summary(), file=sys.stderr if verdict.failed else sys.stdout)
    return 1 if verdict.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
