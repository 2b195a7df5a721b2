"""The shape of the code, as issue 15 and 14 set it: no two edge_fpn modules import each other at
load time (module-level imports), and in the runtime and the CLI no function is over 80 lines and
no public function takes more than 8 named parameters (a dataclass carries the rest)."""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "edge_fpn")
SHAPED = [os.path.join(PACKAGE, "runtime"), os.path.join(PACKAGE, "cli.py"), os.path.join(PACKAGE, "builder"),
          os.path.join(PACKAGE, "export"), os.path.join(PACKAGE, "model"), os.path.join(PACKAGE, "demo.py"),
          os.path.join(PACKAGE, "tracking_eval.py"), os.path.join(PACKAGE, "evaluate.py"),
          os.path.join(PACKAGE, "bundle.py"), os.path.join(PACKAGE, "versions.py")]


def _modules() -> Dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[module[: -len(".__init__")] if module.endswith(".__init__") else module] = path
    return found


def _load_time_imports(module: str, path: str, modules: Dict[str, str]) -> Set[str]:
    """The edge_fpn modules `module` imports at load time: top level, classes, if/try blocks; not
    inside functions (lazy) nor under ``if TYPE_CHECKING:``."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    names: Set[str] = set()

    def visit(body: List[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts) + ("." + node.module if node.module else "")
                names.update(base + "." + alias.name for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(inner)

    visit(ast.parse(open(path, encoding="utf-8").read()).body)
    resolved = set()
    for name in names:
        while name and name not in modules:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        if name and name != module:
            resolved.add(name)
    return resolved


def test_no_import_cycle_at_load_time():
    modules = _modules()
    graph = {module: _load_time_imports(module, path, modules) for module, path in modules.items()}
    cycles = []
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                walk(imported)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not cycles, "modules that import each other at load time: " + "; ".join(" -> ".join(c) for c in cycles)


def test_runtime_and_cli_functions_are_short_with_few_parameters():
    files = []
    for place in SHAPED:
        if os.path.isdir(place):
            files += [os.path.join(d, f) for d, _, names in os.walk(place) for f in names if f.endswith(".py")]
        else:
            files.append(place)
    findings = []
    for path in sorted(files):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            where = f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}"
            length = node.end_lineno - node.lineno + 1
            if length > 80:
                findings.append(f"{where}: {length} lines")
            args = node.args
            named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
            if (not node.name.startswith("_") or node.name == "__init__") and len(named) > 8:
                findings.append(f"{where}: {len(named)} parameters")
    assert not findings, "\n".join(findings)
