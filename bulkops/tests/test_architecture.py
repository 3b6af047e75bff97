"""The layout as a specification (CONVENTIONS.md): arrows point down only, no import
cycle, one module talks to the queue library, the benchmark stays out of the product,
no function longer than 60 lines.

Read from the source (every ``import``, including those inside functions), so a cycle
hidden in a lazy import fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "bulkops"
BENCHMARKS = ROOT / "benchmarks"
MAX_FUNCTION_LINES = 60
MAX_BENCHMARK_MODULE_LINES = 400
#: Interfaces: nothing below them may import them.
INTERFACES = ("bulkops.api", "bulkops.admin", "bulkops.realtime", "bulkops.worker",
              "bulkops.management")  # fmt: skip
#: Modules below the interfaces.
CORE = ("bulkops.engine", "bulkops.actions", "bulkops.models", "bulkops.selectors",
        "bulkops.representations", "bulkops.events", "bulkops.conf",
        "bulkops.exceptions", "bulkops.revocation", "bulkops.exports")  # fmt: skip


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
        if any(
            m.split(".")[0] in ("django_tasks", "django_tasks_db") for m in imports_of(path, name)
        )
    )
    # The worker extends the library's Worker (its public surface) by design.
    assert users == ["bulkops.engine.queue", "bulkops.management.commands.db_worker",
                     "bulkops.worker.worker"]  # fmt: skip


def test_the_benchmark_is_an_app_of_its_own_that_runtime_code_never_imports():
    """benchmarks/ (installed only with BULKOPS_BENCHMARKS=1) holds the whole benchmark and
    scale seeding; nothing of bulkops/ or project/ outside the tests imports any of it."""
    runtime = runtime_modules() | {
        module_name(path): path for path in (ROOT / "project").rglob("*.py")
    }
    bad = [
        f"{name} imports {target}"
        for name, path in runtime.items()
        for target in imports_of(path, name)
        if under(target, ("benchmarks",))
    ]
    assert bad == []
    assert not (PACKAGE / "bench").exists()
    assert not (PACKAGE / "scaleseed.py").exists()
    assert not (PACKAGE / "management" / "commands" / "bulkops_bench.py").exists()
    assert (BENCHMARKS / "management" / "commands" / "bulkops_bench.py").exists()


def test_no_benchmark_module_is_longer_than_400_lines():
    long = [
        f"{path.relative_to(ROOT)}: {lines} lines"
        for path in BENCHMARKS.rglob("*.py")
        if "tests" not in path.parts
        and (lines := len(path.read_text().splitlines())) > MAX_BENCHMARK_MODULE_LINES
    ]
    assert long == []


def test_no_function_is_longer_than_60_lines():
    """Everywhere but migrations: the app, the project, the benchmark, and the tests."""
    long = []
    paths = [p for p in (*PACKAGE.rglob("*.py"), *(ROOT / "project").rglob("*.py"),
                         *BENCHMARKS.rglob("*.py"))
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
        [sys.executable, "-m", "ruff", "check", "bulkops", "project", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


#: The engine's services that start an operation.
STARTERS = {"operation_create", "operation_retry", "operation_undo"}
#: What only the engine does on the way: replays, rate-limit checks and counts.
START_PARTS = {"operation_replay", "rate_limit_check", "rate_limit_count", "rate_limit_taken"}


def called_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def test_every_interface_starts_operations_with_one_engine_call_naming_its_rate_scope():
    """The API, the admin and the ``bulk`` command call a starter with ``rate_scope``
    (the engine checks and counts the limit, and answers replays); none of them does
    any of that itself."""
    starting: set[str] = set()
    unscoped, own_parts = [], []
    for name, path in runtime_modules().items():
        if not under(name, INTERFACES) or under(name, ("bulkops.bench",)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            if called_name(node) in STARTERS:
                starting.add(".".join(name.split(".")[:2]))
                # By name, or in the options a caller forwards (``**options``).
                if not {"rate_scope", None} & {k.arg for k in node.keywords}:
                    unscoped.append(f"{name}:{node.lineno}")
            if called_name(node) in START_PARTS:
                own_parts.append(f"{name}:{node.lineno} {called_name(node)}")
    assert starting == {"bulkops.api", "bulkops.admin", "bulkops.management"}
    assert unscoped == []
    assert own_parts == []
