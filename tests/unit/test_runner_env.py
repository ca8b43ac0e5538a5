"""What a process runner gets from RunnerHub: an environment built from nothing (never
RunnerHub's own, which holds the database DSN, the GitHub token and the webhook secrets),
and a name that can only ever be a file inside its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from runnerhub.backends.process import JIT_ENV, PASSED_THROUGH, RunAs, runner_env
from runnerhub.config import ProcessBackendSettings
from runnerhub.domain.naming import is_valid_name, job_runner_name, spare_runner_name

SECRETS = {
    "RUNNERHUB_DATABASE__DSN": "host=db password=hunter2",
    "RUNNERHUB_GITHUB__AUTH__TOKEN": "ghp_secret",
    "RUNNERHUB_WEBHOOK__SECRETS": '["whsec"]',
    "PGPASSWORD": "hunter2",
    "AWS_SECRET_ACCESS_KEY": "aws",
}
ME = RunAs(1000, 1000, (1000,), "runner", "/home/runner")


def test_nothing_of_runnerhubs_environment_reaches_a_runner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    for name in PASSED_THROUGH:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    settings = ProcessBackendSettings(command=["run.sh"], env={"RUNNER_ALLOW_RUNASROOT": "0"})
    env = runner_env(settings, ME, Path("/work/rh-1-1"), "rh-1-1", "jit")
    assert not set(SECRETS) & set(env)
    assert not any(v in value for v in SECRETS.values() for value in env.values())
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/work/rh-1-1",
        "USER": "runner",
        "LOGNAME": "runner",
        "LANG": "C.UTF-8",
        "RUNNER_ALLOW_RUNASROOT": "0",
        JIT_ENV: "jit",
        "RUNNERHUB_RUNNER_NAME": "rh-1-1",
    }


def test_the_pool_env_cannot_replace_the_jit_config() -> None:
    settings = ProcessBackendSettings(command=["run.sh"], env={JIT_ENV: "forged"})
    assert runner_env(settings, ME, None, "rh-1-1", "real")[JIT_ENV] == "real"
    assert runner_env(settings, ME, None, "rh-1-1", "real")["HOME"] == "/home/runner"


@pytest.mark.parametrize(
    "name",
    [
        job_runner_name("rh", 42, 1),
        job_runner_name("rh", 42, 2, 3),
        spare_runner_name("rh", "gpu.x_1", 7),
    ],
)
def test_the_names_runnerhub_makes_are_valid(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name", ["", "..", "../etc/passwd", "a/b", ".hidden", "rh-1\n", "x" * 65, "rh 1", "rh-1\x00"]
)
def test_a_name_that_could_leave_its_directory_is_refused(name: str) -> None:
    assert not is_valid_name(name)


def test_an_unknown_user_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="no user 'no-such-user-here'"):
        ProcessBackendSettings(command=["run.sh"], user="no-such-user-here")
