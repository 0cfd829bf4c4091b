"""Connor Kissane & Robert Krzyzanowski's GPT-2 small attention-output (hook_z) SAEs
(ckkissane/attn-saes-gpt2-small-all-layers): `<name>.pt` holds `W_enc` [d_in, d_sae],
`W_dec` [d_sae, d_in], `b_enc`, `b_dec` in sae_lens naming; `<name>_cfg.json` holds
`act_size`, `dict_size`, `act_name` and `layer`."""

from __future__ import annotations

from typing import Any

from sae_lens.toolkit.loaders.common import (
    SAEConfigLoadOptions,
    StateDict,
    read_json,
    require_keys,
)
from sae_lens.toolkit.loaders.hub import download


def connor_rob_cfg_path(weights_path: str) -> str:
    """The config file that sits beside a weights file: `x.pt` -> `x_cfg.json`."""
    return weights_path.split(".pt")[0] + "_cfg.json"


def connor_rob_config(old_cfg: dict[str, Any]) -> dict[str, Any]:
    """SAE config from a `*_cfg.json`."""
    return {
        "architecture": "standard",
        "d_in": old_cfg["act_size"],
        "d_sae": old_cfg["dict_size"],
        "dtype": "float32",
        "device": "cpu",
        "model_name": "gpt2-small",
        "hook_name": old_cfg["act_name"],
        "hook_layer": old_cfg["layer"],
        "hook_head_index": None,
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": True,
        "dataset_path": "Skylion007/openwebtext",
        "context_size": 128,
        "normalize_activations": "none",
        "dataset_trust_remote_code": False,
    }


def get_connor_rob_hook_z_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of a Connor & Rob hook_z SAE, from the `*_cfg.json` beside its weights."""
    cfg_path = download(repo_id, connor_rob_cfg_path(folder_name), options.force_download)
    cfg = connor_rob_config(read_json(cfg_path))
    cfg["device"] = options.device if options.device is not None else "cpu"
    return cfg


def convert_connor_rob_weights(loaded: StateDict, source: str) -> StateDict:
    """The weights as they are (already sae_lens naming), checked complete."""
    require_keys(loaded, ["W_enc", "W_dec", "b_enc", "b_dec"], source)
    return {name: loaded[name] for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
