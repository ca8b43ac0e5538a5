"""The runner simulator's config handling and exit codes, without a simulator."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path

import pytest

from runnerhub.dev.sim import runner

SECRET = "s3cr3t-runner-token"


def encode(config: object) -> str:
    return base64.b64encode(json.dumps(config).encode()).decode()


GOOD = {
    "sim_url": "http://127.0.0.1:1",
    "runner_id": 5,
    "runner_name": "r5",
    "runner_token": SECRET,
    "labels": ["self-hosted"],
    "scope": "repo:o/r",
}


def test_decode_accepts_a_jit_config() -> None:
    assert runner.decode_config(encode(GOOD)) == GOOD


@pytest.mark.parametrize(
    "encoded",
    [
        None,
        "",
        "not base64!",
        base64.b64encode(b"not json").decode(),
        encode([1, 2]),
        encode({**GOOD, "runner_id": "5"}),
        encode({k: v for k, v in GOOD.items() if k != "runner_token"}),
    ],
)
def test_decode_refuses_bad_configs(encoded: str | None) -> None:
    with pytest.raises(runner.ConfigError):
        runner.decode_config(encoded)


def test_bad_config_exits_2_without_echoing_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(runner.ENV_JITCONFIG, raising=False)
    bad = encode({**GOOD, "runner_id": None})
    assert runner.main(["--jitconfig", bad]) == runner.EXIT_CONFIG
    assert runner.main([]) == runner.EXIT_CONFIG
    out = capsys.readouterr()
    assert "invalid JIT config" in out.err
    assert SECRET not in out.out + out.err and bad not in out.out + out.err


def test_the_environment_variable_is_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runner.ENV_JITCONFIG, "%%%")
    assert runner.main([]) == runner.EXIT_CONFIG
    assert "not valid base64" in capsys.readouterr().err


def test_runner_module_imports_only_the_standard_library() -> None:
    # It is started hundreds of times per test run: no third-party or runnerhub imports.
    tree = ast.parse(Path(runner.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    import sys

    assert modules <= set(sys.stdlib_module_names) | {"__future__"}
