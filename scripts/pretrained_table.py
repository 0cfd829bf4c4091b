"""Write docs/pretrained_saes.md: a table of the releases in sae_lens/pretrained_saes.yaml.

python scripts/pretrained_table.py [--out docs/pretrained_saes.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sae_lens.toolkit.pretrained_saes_directory import (
    PretrainedSAELookup,
    get_pretrained_saes_directory,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

INTRO = """\
# Pretrained SAEs

Every release below loads with `SAE.from_pretrained(release, sae_id)`; list a release's ids
with `get_pretrained_saes_directory()[release].saes_map`. The format column names the loader
(`sae_lens.toolkit.pretrained_sae_loaders.NAMED_PRETRAINED_SAE_LOADERS`) that reads the
repo's files. Files come from the Hugging Face hub or, with `HF_HUB_OFFLINE=1`, from the
local cache.

This page is generated from `sae_lens/pretrained_saes.yaml` by
`scripts/pretrained_table.py`; do not edit it by hand.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def release_row(lookup: PretrainedSAELookup) -> str:
    """One Markdown table row for a release."""
    repo = f"[{lookup.repo_id}](https://huggingface.co/{lookup.repo_id})"
    has_dashboards = any(lookup.neuronpedia_id.values())
    cells = [
        f"`{lookup.release}`",
        _cell(lookup.model),
        repo,
        str(len(lookup.saes_map)),
        f"`{lookup.conversion_func or 'sae_lens'}`",
        "yes" if has_dashboards else "",
    ]
    return "| " + " | ".join(cells) + " |"


def render_table(directory: dict[str, PretrainedSAELookup]) -> str:
    """The whole page: intro, totals and one row per release (sorted by name)."""
    n_saes = sum(len(lookup.saes_map) for lookup in directory.values())
    lines = [
        INTRO,
        f"{len(directory)} releases, {n_saes} SAEs.",
        "",
        "| Release | Model | Repo | SAEs | Format | Neuronpedia |",
        "|---|---|---|---:|---|---|",
        *(release_row(directory[name]) for name in sorted(directory)),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "pretrained_saes.md")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_table(get_pretrained_saes_directory()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
