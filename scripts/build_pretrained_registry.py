"""Build `sae_lens/pretrained_saes.yaml` from a registry YAML in the SAELens layout.

The facts (release names, repos, per-SAE paths, expected L0 / variance explained,
Neuronpedia ids, norm scaling factors, config overrides) carry over; the layout is ours:

- releases sorted by name;
- release keys in a fixed order: repo_id, model, conversion_func, config_overrides, links,
  saes; `conversion_func` always written (`sae_lens` for the native folder format);
- SAE keys in a fixed order: id, path, l0, variance_explained, norm_scaling_factor,
  neuronpedia; numbers written as floats; unknown keys dropped (and reported);
- SAEs keep their published order (it follows layers and widths).

The script also runs on our own file, so it doubles as a formatter after hand edits:

    python scripts/build_pretrained_registry.py /path/to/source.yaml \
        --out sae_lens/pretrained_saes.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FORMAT = "sae_lens"
RELEASE_KEYS = ("repo_id", "model", "conversion_func", "config_overrides", "links", "saes")
REQUIRED_RELEASE_KEYS = ("repo_id", "model", "saes")
SAE_KEYS = ("id", "path", "l0", "variance_explained", "norm_scaling_factor", "neuronpedia")
FLOAT_SAE_KEYS = ("l0", "variance_explained", "norm_scaling_factor")

HEADER = """\
# Registry of published SAEs loadable with `SAE.from_pretrained(release, sae_id)`.
#
# release:
#   repo_id: Hugging Face repo holding the SAEs
#   model: the model they were trained on
#   conversion_func: loader for the repo's file format (see
#     sae_lens.toolkit.pretrained_sae_loaders.NAMED_PRETRAINED_SAE_LOADERS)
#   config_overrides: (optional) values that replace the loaded config's
#   links: (optional) pages about the release
#   saes: list of {id, path (folder or file in the repo), l0, variance_explained,
#     norm_scaling_factor, neuronpedia} (all but id and path optional)
#
# Normalised by scripts/build_pretrained_registry.py (run it again after editing).
"""


def normalise_sae(release: str, sae: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """One SAE entry with known keys only, in our order, numbers as floats."""
    for key in ("id", "path"):
        if key not in sae:
            raise ValueError(f"release {release!r}: an SAE entry has no {key!r}: {sae}")
    for key in sae:
        if key not in SAE_KEYS:
            dropped.append(f"{release} / {sae['id']}: {key}")
    out: dict[str, Any] = {}
    for key in SAE_KEYS:
        value = sae.get(key)
        if value is None:
            continue
        out[key] = float(value) if key in FLOAT_SAE_KEYS else str(value)
    return out


def normalise_release(name: str, release: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """One release in our key order, with its SAEs normalised and ids checked unique."""
    missing = [key for key in REQUIRED_RELEASE_KEYS if key not in release]
    if missing:
        raise ValueError(f"release {name!r} lacks required keys {missing}")
    for key in release:
        if key not in RELEASE_KEYS:
            dropped.append(f"{name}: {key}")
    saes = [normalise_sae(name, sae, dropped) for sae in release["saes"]]
    ids = [sae["id"] for sae in saes]
    duplicates = sorted({sae_id for sae_id in ids if ids.count(sae_id) > 1})
    if duplicates:
        raise ValueError(f"release {name!r} has duplicate SAE ids {duplicates}")
    out: dict[str, Any] = {
        "repo_id": str(release["repo_id"]),
        "model": str(release["model"]),
        "conversion_func": release.get("conversion_func") or DEFAULT_FORMAT,
    }
    for key in ("config_overrides", "links"):
        if release.get(key):
            out[key] = release[key]
    out["saes"] = saes
    return out


def build_registry(source: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Normalised registry and the list of dropped (unknown) keys."""
    dropped: list[str] = []
    registry = {name: normalise_release(name, source[name], dropped) for name in sorted(source)}
    return registry, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="registry YAML to read")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "sae_lens" / "pretrained_saes.yaml",
        help="where to write the normalised registry",
    )
    args = parser.parse_args(argv)
    with open(args.source) as f:
        source = yaml.safe_load(f)
    registry, dropped = build_registry(source)
    body = yaml.safe_dump(registry, sort_keys=False, default_flow_style=False, width=1000)
    args.out.write_text(HEADER + body)
    n_saes = sum(len(release["saes"]) for release in registry.values())
    print(f"wrote {args.out}: {len(registry)} releases, {n_saes} SAEs")
    for entry in dropped:
        print(f"dropped unknown key: {entry}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
