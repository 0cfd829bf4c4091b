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

Every release below loads with `SAE.from_pretrained(release, sae_id)`, which returns
`(sae, cfg_dict, log_sparsity)`; list a release's ids with
`get_pretrained_saes_directory()[release].saes_map`. A mistyped release or id gets an
error that suggests the closest names. The format column names the loader
(`sae_lens.toolkit.pretrained_sae_loaders.NAMED_PRETRAINED_SAE_LOADERS`) that reads the
repo's files; SAEs trained on rescaled inputs get their norm scaling factor folded into
the weights.

## Offline, local files and other repos

- Files come from the Hugging Face hub through its local cache (`HF_HUB_CACHE`, default
  `~/.cache/huggingface/hub`). With `HF_HUB_OFFLINE=1` nothing goes over the network and
  SAEs already in the cache load as usual.
- `SAE.from_pretrained("owner/repo", "folder")` loads an SAE from a repo that is not in
  the registry, in any of the formats below.
- `SAE.load_from_pretrained(path)` (and `SAE.from_pretrained(path, sae_id)`) reads a local
  folder or file and tells its format by the files in it: sae_lens (`cfg.json` +
  `sae_weights.safetensors`), Gemma Scope (`params.npz`, in a path that keeps the repo's
  names, e.g. `.../gemma-scope-2b-pt-res/layer_3/width_16k/...`), dictionary_learning
  (`config.json` + `ae.pt`), EleutherAI sparsify (`cfg.json` + `sae.safetensors`), Llama
  Scope (`hyperparams.json` + `checkpoints/final.safetensors`), Llama Scope R1
  (`config.json` + `sae_weights.safetensors`), and the single-file hook_z and DeepSeek R1
  `.pt` formats. Pickled weights are read with `torch.load(weights_only=True)`.

This page is generated from `sae_lens/pretrained_saes.yaml` by
`scripts/pretrained_table.py`; do not edit it by hand.

## Releases
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
