"""Runner simulator: behaves like the Actions runner started with `--jitconfig`.

It decodes the JIT config, opens a session, long-polls until it gets ONE job (or its idle
timeout passes), "runs" it for the job's duration while heartbeating, reports the
conclusion and exits. The registration is ephemeral: the simulator deletes it with the job.

Stdlib only and importing nothing else from runnerhub: tests start it hundreds of times.

Exit codes: 0 done (job reported, idle timeout, or stopped by SIGTERM/SIGINT), 1 error,
2 bad or missing JIT config, 3 registration deleted. The JIT config and the runner token
are never printed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import Any

ENV_JITCONFIG = "ACTIONS_RUNNER_INPUT_JITCONFIG"
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_DELETED = 0, 1, 2, 3
MAX_WAIT_S = 10.0  # the simulator's longest long poll
HEARTBEAT_S = 1.0
RETRY_FOR_S = 30.0  # how long an unreachable simulator is retried before giving up
RETRY_PAUSE_S = 0.5

# No proxy from the environment: the simulator is reached directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ConfigError(Exception):
    pass


class Deleted(Exception):
    pass


class RunnerError(Exception):
    pass


class Terminated(BaseException):
    """Raised by the signal handler; BaseException so no `except Exception` swallows it."""


class Signals:
    """SIGTERM/SIGINT interrupt whatever the runner is blocked in, once; `shield` makes
    them no-ops while the runner reports its final word."""

    def __init__(self) -> None:
        self.received = False
        self.shielded = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received or self.shielded:
            self.received = True
            return
        self.received = True
        raise Terminated


def decode_config(encoded: str | None) -> dict[str, Any]:
    if not encoded or not encoded.strip():
        raise ConfigError(f"no JIT config: pass --jitconfig or set {ENV_JITCONFIG}")
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("the JIT config is not valid base64") from None
    try:
        config = json.loads(raw)
    except ValueError:
        raise ConfigError("the JIT config does not decode to JSON") from None
    if not isinstance(config, dict):
        raise ConfigError("the JIT config does not decode to a JSON object")
    for key, kind in (
        ("sim_url", str),
        ("runner_id", int),
        ("runner_name", str),
        ("runner_token", str),
    ):
        if not isinstance(config.get(key), kind):
            raise ConfigError(f"the JIT config has no valid {key!r}")
    return config


class Client:
    def __init__(self, sim_url: str, runner_id: int, token: str) -> None:
        self.base = f"{sim_url.rstrip('/')}/_sim/runner/{runner_id}"
        self.token = token

    def _post(self, action: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + action,
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={
                "Authorization": f"RunnerToken {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return status, data

    def call(
        self, action: str, body: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """POST to the runner API, retrying an unreachable or failing simulator for a while."""
        give_up = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                status, data = self._post(action, body, timeout)
            except (urllib.error.URLError, OSError) as exc:
                problem = f"cannot reach the simulator ({exc})"
            else:
                if status in (404, 410):
                    raise Deleted(status)
                if status < 500:
                    if status >= 400:
                        message = data.get("message") if isinstance(data, dict) else None
                        raise RunnerError(f"{action.strip('/')} answered HTTP {status}: {message}")
                    return status, data
                problem = f"{action.strip('/')} answered HTTP {status}"
            if time.monotonic() >= give_up:
                raise RunnerError(problem)
            time.sleep(RETRY_PAUSE_S)


def _say(name: str, message: str) -> None:
    print(f"runner {name}: {message}", flush=True)


def _run_job(client: Client, name: str, job: dict[str, Any]) -> str:
    """'Run' the job: wait its duration, heartbeating; the conclusion to report."""
    end = time.monotonic() + float(job.get("duration_s", 0))
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return str(job.get("conclusion", "success"))
        time.sleep(min(HEARTBEAT_S, remaining))
        _, beat = client.call("/heartbeat")
        if isinstance(beat, dict) and beat.get("cancelled"):
            _say(name, f"job {job['job_id']} was cancelled")
            return "cancelled"


def run(config: dict[str, Any], idle_timeout: float | None, signals: Signals) -> int:
    name = config["runner_name"]
    client = Client(config["sim_url"], config["runner_id"], config["runner_token"])
    try:
        client.call("/session")
        _say(name, "registered, listening for jobs")
        deadline = None if idle_timeout is None else time.monotonic() + idle_timeout
        job: dict[str, Any] | None = None
        while job is None:
            wait = MAX_WAIT_S if deadline is None else min(MAX_WAIT_S, deadline - time.monotonic())
            if wait <= 0:
                _say(name, "idle timeout, exiting")
                return EXIT_OK
            status, data = client.call(f"/acquire?wait_s={wait:.3f}", timeout=wait + 10)
            if status == 200 and isinstance(data, dict):
                job = data
    except Terminated:
        _say(name, "stopped while idle")
        return EXIT_OK

    job_id = job["job_id"]
    _say(name, f"took job {job_id}")
    try:
        conclusion = _run_job(client, name, job)
    except Terminated:
        _say(name, f"stopped while running job {job_id}, reporting it cancelled")
        conclusion = "cancelled"
    signals.shielded = True  # the final report must not be interrupted
    client.call("/complete", {"job_id": job_id, "conclusion": conclusion})
    _say(name, f"completed job {job_id} ({conclusion})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="runnerhub runner-sim",
        description=f"Simulated Actions runner. The JIT config may come from ${ENV_JITCONFIG}.",
    )
    parser.add_argument("--jitconfig", help=f"encoded JIT config (default: ${ENV_JITCONFIG})")
    parser.add_argument("--idle-timeout", type=float, help="seconds to wait for a job")
    parser.add_argument("--sim-url", help="reach the simulator here instead")
    args = parser.parse_args(argv)
    signals = Signals()
    signals.install()
    try:
        config = decode_config(args.jitconfig or os.environ.get(ENV_JITCONFIG))
        if args.sim_url:
            config["sim_url"] = args.sim_url
        return run(config, args.idle_timeout, signals)
    except ConfigError as exc:
        print(f"runner-sim: invalid JIT config: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except Deleted as exc:
        print(f"runner-sim: the runner registration was deleted (HTTP {exc})", file=sys.stderr)
        return EXIT_DELETED
    except RunnerError as exc:
        print(f"runner-sim: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except Terminated:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
