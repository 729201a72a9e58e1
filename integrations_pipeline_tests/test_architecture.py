"""The layers import one way: engine (no Dagster, no environment reads) ← warehouse ← defs; no import cycle.

Imports are read from the source (``ast``), so the test sees what a module imports, not what happened to be
imported first in this interpreter. Imports inside functions escape the cycle check, so warehouse/ imports no
project module inside a function: a backend is loaded by name through ``warehouse/registry.py`` (no module
imports one), and the backends import ``base.py`` and ``delivery.py`` at module level.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "integrations_pipeline"


def module_imports() -> dict[str, set[str]]:
    """Module name → the project modules it imports at module level (``from x import y`` counts x and x.y)."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.parse(path.read_text()).body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_module_level_import_cycle():
    graph = module_imports()
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert cycles == []


def test_layers_import_one_way():
    allowed = {
        "integrations_pipeline.engine": ("integrations_pipeline.engine",),
        "integrations_pipeline.warehouse": ("integrations_pipeline.engine", "integrations_pipeline.warehouse"),
        # The service (link flow, webhooks) runs without Dagster: engine and warehouse only.
        "integrations_pipeline.service": (
            "integrations_pipeline.engine",
            "integrations_pipeline.warehouse",
            "integrations_pipeline.service",
        ),
    }
    wrong = [
        f"{module} imports {target}"
        for module, targets in module_imports().items()
        for layer, ok in allowed.items()
        if module.startswith(layer)
        for target in targets
        if target.startswith("integrations_pipeline.") and not target.startswith(ok)
    ]
    assert wrong == []


def test_no_module_imports_a_warehouse_backend():
    """Backends are reached through the registry only: base.py and the rest never import one."""
    from integrations_pipeline.warehouse.registry import BACKENDS

    backends = {b.target.partition(":")[0] for b in BACKENDS}
    assert backends == {"integrations_pipeline.warehouse.duckdb", "integrations_pipeline.warehouse.postgres"}
    importers = sorted(f"{m} imports {t}" for m, targets in module_imports().items() for t in targets & backends)
    assert importers == []


def test_the_warehouse_imports_project_modules_at_module_level_only():
    """No function-local import of a project module in warehouse/ (such imports hid the old base ↔ backend circle)."""
    local = []
    for path in sorted((PACKAGE / "warehouse").rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE.name))
                ) or (isinstance(node, ast.Import) and any(a.name.startswith(PACKAGE.name) for a in node.names)):
                    local.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert local == []


def test_the_engine_imports_no_dagster():
    engine = sorted(
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in (PACKAGE / "engine").rglob("*.py")
    )
    script = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in engine)
        + (
            "leaked = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
            "print(','.join(leaked))\n"
        )
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_engine_never_reads_the_environment():
    """The engine is handed its environment (``environ=``); only defs/ and the CLI read ``os.environ``.

    So a test, a benchmark or a user's own project decides what a client sees, and a variable set in the shell
    cannot change what a run against an injected transport does.
    """
    reads = []
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and node.attr in {"environ", "environb", "getenv", "getenvb", "putenv"}
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and {a.name for a in node.names} & {"environ", "environb", "getenv", "getenvb"}
            ):
                reads.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert reads == []


#: The write side in the order a record travels: map → plan → send → record, then what drives them. A module
#: may import only modules before it, so the path never returns to a step it has left (``reads`` sends read
#: calls through the sink endpoint; ``push`` is the one module that walks the whole path).
WRITE_PATH = ["keys", "mapping", "plan", "sinks", "reads", "ledger", "push"]


def test_the_write_path_never_returns_to_a_step_it_left():
    prefix = "integrations_pipeline.engine.write."
    graph = module_imports()
    on_path = sorted(m.removeprefix(prefix) for m in graph if m.startswith(prefix))
    assert on_path == sorted(WRITE_PATH)
    backwards = [
        f"{module} imports {target.removeprefix(prefix)}"
        for i, module in enumerate(WRITE_PATH)
        for target in graph[prefix + module]
        if target.startswith(prefix) and WRITE_PATH.index(target.removeprefix(prefix).split(".")[0]) >= i
    ]
    assert backwards == []


def test_module_level_imports_only_then_the_graph_is_whole():
    """No function-local import of a project module in the engine: the graph above is the whole graph."""
    hidden = []
    for path in sorted((PACKAGE / "engine").rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (
                        node.level or (node.module or "").startswith("integrations_pipeline")
                    ):
                        hidden.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert hidden == []
