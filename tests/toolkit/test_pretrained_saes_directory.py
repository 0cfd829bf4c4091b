"""The pretrained SAE registry: its schema, lookups, and the script that normalises it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from sae_lens.toolkit.pretrained_sae_loaders import (
    NAMED_PRETRAINED_SAE_CONFIG_GETTERS,
    NAMED_PRETRAINED_SAE_LOADERS,
    SAEConfigLoadOptions,
    get_sae_config,
)
from sae_lens.toolkit.pretrained_saes_directory import (
    PretrainedSAELookup,
    get_norm_scaling_factor,
    get_pretrained_saes_directory,
    get_repo_id_and_folder_name,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY_PATH = REPO_ROOT / "sae_lens" / "pretrained_saes.yaml"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@pytest.fixture(scope="module")
def raw_registry() -> dict:
    return yaml.load(
        REGISTRY_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )


@pytest.fixture(scope="module")
def build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_pretrained_registry", REPO_ROOT / "scripts" / "build_pretrained_registry.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- schema ------------------------------------------------------------------------------


def test_every_release_has_the_required_keys_and_a_known_format(raw_registry: dict) -> None:
    assert raw_registry, "the registry is empty"
    for name, release in raw_registry.items():
        assert REPO_ID.match(release["repo_id"]), f"{name}: bad repo id {release['repo_id']!r}"
        assert isinstance(release["model"], str) and release["model"], name
        # null (as in 5.6.0) is the sae_lens folder format
        conversion_func = release["conversion_func"] or "sae_lens"
        assert conversion_func in NAMED_PRETRAINED_SAE_LOADERS, name
        assert conversion_func in NAMED_PRETRAINED_SAE_CONFIG_GETTERS, name
        assert set(release) <= {
            "repo_id",
            "model",
            "conversion_func",
            "config_overrides",
            "links",
            "saes",
        }
        assert release["saes"], f"{name} has no SAEs"


def test_every_sae_entry_is_well_formed_and_ids_are_unique(raw_registry: dict) -> None:
    allowed = {"id", "path", "l0", "variance_explained", "norm_scaling_factor", "neuronpedia"}
    for name, release in raw_registry.items():
        ids = [sae["id"] for sae in release["saes"]]
        assert len(ids) == len(set(ids)), f"{name} has duplicate SAE ids"
        for sae in release["saes"]:
            assert set(sae) <= allowed, f"{name}/{sae['id']}: unknown keys {set(sae) - allowed}"
            assert isinstance(sae["path"], str) and sae["path"], f"{name}/{sae['id']}"
            for key in ("l0", "variance_explained", "norm_scaling_factor"):
                value = sae.get(key, 0.0)  # an int or a float, as 5.6.0 wrote it
                assert type(value) in (int, float), f"{name}/{sae['id']}: {key}"
            neuronpedia = sae.get("neuronpedia")
            assert neuronpedia is None or "/" in neuronpedia, f"{name}/{sae['id']}"


def _as_the_script_writes_values(release: dict) -> dict:
    """A release with the two value forms the registry keeps from 5.6.0 (a null
    conversion_func, int numbers) as the normalising script writes them."""
    return {
        **release,
        "conversion_func": release["conversion_func"] or "sae_lens",
        "saes": [
            {k: float(v) if isinstance(v, int) else v for k, v in sae.items()}
            for sae in release["saes"]
        ],
    }


def test_registry_file_is_in_normalised_layout(
    raw_registry: dict, build_script: ModuleType
) -> None:
    normalised, dropped = build_script.build_registry(raw_registry)
    assert dropped == []
    assert list(normalised) == list(raw_registry)  # releases sorted
    for name, release in raw_registry.items():
        assert list(release) == list(normalised[name]), f"{name}: key order"
        assert _as_the_script_writes_values(release) == normalised[name]


# --- lookups -------------------------------------------------------------------------------


def test_directory_mirrors_the_yaml(raw_registry: dict) -> None:
    directory = get_pretrained_saes_directory()
    assert get_pretrained_saes_directory() is directory  # cached
    assert set(directory) == set(raw_registry)
    for name, release in raw_registry.items():
        lookup = directory[name]
        assert isinstance(lookup, PretrainedSAELookup)
        assert (lookup.release, lookup.repo_id, lookup.model) == (
            name,
            release["repo_id"],
            release["model"],
        )
        assert lookup.saes_map == {sae["id"]: sae["path"] for sae in release["saes"]}
        assert lookup.config_overrides == release.get("config_overrides")
        for sae in release["saes"]:
            assert lookup.expected_l0[sae["id"]] == sae.get("l0", 0.0)
            assert lookup.expected_var_explained[sae["id"]] == sae.get("variance_explained", 1.0)
            assert lookup.neuronpedia_id[sae["id"]] == sae.get("neuronpedia")


def test_norm_scaling_factor_lookup(raw_registry: dict) -> None:
    release, sae = next(
        (name, sae)
        for name, entry in raw_registry.items()
        for sae in entry["saes"]
        if "norm_scaling_factor" in sae
    )
    assert get_norm_scaling_factor(release, sae["id"]) == sae["norm_scaling_factor"]
    assert get_norm_scaling_factor(release, "no-such-id") is None
    assert get_norm_scaling_factor("no-such-release", sae["id"]) is None


def test_repo_id_and_folder_name() -> None:
    lookup = get_pretrained_saes_directory()["gpt2-small-hook-z-kk"]
    sae_id, path = next(iter(lookup.saes_map.items()))
    assert get_repo_id_and_folder_name("gpt2-small-hook-z-kk", sae_id) == (lookup.repo_id, path)
    # An unregistered release is taken as a hub repo, the id as a folder in it (5.6.0).
    assert get_repo_id_and_folder_name("me/my-saes", "layer_3") == ("me/my-saes", "layer_3")
    assert get_repo_id_and_folder_name("release1", "sae1") == ("release1", "sae1")


def test_unknown_names_get_close_matches() -> None:
    with pytest.raises(
        ValueError, match=r"Release 'gemma-scope-2b-pt-re' .*Did you mean .*'gemma-scope-2b-pt-res'"
    ):
        get_sae_config("gemma-scope-2b-pt-re", "x", SAEConfigLoadOptions())
    with pytest.raises(
        ValueError,
        match=r"SAE id 'blocks.0.hook_z ' not found .*Did you mean one of \['blocks.0.hook_z'",
    ):
        get_repo_id_and_folder_name("gpt2-small-hook-z-kk", "blocks.0.hook_z ")


# --- the normalising script ----------------------------------------------------------------


def test_build_script_orders_keys_drops_unknown_ones_and_writes_floats(
    build_script: ModuleType, tmp_path: Path
) -> None:
    source = {
        "zeta": {
            "saes": [{"path": "p1", "id": "b", "l0": 3, "junk": 1}],
            "model": "m",
            "repo_id": "o/z",
        },
        "alpha": {
            "repo_id": "o/a",
            "model": "m",
            "conversion_func": "gemma_2",
            "saes": [{"id": "a", "path": "p"}],
        },
    }
    (tmp_path / "src.yaml").write_text(yaml.safe_dump(source))
    out = tmp_path / "out.yaml"
    assert build_script.main([str(tmp_path / "src.yaml"), "--out", str(out)]) == 0

    written = yaml.safe_load(out.read_text())
    assert list(written) == ["alpha", "zeta"]
    assert list(written["zeta"]) == ["repo_id", "model", "conversion_func", "saes"]
    assert written["zeta"]["conversion_func"] == "sae_lens"
    assert written["zeta"]["saes"] == [{"id": "b", "path": "p1", "l0": 3.0}]
    _, dropped = build_script.build_registry(source)
    assert dropped == ["zeta / b: junk"]


def test_build_script_refuses_duplicate_ids(build_script: ModuleType) -> None:
    source = {
        "r": {
            "repo_id": "o/r",
            "model": "m",
            "saes": [{"id": "a", "path": "p"}, {"id": "a", "path": "q"}],
        }
    }
    with pytest.raises(ValueError, match=r"release 'r' has duplicate SAE ids \['a'\]"):
        build_script.build_registry(source)


def test_docs_table_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location(
        "pretrained_table", REPO_ROOT / "scripts" / "pretrained_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (REPO_ROOT / "docs" / "pretrained_saes.md").read_text()
    assert page == module.render_table(get_pretrained_saes_directory()), (
        "docs/pretrained_saes.md is stale: run `python scripts/pretrained_table.py`"
    )
    assert "| `gpt2-small-res-jb` | gpt2-small |" in page
