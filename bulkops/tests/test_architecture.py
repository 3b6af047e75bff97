"""The layout as a specification (CONVENTIONS.md): arrows point down only, no import
cycle, one module talks to the queue library, no function longer than 60 lines.

Read from the source (every ``import``, including those inside functions), so a cycle
hidden in a lazy import fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bulkops"
MAX_FUNCTION_LINES = 60
#: Interfaces: nothing below them may import them.
INTERFACES = ("bulkops.api", "bulkops.admin", "bulkops.realtime", "bulkops.worker",
              "bulkops.management", "bulkops.bench")  # fmt: skip
#: Modules below the interfaces.
CORE = ("bulkops.engine", "bulkops.actions", "bulkops.models", "bulkops.selectors",
        "bulkops.representations", "bulkops.events", "bulkops.conf",
        "bulkops.exceptions", "bulkops.revocation")  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in PACKAGE.rglob("*.py")
        if "tests" not in path.parts and "migrations" not in path.parts
    }


def imports_of(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from x import y`` counts x and,
    when it is a module, x.y)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = runtime_modules()
    return {
        name: {m for m in imports_of(path, name) if m in modules and m != name}
        for name, path in modules.items()
    }


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_cycle_between_modules():
    edges = graph()
    # A package's __init__ re-exporting its submodules is not a cycle of modules.
    for name in edges:
        edges[name] = {m for m in edges[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_nothing_below_the_interfaces_imports_one():
    bad = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        if under(name, CORE)
        for target in targets
        if under(target, INTERFACES)
    ]
    assert bad == []


def test_only_the_engine_queue_imports_the_task_library():
    users = sorted(
        name
        for name, path in runtime_modules().items()
        if not under(name, ("bulkops.bench",))
        and any(
            m.split(".")[0] in ("django_tasks", "django_tasks_db") for m in imports_of(path, name)
        )
    )
    # The worker extends the library's Worker (its public surface) by design.
    assert users == ["bulkops.engine.queue", "bulkops.management.commands.db_worker",
                     "bulkops.worker.worker"]  # fmt: skip


def test_the_benchmark_is_never_imported_by_runtime_code():
    bad = [
        name
        for name, targets in graph().items()
        if not under(name, ("bulkops.bench", "bulkops.management.commands.bulkops_bench"))
        and any(under(t, ("bulkops.bench",)) for t in targets)
    ]
    assert bad == []


def test_no_function_is_longer_than_60_lines():
    """Everywhere but migrations: the app, the project, and the tests themselves."""
    long = []
    paths = [p for p in (*PACKAGE.rglob("*.py"), *(ROOT / "project").rglob("*.py"))
             if "migrations" not in p.parts]  # fmt: skip
    for path in paths:
        name = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def test_ruff_is_clean_with_the_complexity_limit():
    """``ruff check`` (ruff.toml: McCabe C901 ≤ 10 for the app) finds nothing."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "bulkops", "project"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
