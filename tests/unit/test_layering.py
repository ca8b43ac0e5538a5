"""Product apart from tooling: nothing that runs in production imports `runnerhub.dev` (the
local cluster and the simulators), and the tooling does not import the CLI that starts it."""

from __future__ import annotations

import ast
from pathlib import Path

import runnerhub

SRC = Path(runnerhub.__file__).parent


def imports(path: Path) -> set[str]:
    """Every module `path` imports by absolute name (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def importers_of(package: str, among: list[Path]) -> list[str]:
    return sorted(
        str(p.relative_to(SRC))
        for p in among
        if any(m == package or m.startswith(package + ".") for m in imports(p))
    )


def modules(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def test_product_code_does_not_import_the_dev_tooling() -> None:
    tooling = (SRC / "dev", SRC / "cli")  # the CLI offers `runnerhub up` and the simulators
    product = [p for p in modules(SRC) if not any(p.is_relative_to(t) for t in tooling)]
    assert importers_of("runnerhub.dev", product) == []
    assert importers_of("runnerhub.dev", modules(SRC / "cli"))  # the check sees imports


def test_the_dev_tooling_does_not_import_the_cli() -> None:
    assert importers_of("runnerhub.cli", modules(SRC / "dev")) == []
