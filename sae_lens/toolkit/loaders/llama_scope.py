"""Llama Scope (fnlp/Llama3_1-8B-Base-LX*) and Llama Scope R1 Distill
(fnlp/Llama-Scope-R1-Distill): JumpReLU SAEs in OpenMoss's layout.

Llama Scope: `hyperparams.json` + `checkpoints/final.safetensors`, one scalar threshold
`jump_relu_threshold` for all features. R1 Distill: `config.json` +
`sae_weights.safetensors` with a per-feature `log_jumprelu_threshold`. Both store
`encoder.weight` [d_sae, d_in], `decoder.weight` [d_in, d_sae], `encoder.bias`,
`decoder.bias`, and expect inputs scaled to a dataset-wide average norm
(`normalize_activations: expected_average_only_in`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sae_lens.dtypes import dtype_from_name
from sae_lens.toolkit.loaders.common import (
    LoadedSAE,
    SAEConfigLoadOptions,
    StateDict,
    fold_norm_scaling_factor,
    read_json,
    read_safetensors,
    require_keys,
)
from sae_lens.toolkit.loaders.hub import download, repo_path

LLAMA_SCOPE_CONFIG_FILENAME = "hyperparams.json"
LLAMA_SCOPE_WEIGHTS_PATH = "checkpoints/final.safetensors"
LLAMA_SCOPE_R1_CONFIG_FILENAME = "config.json"
LLAMA_SCOPE_R1_WEIGHTS_FILENAME = "sae_weights.safetensors"

_LINEAR_KEYS = ["encoder.weight", "decoder.weight", "encoder.bias", "decoder.bias"]


def _hook_layer(hook_name: str) -> int:
    parts = hook_name.split(".")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(
            f"cannot read a layer from hook point {hook_name!r} (expected 'blocks.<n>...')"
        )
    return int(parts[1])


def _openmoss_config(hook_name: str, d_in: int, d_sae: int, dtype: str) -> dict[str, Any]:
    return {
        "architecture": "jumprelu",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": dtype,
        "model_name": "meta-llama/Llama-3.1-8B",
        "hook_name": hook_name,
        "hook_layer": _hook_layer(hook_name),
        "hook_head_index": None,
        "activation_fn_str": "relu",
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": True,
        "dataset_path": "cerebras/SlimPajama-627B",
        "context_size": 1024,
        "dataset_trust_remote_code": False,
        "apply_b_dec_to_input": False,
        "normalize_activations": "expected_average_only_in",
    }


def llama_scope_config_from_hyperparams(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """SAE config from a Llama Scope `hyperparams.json` (keeps `jump_relu_threshold`)."""
    cfg = _openmoss_config(
        hyperparams["hook_point_in"], hyperparams["d_model"], hyperparams["d_sae"], "bfloat16"
    )
    cfg["jump_relu_threshold"] = hyperparams["jump_relu_threshold"]
    return cfg


def llama_scope_r1_config_from_json(config: dict[str, Any]) -> dict[str, Any]:
    """SAE config from a Llama Scope R1 Distill `config.json`."""
    d_in = config["d_model"]
    return _openmoss_config(
        config["hook_point_in"], d_in, d_in * config["expansion_factor"], "float32"
    )


def _linear_weights(loaded: StateDict, dtype: torch.dtype, source: str) -> StateDict:
    require_keys(loaded, _LINEAR_KEYS, source)
    return {
        "W_enc": loaded["encoder.weight"].to(dtype).T.contiguous(),  # [d_in, d_sae]
        "W_dec": loaded["decoder.weight"].to(dtype).T.contiguous(),  # [d_sae, d_in]
        "b_enc": loaded["encoder.bias"].to(dtype),
        "b_dec": loaded["decoder.bias"].to(dtype),
    }


def convert_llama_scope_weights(
    cfg_dict: dict[str, Any], loaded: StateDict, source: str
) -> StateDict:
    """sae_lens weights from Llama Scope tensors; the scalar threshold is broadcast."""
    dtype = dtype_from_name(cfg_dict["dtype"], "dtype in SAE config")
    state_dict = _linear_weights(loaded, dtype, source)
    state_dict["threshold"] = torch.full(
        (cfg_dict["d_sae"],),
        cfg_dict["jump_relu_threshold"],
        dtype=dtype,
        device=state_dict["b_enc"].device,
    )
    return state_dict


def convert_llama_scope_r1_weights(
    cfg_dict: dict[str, Any], loaded: StateDict, source: str
) -> StateDict:
    """sae_lens weights from Llama Scope R1 Distill tensors (threshold = exp(log threshold))."""
    require_keys(loaded, ["log_jumprelu_threshold"], source)
    dtype = dtype_from_name(cfg_dict["dtype"], "dtype in SAE config")
    state_dict = _linear_weights(loaded, dtype, source)
    state_dict["threshold"] = loaded["log_jumprelu_threshold"].to(dtype).exp()
    return state_dict


def llama_scope_norm_scaling_factor(hyperparams: dict[str, Any]) -> float | None:
    """sqrt(d_model) / the dataset's average input norm, if the hyperparams record it.

    This is how the registry's `norm_scaling_factor` of Llama Scope SAEs relates to the
    training data; it lets a local folder fold the same factor without the registry.
    """
    average_norm = (hyperparams.get("dataset_average_activation_norm") or {}).get("in")
    if not average_norm:
        return None
    return math.sqrt(hyperparams["d_model"]) / average_norm


@dataclass(frozen=True)
class OpenMossLayout:
    """One OpenMoss file layout: where its config and weights are, and how they become an
    sae_lens config and weights."""

    config_filename: str
    weights_path: str
    config_from_json: Callable[[dict[str, Any]], dict[str, Any]]
    convert_weights: Callable[[dict[str, Any], StateDict, str], StateDict]
    folds_recorded_norm: bool  # local weights take the norm scaling factor the config records

    def hub_config(self, repo_id: str, folder_name: str, force_download: bool) -> dict[str, Any]:
        """Config of the SAE in `folder_name` of hub repo `repo_id`."""
        path = download(repo_id, repo_path(folder_name, self.config_filename), force_download)
        return self.config_from_json(read_json(path))

    def read_weights(self, cfg_dict: dict[str, Any], path: str | Path, device: str) -> StateDict:
        """sae_lens weights from this layout's weights file at `path`."""
        return self.convert_weights(cfg_dict, read_safetensors(path, device), str(path))

    def read_local(self, folder: Path, device: str, dtype: str | None) -> LoadedSAE:
        """(config, weights, None) of a local folder in this layout; `dtype` replaces the
        config's before the weights are converted."""
        raw = read_json(folder / self.config_filename)
        cfg = self.config_from_json(raw)
        if dtype is not None:
            cfg["dtype"] = dtype
        state_dict = self.read_weights(cfg, folder / self.weights_path, device)
        factor = llama_scope_norm_scaling_factor(raw) if self.folds_recorded_norm else None
        if factor is not None:
            fold_norm_scaling_factor(cfg, state_dict, factor)
        return cfg, state_dict, None


LLAMA_SCOPE = OpenMossLayout(
    LLAMA_SCOPE_CONFIG_FILENAME,
    LLAMA_SCOPE_WEIGHTS_PATH,
    llama_scope_config_from_hyperparams,
    convert_llama_scope_weights,
    folds_recorded_norm=True,
)
LLAMA_SCOPE_R1 = OpenMossLayout(
    LLAMA_SCOPE_R1_CONFIG_FILENAME,
    LLAMA_SCOPE_R1_WEIGHTS_FILENAME,
    llama_scope_r1_config_from_json,
    convert_llama_scope_r1_weights,
    folds_recorded_norm=False,
)


def get_llama_scope_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the Llama Scope SAE in `folder_name` of `repo_id` (its hyperparams.json)."""
    return LLAMA_SCOPE.hub_config(repo_id, folder_name, options.force_download)


def get_llama_scope_r1_distill_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the Llama Scope R1 Distill SAE in `folder_name` of `repo_id`."""
    return LLAMA_SCOPE_R1.hub_config(repo_id, folder_name, options.force_download)
