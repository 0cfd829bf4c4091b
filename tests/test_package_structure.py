"""The package's structure stays readable: imports run one way (no cycle among `sae_lens`
modules, counting every import: top level, inside functions and under TYPE_CHECKING), and
no module grows past what one sitting can read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "sae_lens"
MAX_MODULE_LINES = 700


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their
    __init__)."""
    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = path.with_suffix("").relative_to(package_dir.parent).parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative import
        package = module.split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    # `from pkg import name` imports the submodule pkg.name when there is one, else pkg.
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports. Importing `a.b.c` also runs the packages
    `a` and `a.b`, so those count as imported too (except a module's own ancestors, which
    Python has already run)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            imported = _imported_names(name, path, node)
            if isinstance(node, ast.ImportFrom):
                submodules = [target for target in imported[:-1] if target in modules]
                imported = submodules or imported[-1:]
            for target in imported:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                parts = target.split(".") if target else []
                for depth in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:depth])
                    is_ancestor = name == prefix or name.startswith(prefix + ".")
                    if prefix in modules and not is_ancestor:
                        graph[name].add(prefix)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm,
    iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    (pkg / "d.py").write_text("import pkg.a\n")
    assert cycles(import_graph(module_files(pkg))) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_a_package_init_that_imports_its_users_closes_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg import user\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "user.py").write_text("from pkg.sub.leaf import X\n")
    assert cycles(import_graph(module_files(pkg))) == [["pkg.sub", "pkg.user"]]


def test_sae_lens_has_no_import_cycle() -> None:
    found = cycles(import_graph(module_files()))
    assert not found, "import cycles among sae_lens modules:\n" + "\n".join(
        " <-> ".join(component) for component in found
    )


@pytest.mark.parametrize(
    "path", sorted(PACKAGE_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_DIR))
)
def test_no_module_is_longer_than_one_sitting(path: Path) -> None:
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_MODULE_LINES, f"{path} has {n_lines} lines; split it by job"
