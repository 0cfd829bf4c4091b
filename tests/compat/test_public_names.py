"""Every public name of the published sae-lens 5.6.0 (the checked-in list, written from the
5.6.0 package by scripts/compat_public_names.py) exists here, so code written for 5.6.0
imports what it imported there."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "compat_public_names", ROOT / "scripts" / "compat_public_names.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_of_5_6_0_exists_here(script: ModuleType) -> None:
    rows = script.read_list(script.DEFAULT_LIST)
    assert len(rows) > 500  # the whole list, not an empty file
    assert script.missing_names(rows) == []


def test_the_list_covers_imported_names_members_and_constants(script: ModuleType) -> None:
    rows = {(module, name) for module, name, _ in script.read_list(script.DEFAULT_LIST)}
    for expected in [
        ("sae_lens.evals", "get_pretrained_saes_directory"),  # patched by 5.6.0 tests
        ("sae_lens.training.sae_trainer", "TrainStepOutput"),
        ("sae_lens.training.activations_store", "ActivationsStore.get_batch_tokens"),
        ("sae_lens.training.training_sae", "SAE_CFG_PATH"),
        ("sae_lens.config", "LanguageModelSAERunnerConfig.architecture"),
    ]:
        assert expected in rows


def test_lister_and_checker_on_a_small_package(tmp_path: Path, script: ModuleType) -> None:
    package = tmp_path / "sae_lens"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(
        "import json\n"
        "from typing import Any\n"
        "from sae_lens.other import helper\n"
        "LIMIT = 3\n"
        "_PRIVATE = 4\n"
        "def run(): ...\n"
        "class Thing:\n"
        "    cfg: dict\n"
        "    size = 2\n"
        "    def go(self): ...\n"
        "    def _hidden(self): ...\n"
    )
    names = tmp_path / "names.txt"
    assert script.main(["list", str(tmp_path), "--out", str(names)]) == 0
    assert script.read_list(names) == [
        ("sae_lens", "", "module"),
        ("sae_lens.mod", "", "module"),
        ("sae_lens.mod", "helper", "imported"),
        ("sae_lens.mod", "LIMIT", "constant"),
        ("sae_lens.mod", "run", "function"),
        ("sae_lens.mod", "Thing", "class"),
        ("sae_lens.mod", "Thing.size", "attribute"),
        ("sae_lens.mod", "Thing.go", "method"),
    ]
    missing = script.missing_names(
        [
            ("sae_lens.sae", "SAE.encode", "method"),
            ("sae_lens.sae", "SAE.encode_everything", "method"),
            ("sae_lens.no_such_module", "", "module"),
        ]
    )
    assert [line.split(":")[0] for line in missing] == [
        "sae_lens.sae\tSAE.encode_everything\tmethod",
        "sae_lens.no_such_module\t\tmodule",
    ]
