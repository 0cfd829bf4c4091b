"""Reading back the disk cache of activations that `CacheActivationsRunner` writes.

The cache is a Hugging Face dataset with one row per sequence: a column named after the
hook [context positions, d_in] and, usually, `token_ids` [context positions]. The store
that writes a cache and the one that reads it back take the same geometry from the cache
config (sae_lens.training.store_arguments.cache_store_arguments).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import torch
from datasets import Dataset


def load_activation_cache(
    path: str, hook_name: str, positions: int, d_in: int, min_rows: int
) -> Dataset:
    """The cache at `path` in torch format, checked to hold `hook_name` activations of
    shape [positions, d_in] in at least `min_rows` rows."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"activation cache {path!r} does not exist: run "
            "CacheActivationsRunner first or fix cached_activations_path"
        )
    cache = datasets.load_from_disk(path)
    if not isinstance(cache, Dataset):
        raise ValueError(f"activation cache {path!r} is not a single Dataset")
    if hook_name not in cache.column_names:
        raise ValueError(
            f"activation cache has columns {cache.column_names}, not the hook {hook_name!r}"
        )
    expected = (positions, d_in)
    found = tuple(cache.features[hook_name].shape)
    if found != expected:
        raise ValueError(
            f"activation cache rows have shape {found}, expected (context positions, d_in) = {expected}"
        )
    if len(cache) < min_rows:
        raise ValueError(
            f"activation cache holds {len(cache)} sequences, fewer than one batch of {min_rows}"
        )
    columns = [hook_name] + (["token_ids"] if "token_ids" in cache.column_names else [])
    return cache.with_format("torch", columns=columns)


@dataclass
class CachedActivationReader:
    """Reads a loaded cache in order, `rows_per_batch` sequences at a time; `row` is the
    position (the next row to read)."""

    cache: Dataset
    hook_name: str
    rows_per_batch: int
    d_in: int
    dtype: torch.dtype
    device: torch.device
    row: int = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Activations [tokens, d_in] and token ids [tokens] (None if the cache has none) of
        the next rows; None when too few rows are left, and the reader is rewound."""
        start, end = self.row, self.row + self.rows_per_batch
        if end > len(self.cache):
            self.row = 0
            return None
        rows = self.cache[start:end]
        self.row = end
        acts = rows[self.hook_name].to(device=self.device, dtype=self.dtype)
        token_ids = rows.get("token_ids")
        if token_ids is not None:
            token_ids = token_ids.to(device=self.device, dtype=torch.long).reshape(-1)
        return acts.reshape(-1, self.d_in), token_ids
