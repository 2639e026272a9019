"""The structure stays as docs/architecture.md describes it.

* no import cycle between the library's modules (lazy imports inside functions included);
* a module imports only what another module exports (its ``__all__``), never a private name;
* no module reads another object's private attribute (``obj._x`` where ``obj`` is not
  ``self`` or ``cls``);
* the command line and ``fastapi_zitadel.testing`` use only the public API;
* every module of the package appears in the architecture page's module map.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fastapi_zitadel"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    yield f"{source}.{alias.name}", None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def _graph() -> dict[str, set[str]]:
    return {
        module: {target for target, _, _ in _imports(module) if target in MODULES} - {module}
        for module in MODULES
    }


def test_no_import_cycles() -> None:
    graph = _graph()
    # Importing fastapi_zitadel.x.y runs the package __init__ files first; those that only
    # re-export are not edges of a cycle (one that defines things, as a façade, is).
    packages = {
        m
        for m, path in MODULES.items()
        if path.name == "__init__.py"
        and not any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            for node in ast.parse(path.read_text(encoding="utf-8")).body
        )
    }
    graph = {m: edges - packages for m, edges in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def _package(module: str) -> str:
    """The package a module belongs to: ``fastapi_zitadel._events`` for
    ``fastapi_zitadel._events.receiver``; a module directly in ``fastapi_zitadel`` stands alone."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycles_between_packages() -> None:
    """Layers, not only modules: no package imports a package that imports it back, even
    through modules that form no cycle themselves (``_events.receiver`` importing
    ``_pipeline.jwt_validator`` while ``_pipeline.pipeline`` imports ``_events.revocations``
    is one). Package ``__init__`` files only re-export, so they are not edges."""
    packages = {m for m, path in MODULES.items() if path.name == "__init__.py"}
    edges: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if module in packages:
            continue
        for target in targets - packages:
            if _package(target) != _package(module):
                edges.setdefault(_package(module), set()).add(_package(target))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for target in edges.get(todo.pop(), ()):
                if target == goal:
                    return True
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return False

    cycles = sorted(
        f"{package} <-> {target}"
        for package, targets in edges.items()
        for target in targets
        if package < target and reaches(target, package)
    )
    assert not cycles, cycles


def test_modules_import_only_exported_names() -> None:
    wrong = []
    for module in MODULES:
        for target, name, line in _imports(module):
            if target not in MODULES or name is None:
                continue
            exported = getattr(importlib.import_module(target), "__all__", None)
            if name.startswith("_") or (exported is not None and name not in exported):
                wrong.append(f"{module}:{line} imports {name} from {target}")
    assert not wrong, "\n".join(wrong)


def test_every_private_module_declares_all() -> None:
    missing = [
        module
        for module, path in MODULES.items()
        if path.name not in ("__init__.py", "__main__.py")
        and "testing" not in path.parts
        and not hasattr(importlib.import_module(module), "__all__")
    ]
    assert not missing, missing


def test_no_module_reads_another_objects_private_attributes() -> None:
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            wrong.append(f"{module}:{node.lineno} reads .{name}")
    assert not wrong, "\n".join(wrong)


# The public API: the package root and its public submodules (no ``_`` in the name).
PUBLIC_MODULES = {
    module
    for module in MODULES
    if not any(part.startswith("_") for part in module.split("."))
    and not module.startswith("fastapi_zitadel.testing")
}


def _is_cli(module: str) -> bool:
    return module == "fastapi_zitadel._cli" or module.startswith("fastapi_zitadel._cli_")


@pytest.mark.parametrize(
    "module",
    [m for m in MODULES if m.startswith("fastapi_zitadel.testing") or _is_cli(m)],
)
def test_cli_and_testing_use_the_public_api(module: str) -> None:
    """They import from the public API (the root and its public submodules, their
    ``__all__``), from ``testing`` and from the command line's own modules (``_cli*``, held
    to the same rule) only."""

    private = []
    for target, name, line in _imports(module):
        if target not in MODULES or target.startswith("fastapi_zitadel.testing") or _is_cli(target):
            continue
        public = importlib.import_module(target) if target in PUBLIC_MODULES else None
        if public is None or (name is not None and name not in public.__all__):
            private.append(f"{module}:{line} imports {name or target} from {target}")
    assert not private, private


def test_architecture_page_lists_every_module() -> None:
    page = ARCHITECTURE.read_text(encoding="utf-8")
    missing = [
        str(path.relative_to(PACKAGE))
        for path in MODULES.values()
        if path.name not in ("__init__.py", "__main__.py")
        and f"`{path.relative_to(PACKAGE).as_posix()}`" not in page
    ]
    assert not missing, f"docs/architecture.md does not mention: {missing}"


def test_test_modules_share_helpers_through_helper_modules() -> None:
    """A test module imports what it shares from a helper module (``tests/*_support.py``,
    ``helpers.py``...), never from another ``test_*`` module: importing one collects its
    tests' module-level state and marks into the importer, and renaming it breaks the other."""
    tests = ROOT / "tests"
    found: list[str] = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.rpartition(".")[2].startswith("test_"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not found, found


def test_the_tests_security_md_names_exist() -> None:
    """Each threat row of SECURITY.md names the tests that cover it (``[test_x]`` or
    ``[test_x::test_y]``): those modules and functions exist, so renaming a test module or
    function cannot leave a row pointing at nothing."""
    import re

    modules = {path.stem: path for path in (ROOT / "tests").rglob("test_*.py")}
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    missing = []
    for cell in re.findall(r"\[([^\]]*\btest_[^\]]*)\]", text):
        for name in (part.strip() for part in cell.split(",")):
            found = re.fullmatch(r"(?:\w+/)?(test_\w+)(?:::(test_\w+))?", name)
            if found is None:
                continue  # an abbreviation such as "..._environment"
            module, function = found.groups()
            source = modules[module].read_text() if module in modules else ""
            if not source or (
                function and not re.search(rf"^(async )?def {function}\(", source, re.M)
            ):
                missing.append(name)
    assert not missing, missing
