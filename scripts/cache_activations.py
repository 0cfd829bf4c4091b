"""Write a model's activations at one hook to disk with `CacheActivationsRunner`, then say
how to train on them.

    python scripts/cache_activations.py --config cache.yaml
    python scripts/cache_activations.py --dataset_path pydoc-corpus --model_name tiny-pydoc-gpt2 \\
        --model_batch_size 16 --hook_name blocks.1.hook_resid_pre --hook_layer 1 --d_in 128 \\
        --training_tokens 500000 --context_size 64 --new_cached_activations_path activations/l1

Every `CacheActivationsRunnerConfig` field is a flag (flags override `--config`, a .yaml
or .json file of fields). `--dry_run` prints the plan (tokens, shards, disk space) without
running the model. The cache is written in whole shards of `buffer_size_gb` (as in SAELens
5.6.0), so `training_tokens` is rounded up to a whole number of shards: keep
`buffer_size_gb` small for small caches. A killed run resumes from its last complete shard when rerun with the
same config.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def read_config_file(path: Path) -> dict[str, Any]:
    """Config fields from a .yaml/.yml/.json file."""
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"config file must be .yaml, .yml or .json, got {str(path)!r}")
    with open(path) as f:
        data = json.load(f) if path.suffix.lower() == ".json" else yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of config fields")
    return data


def parse_config(argv: Sequence[str]) -> tuple[Any, bool]:
    """(the CacheActivationsRunnerConfig, dry_run) from the command line."""
    from simple_parsing import ArgumentParser

    from sae_lens.config import CacheActivationsRunnerConfig

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=Path)
    known, rest = pre.parse_known_args(list(argv))
    defaults = read_config_file(known.config) if known.config is not None else {}

    parser = ArgumentParser(
        prog="python scripts/cache_activations.py",
        description=__doc__.split("\n\n")[0],
        add_option_string_dash_variants=False,
        allow_abbrev=False,
    )
    parser.add_argument("--config", metavar="FILE", help="a .yaml or .json file of config fields")
    parser.add_argument(
        "--dry_run", action="store_true", help="print the plan and exit without running"
    )
    parser.add_arguments(CacheActivationsRunnerConfig, dest="cfg")
    if defaults:
        parser.set_defaults(cfg=defaults)
    namespace = parser.parse_args(rest)
    return namespace.cfg, namespace.dry_run


def folder_size_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, dry_run = parse_config(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The runner writes whole shards of buffer_size_gb (as SAELens 5.6.0 does), so it caches
    # training_tokens rounded up to a whole number of shards (or the dataset, if smaller).
    n_tokens = cfg.n_buffers * cfg.n_tokens_in_buffer
    print(
        f"caching up to {n_tokens:,} tokens of {cfg.dataset_path} at {cfg.model_name} "
        f"{cfg.hook_name} (d_in={cfg.d_in}, {cfg.dtype}): {cfg.n_buffers} shard(s) of "
        f"{cfg.n_tokens_in_buffer:,} tokens, up to {n_tokens * cfg.bytes_per_token / 1e9:.3f} GB, "
        f"into {cfg.new_cached_activations_path}"
    )
    if n_tokens > 2 * cfg.training_tokens:
        print(
            f"note: that is more than training_tokens={cfg.training_tokens:,} because shards are "
            f"{cfg.buffer_size_gb} GB; lower --buffer_size_gb to cache less"
        )
    if dry_run:
        return 0

    from sae_lens.cache_activations_runner import CacheActivationsRunner

    dataset = CacheActivationsRunner(cfg).run()
    folder = Path(cfg.new_cached_activations_path)
    print(
        f"wrote {len(dataset):,} sequences of {cfg.sliced_context_size} tokens "
        f"({folder_size_bytes(folder) / 1e6:.1f} MB) to {folder}"
    )
    print(
        "train on them with: python -m sae_lens.sae_training_runner "
        f"--model_name {cfg.model_name} --hook_name {cfg.hook_name} --hook_layer {cfg.hook_layer} "
        f"--d_in {cfg.d_in} --context_size {cfg.context_size} "
        f"--use_cached_activations true --cached_activations_path {folder}"
    )
    if tuple(cfg.seqpos_slice) != (None,):
        print(f"and the same seqpos_slice as the cache: {tuple(cfg.seqpos_slice)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
