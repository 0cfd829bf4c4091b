"""The documentation site: it builds with `mkdocs build --strict`, its config reference is
up to date, and every public name of the 5.6.0 interface is importable and documented."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES_FILE = Path(__file__).with_name("reference_names.txt")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", ROOT / "docs" / "gen_config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_names() -> list[tuple[str, str, str]]:
    rows = []
    for line in NAMES_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            module, qualname, kind = line.split("\t")
            rows.append((module, qualname, kind))
    return rows


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    output = result.stdout + result.stderr
    hint = ""
    if "Highlight.__init__() missing" in output:
        hint = (
            "\nmkdocstrings 0.30 fails with pymdown-extensions 12.3 and 13.1 (Highlight needs md): "
            "install mkdocstrings[python] >= 1.0"
        )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output[-4000:]}{hint}"
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert not warnings, "mkdocs build printed warnings:\n" + "\n".join(warnings)
    return site


def _api_anchor_ids(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "api").rglob("*.html"):
        ids.update(re.findall(r'id="(sae_lens\.[\w.]+)"', page.read_text()))
    return ids


def test_site_builds_with_every_page(site_dir: Path) -> None:
    for page in ("index", "training", "using_saes", "evaluation", "pretrained_saes"):
        assert (site_dir / page / "index.html").is_file() or (
            site_dir / f"{page}.html"
        ).is_file(), f"page {page} missing from the built site"
    assert (site_dir / "index.html").is_file()


def test_config_reference_in_training_page_is_up_to_date() -> None:
    generator = _load_generator()
    page = (ROOT / "docs" / "training.md").read_text()
    assert generator.render_page(page) == page, (
        "docs/training.md is out of date: run python docs/gen_config_reference.py"
    )


def test_config_reference_lists_every_field_with_its_default() -> None:
    from sae_lens.config import LanguageModelSAERunnerConfig

    reference = _load_generator().render_reference()
    for field in dataclasses.fields(LanguageModelSAERunnerConfig):
        row = next(
            (line for line in reference.splitlines() if line.startswith(f"| `{field.name}` |")),
            None,
        )
        assert row is not None, f"config field {field.name} missing from the reference"
        if field.default is not dataclasses.MISSING:
            assert f"`{field.default!r}`" in row, f"default of {field.name} wrong in {row}"


def test_config_reference_generator_rejects_an_undocumented_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = _load_generator()
    groups = [(topic, dict(group)) for topic, group in generator.GROUPS]
    del groups[0][1]["hook_name"]
    monkeypatch.setattr(generator, "GROUPS", groups)
    with pytest.raises(SystemExit, match=r"config fields with no entry in GROUPS: \['hook_name'\]"):
        generator.render_reference()


def _is_importable(module_name: str, qualname: str, kind: str) -> bool:
    try:
        module = importlib.import_module(module_name)
        if kind in ("export", "class", "function"):
            return hasattr(module, qualname)
        class_name, member = qualname.split(".")
        cls = getattr(module, class_name, None)
    except ImportError:  # a lazy top-level export whose module is missing
        return False
    if cls is None:
        return False
    if kind == "field":
        return member in {f.name for f in dataclasses.fields(cls)}
    if kind == "attribute":
        # Declared on the class (or a base), or assigned to `self` in the class's code.
        annotated = {
            name for klass in cls.__mro__ for name in getattr(klass, "__annotations__", {})
        }
        assigned = re.search(rf"self\.{member}\s*[:=]", inspect.getsource(cls)) is not None
        return member in annotated or hasattr(cls, member) or assigned
    return hasattr(cls, member)


def test_every_reference_name_is_importable() -> None:
    missing = [
        f"{module}: {qualname} ({kind})"
        for module, qualname, kind in _reference_names()
        if not _is_importable(module, qualname, kind)
    ]
    assert not missing, "reference names that cannot be imported:\n" + "\n".join(missing)


def _documented_on_a_base_class(module_name: str, qualname: str, ids: set[str]) -> bool:
    """An inherited member is documented on the page of the base class defining it."""
    class_name, member = qualname.split(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return any(f"{base.__module__}.{base.__qualname__}.{member}" in ids for base in cls.__mro__[1:])


def test_every_reference_name_is_in_the_api_pages(site_dir: Path) -> None:
    ids = _api_anchor_ids(site_dir)
    overview = (site_dir / "api" / "index.html").read_text()
    undocumented = []
    for module, qualname, kind in _reference_names():
        if kind == "export":
            found = f"<code>{qualname}</code>" in overview
        else:
            found = f"{module}.{qualname}" in ids or (
                "." in qualname and _documented_on_a_base_class(module, qualname, ids)
            )
        if not found:
            undocumented.append(f"{module}: {qualname} ({kind})")
    assert not undocumented, "reference names missing from the API pages:\n" + "\n".join(
        undocumented
    )
