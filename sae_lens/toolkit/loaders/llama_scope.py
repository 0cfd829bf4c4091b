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
from typing import Any

import torch

from sae_lens.dtypes import dtype_from_name
from sae_lens.toolkit.loaders.common import (
    SAEConfigLoadOptions,
    StateDict,
    read_json,
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


def get_llama_scope_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the Llama Scope SAE in `folder_name` of `repo_id` (its hyperparams.json)."""
    path = download(
        repo_id, repo_path(folder_name, LLAMA_SCOPE_CONFIG_FILENAME), options.force_download
    )
    return llama_scope_config_from_hyperparams(read_json(path))


def get_llama_scope_r1_distill_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the Llama Scope R1 Distill SAE in `folder_name` of `repo_id`."""
    path = download(
        repo_id, repo_path(folder_name, LLAMA_SCOPE_R1_CONFIG_FILENAME), options.force_download
    )
    return llama_scope_r1_config_from_json(read_json(path))


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
