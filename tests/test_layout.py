"""The package's two tiers: imports run one way (utils <- data, reports <- the tutorial's
modules <- trust <- inference; the tutorial's modules <- tuning), without cycles, and the
tutorial's modules stay few."""

from __future__ import annotations

import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "pyimagesearch")
# what each part may import from the package: itself and the parts listed
ALLOWED = {"utils": {"utils"}, "data": {"data", "utils"}, "reports": {"reports", "utils"},
           "front": {"front", "reports", "data", "utils"},
           "trust": {"trust", "front", "reports", "data", "utils"},
           "inference": {"inference", "trust", "front", "reports", "data", "utils"},
           "tuning": {"tuning", "front", "reports", "data", "utils"}}


def _modules() -> dict[str, str]:
    """'pyimagesearch.utils.fileio' -> its file, for every module of the package."""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                relative = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                found[relative.removesuffix(".__init__")] = os.path.join(folder, name)
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ALLOWED else "front"


def _imports(module: str, path: str, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports, wherever the import stands."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known and name != module}


def test_imports_run_one_way_between_the_tiers():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        for imported in _imports(module, path, set(modules)):
            if _part(imported) not in ALLOWED[_part(module)] and imported != "pyimagesearch":
                wrong.append(f"{module} ({_part(module)}) imports {imported} ({_part(imported)})")
    assert not wrong, wrong


def test_no_module_imports_itself_back_through_a_cycle():
    modules = _modules()
    graph = {module: _imports(module, path, set(modules)) - {"pyimagesearch"} for module, path in modules.items()}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in graph[module]:
            assert state.get(imported) != "open", " -> ".join([*trail, module, imported])
            if imported not in state:
                visit(imported, [*trail, module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_tutorial_tier_is_a_dozen_modules_at_most():
    front = [name for name in os.listdir(PACKAGE) if name.endswith(".py") and name != "__init__.py"]
    assert "config.py" in front and "create_dataloaders.py" in front
    assert len(front) <= 12, sorted(front)
