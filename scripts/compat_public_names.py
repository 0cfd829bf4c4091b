"""Every public name of the published SAELens 5.6.0, looked up in this package.

Two steps:

    # 1. list the names, read (never imported) from the 5.6.0 package source: a wheel, an
    #    unpacked package folder or a venv's site-packages
    .venv/bin/python scripts/compat_public_names.py list /work/oracle-venv/lib/python3.11/site-packages

    # 2. look each listed name up here (the test suite runs this against the checked-in list)
    .venv/bin/python scripts/compat_public_names.py check

A public name is a module of the package, a module-level name that does not start with `_`
and is defined there or imported there from the package itself (code patches such names,
e.g. `sae_lens.evals.get_pretrained_saes_directory`), and a public method, property or
class-level attribute of a public class. Names the module imports from other libraries are
left out. `check` prints each name that is missing here and exits 1 if any is.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "sae_lens"
DEFAULT_LIST = Path(__file__).resolve().parents[1] / "tests" / "compat" / "saelens_5_6_0_names.txt"
HEADER = (
    "# Public names of the published sae-lens 5.6.0 (module<TAB>qualified name<TAB>kind),\n"
    "# written by scripts/compat_public_names.py list; checked by its `check` step.\n"
)


# --- listing -------------------------------------------------------------------------------


def package_sources(source: Path) -> Iterator[tuple[str, str]]:
    """(dotted module name, source text) of every module of the package in `source`: a
    wheel, a folder holding the `sae_lens` package, or the package folder itself."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            for name in sorted(wheel.namelist()):
                if name.startswith(f"{PACKAGE}/") and name.endswith(".py"):
                    yield _module_name(Path(name)), wheel.read(name).decode()
        return
    root = source if source.name == PACKAGE else source / PACKAGE
    if not (root / "__init__.py").is_file():
        raise SystemExit(f"error: no {PACKAGE} package in {source}")
    for path in sorted(root.rglob("*.py")):
        yield _module_name(path.relative_to(root.parent)), path.read_text()


def _module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def _assigned_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    else:
        return []
    return [t.id for t in targets if isinstance(t, ast.Name)]


def _class_members(node: ast.ClassDef) -> Iterator[tuple[str, str]]:
    """Methods and class-level attributes; a bare annotation (`cfg: SAEConfig`) declares an
    instance attribute, which exists only on instances, so it is not listed."""
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(item.name):
            yield item.name, "method"
        if isinstance(item, ast.AnnAssign) and item.value is None and not _is_dataclass(node):
            continue
        for name in _assigned_names(item):
            if _is_public(name):
                yield name, "attribute"


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(decorator) for decorator in node.decorator_list)


def public_names(module: str, source: str) -> Iterator[tuple[str, str]]:
    """(qualified name, kind) of the public names of one module's source."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and _is_public(node.name):
            yield node.name, "class"
            for member, kind in _class_members(node):
                yield f"{node.name}.{member}", kind
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(node.name):
            yield node.name, "function"
        elif isinstance(node, ast.ImportFrom) and _imports_from_package(module, node):
            for alias in node.names:
                name = alias.asname or alias.name
                if _is_public(name) and name != "*":
                    yield name, "imported"
        else:
            for name in _assigned_names(node):
                if _is_public(name):
                    yield name, "constant"


def _imports_from_package(module: str, node: ast.ImportFrom) -> bool:
    return node.level > 0 or (node.module or "").split(".")[0] == PACKAGE


def list_names(source: Path, out: Path) -> int:
    rows = []
    for module, text in package_sources(source):
        if not all(_is_public(part) for part in module.split(".")):
            continue
        rows.append((module, "", "module"))
        rows.extend((module, qualname, kind) for qualname, kind in public_names(module, text))
    unique = list(dict.fromkeys(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(HEADER + "".join("\t".join(row) + "\n" for row in unique))
    print(f"{len(unique)} public names of {source} written to {out}")
    return 0


# --- checking ------------------------------------------------------------------------------


def read_list(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            module, qualname, kind = line.split("\t")
            rows.append((module, qualname, kind))
    return rows


def find(module: str, qualname: str) -> str | None:
    """None when `module`.`qualname` exists here, else why not."""
    try:
        obj = importlib.import_module(module)
    except ImportError as error:
        return f"module does not import ({error})"
    path = qualname.split(".") if qualname else []
    for depth, part in enumerate(path):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif isinstance(obj, type) and depth == len(path) - 1 and _is_field(obj, part):
            return None
        else:
            return f"no attribute {part!r}"
    return None


def _is_field(cls: type, name: str) -> bool:
    """A dataclass field without a class-level default (it exists on instances only)."""
    return dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}


def missing_names(rows: list[tuple[str, str, str]]) -> list[str]:
    missing = []
    for module, qualname, kind in rows:
        why = find(module, qualname)
        if why is not None:
            missing.append(f"{module}\t{qualname}\t{kind}: {why}")
    return missing


def check_names(path: Path) -> int:
    rows = read_list(path)
    missing = missing_names(rows)
    for line in missing:
        print(line)
    print(f"{len(rows) - len(missing)} of {len(rows)} public names of sae-lens 5.6.0 found here")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/compat_public_names.py",
        description="List the public names of the published sae-lens 5.6.0, or check that "
        "every listed name exists in this package.",
    )
    steps = parser.add_subparsers(dest="step", required=True)
    lister = steps.add_parser("list", help="write the names of a 5.6.0 package source")
    lister.add_argument(
        "source", type=Path, help="a sae_lens-5.6.0 wheel, or a folder holding the package"
    )
    lister.add_argument("--out", type=Path, default=DEFAULT_LIST, help="the list to write")
    checker = steps.add_parser("check", help="look up every listed name in this package")
    checker.add_argument("--names", type=Path, default=DEFAULT_LIST, help="the list to read")
    args = parser.parse_args(argv)
    if args.step == "list":
        if not args.source.exists():
            parser.error(f"{args.source} does not exist")
        return list_names(args.source, args.out)
    if not args.names.is_file():
        parser.error(f"name list {args.names} does not exist; write it with the list step")
    return check_names(args.names)


if __name__ == "__main__":
    sys.exit(main())
