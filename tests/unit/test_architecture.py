"""The package layers of `src/runnerhub`, as `docs/architecture.md` writes them down (its
```layers block, lowest first): a package or top-level module imports only from layers below
its own, so no two packages import each other, however indirectly. And no function runs
longer than about 80 lines without a reason beside it."""

from __future__ import annotations

import ast
import concurrent.futures
import multiprocessing
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "runnerhub"
DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
MAX_FUNCTION_LINES = 80
LONG_REASON = re.compile(r"#\s*long:\s*\S")


def layers() -> dict[str, int]:
    block = re.search(r"^```layers\n(.*?)^```", DOC.read_text(), re.M | re.S)
    assert block, f"{DOC} has no ```layers block"
    order: dict[str, int] = {}
    for rank, line in enumerate(block.group(1).splitlines()):
        for unit in line.split():
            assert unit not in order, f"{unit} is on two layers"
            order[unit] = rank
    return order


def unit_of(path: Path) -> str:
    """The package (or top-level module) a source file belongs to."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def parse(*sources: str) -> list[ast.Module]:
    """`ast.parse` of each, in a fresh interpreter. CPython 3.11.7 raises "SystemError: AST
    constructor recursion depth mismatch" in a process where an earlier RecursionError
    left the AST converter's count (global, not per thread) off: seen twice in make test,
    also from a thread of its own. A spawned process starts clean; the trees are pickled."""
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return list(pool.map(ast.parse, sources))


def imported_units(tree: ast.AST) -> set[str]:
    """Every `runnerhub.X` this file imports, at any depth (TYPE_CHECKING included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from runnerhub import metrics` names a module; `__version__` is the root's.
            if node.module == "runnerhub":
                names = [f"runnerhub.{a.name}" for a in node.names if a.name != "__version__"]
            else:
                names = [node.module]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("runnerhub.")}
    return found


def sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.parent != SRC or p.name != "__init__.py")


def test_every_package_has_a_layer() -> None:
    order = layers()
    missing = sorted({unit_of(p) for p in sources()} - order.keys())
    assert not missing, f"place these in the ```layers block of {DOC.name}: {missing}"


def against_layers(unit: str, tree: ast.AST, order: dict[str, int]) -> list[str]:
    """The units `tree` (a file of `unit`) imports that are not on a lower layer."""
    return sorted(
        t for t in imported_units(tree) if t != unit and order.get(t, len(order)) >= order[unit]
    )


def test_no_package_imports_from_its_own_layer_or_above() -> None:
    order = layers()
    paths = sources()
    trees = parse(*(path.read_text() for path in paths))
    wrong = [
        f"{path.relative_to(SRC)} imports runnerhub.{target}"
        for path, tree in zip(paths, trees, strict=True)
        for target in against_layers(unit_of(path), tree, order)
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_refuses_upward_and_sideways_imports() -> None:
    order = layers()
    [tree] = parse(
        "from runnerhub.api.app import create_app\n"
        "from runnerhub import metrics, __version__\n"
        "import runnerhub.domain.jobs\n"
        "def f():\n    from runnerhub.cache import Cache\n"
    )
    assert imported_units(tree) == {"api", "metrics", "domain", "cache"}
    assert against_layers("store", tree, order) == ["api", "cache"]  # above, and beside
    assert against_layers("node", tree, order) == []


def test_no_long_function_without_a_reason() -> None:
    long = []
    paths = sources()
    for path, tree in zip(paths, parse(*(p.read_text() for p in paths)), strict=True):
        lines = path.read_text().splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            head = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            said = any(LONG_REASON.search(lines[i - 1]) for i in (head - 1, head) if i >= 1)
            if length > MAX_FUNCTION_LINES and not said:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"over {MAX_FUNCTION_LINES} lines with no '# long: why' beside them:\n" + (
        "\n".join(long)
    )
