"""The native sae_lens folder: `cfg.json`, `sae_weights.safetensors`, optional
`sparsity.safetensors` (tensor `sparsity`: log10 feature firing frequencies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sae_lens.saes.sae_folder import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SPARSITY_FILENAME
from sae_lens.toolkit.loaders.common import (
    SAEConfigLoadOptions,
    read_json,
    read_safetensors,
    require_keys,
)
from sae_lens.toolkit.loaders.hub import download, repo_path

__all__ = [
    "SAE_CFG_FILENAME",
    "SAE_WEIGHTS_FILENAME",
    "SPARSITY_FILENAME",
    "get_sae_config_from_hf",
    "read_sparsity",
]


def get_sae_config_from_hf(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """The `cfg.json` of an sae_lens folder in a hub repo, with `device` set if given."""
    cfg_path = download(repo_id, repo_path(folder_name, SAE_CFG_FILENAME), options.force_download)
    cfg_dict = read_json(cfg_path)
    if options.device is not None:
        cfg_dict["device"] = options.device
    return cfg_dict


def read_sparsity(path: str | Path, device: str = "cpu") -> torch.Tensor:
    """The `sparsity` tensor of a `sparsity.safetensors` file."""
    tensors = read_safetensors(path, device)
    require_keys(tensors, ["sparsity"], str(path))
    return tensors["sparsity"]
