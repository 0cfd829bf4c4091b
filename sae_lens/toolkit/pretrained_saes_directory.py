"""The registry of published SAEs (`sae_lens/pretrained_saes.yaml`) and lookups in it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from sae_lens.errors import UnknownPretrainedSAEError, closest_names

REGISTRY_FILENAME = "pretrained_saes.yaml"

# The C loader is ~6x faster on the 13k-line registry and just as safe.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class PretrainedSAELookup:
    """One release of the registry: where its SAEs live and what to expect of them."""

    release: str
    repo_id: str
    model: str
    conversion_func: str | None
    saes_map: dict[str, str]  # sae id -> path in the repo
    expected_var_explained: dict[str, float]
    expected_l0: dict[str, float]
    neuronpedia_id: dict[str, str]
    config_overrides: dict[str, str] | dict[str, dict[str, str | bool | int]] | None


@cache
def _read_registry() -> dict[str, Any]:
    text = resources.files("sae_lens").joinpath(REGISTRY_FILENAME).read_text()
    return yaml.load(text, Loader=_SafeLoader)


def _lookup_from_entry(release: str, entry: dict[str, Any]) -> PretrainedSAELookup:
    if "saes" not in entry:
        raise KeyError(f"release {release!r} of {REGISTRY_FILENAME} has no 'saes' list")
    saes = entry["saes"]
    return PretrainedSAELookup(
        release=release,
        repo_id=entry["repo_id"],
        model=entry["model"],
        conversion_func=entry.get("conversion_func"),
        saes_map={sae["id"]: sae["path"] for sae in saes},
        expected_var_explained={sae["id"]: sae.get("variance_explained", 1.0) for sae in saes},
        expected_l0={sae["id"]: sae.get("l0", 0.0) for sae in saes},
        neuronpedia_id={sae["id"]: sae.get("neuronpedia") for sae in saes},
        config_overrides=entry.get("config_overrides"),
    )


@cache
def get_pretrained_saes_directory() -> dict[str, PretrainedSAELookup]:
    """All releases of the registry by name (read once, then cached)."""
    return {
        release: _lookup_from_entry(release, entry) for release, entry in _read_registry().items()
    }


def get_norm_scaling_factor(release: str, sae_id: str) -> float | None:
    """The activation norm scaling factor recorded for an SAE, or None if there is none."""
    entry = _read_registry().get(release)
    if entry is None:
        return None
    for sae in entry["saes"]:
        if sae["id"] == sae_id:
            return sae.get("norm_scaling_factor")
    return None


def _close_matches_hint(name: str, candidates: list[str]) -> str:
    matches = closest_names(name, candidates, n=5)
    return f" Did you mean one of {matches}?" if matches else ""


def _shortened(ids: list[str], limit: int = 5) -> str:
    if len(ids) <= limit:
        return str(ids)
    return str(ids[:limit])[:-1] + f", ... ({len(ids)} in all)]"


def unknown_release_message(release: str) -> str:
    """One-line error for a release that is neither in the registry nor a repo id."""
    releases = sorted(get_pretrained_saes_directory())
    return (
        f"Release {release!r} is not in the pretrained SAEs directory and is not a Hugging "
        f"Face repo id ('owner/name') or a local folder." + _close_matches_hint(release, releases)
    )


def unknown_sae_id_message(release: str, sae_id: str) -> str:
    """One-line error for an SAE id that the release does not have."""
    directory = get_pretrained_saes_directory()
    valid_ids = list(directory[release].saes_map)
    message = (
        f"SAE id {sae_id!r} not found in release {release!r}."
        + _close_matches_hint(sae_id, valid_ids)
        + f" Valid ids are {_shortened(valid_ids)}."
    )
    canonical = f"{release}-canonical"
    if "canonical" not in release and canonical in directory:
        canonical_ids = list(directory[canonical].saes_map)
        message += (
            f" To pick an SAE without naming its L0, use release {canonical!r} "
            f"with ids like {_shortened(canonical_ids)}."
        )
    return message


def looks_like_repo_id(name: str) -> bool:
    """True for names of the form 'owner/name' (a Hugging Face repo id)."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts)


def get_repo_id_and_folder_name(release: str, sae_id: str) -> tuple[str, str]:
    """The Hugging Face repo and the path inside it of `sae_id` from `release`.

    A release that is not in the registry is taken as a repo id, with `sae_id` as the
    folder inside it (as in 5.6.0; `SAE.from_pretrained` refuses names that are not
    'owner/name' repo ids or local folders, with a hint of the closest releases).
    """
    sae_info = get_pretrained_saes_directory().get(release)
    if sae_info is None:
        return release, sae_id
    if sae_id not in sae_info.saes_map:
        raise UnknownPretrainedSAEError(unknown_sae_id_message(release, sae_id))
    return sae_info.repo_id, sae_info.saes_map[sae_id]
