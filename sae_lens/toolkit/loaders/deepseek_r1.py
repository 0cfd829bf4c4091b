"""qresearch's DeepSeek-R1-Distill-Llama-8B SAE: a single `.pt` state dict
(`encoder.weight` [d_sae, d_in], `decoder.weight` [d_in, d_sae], `encoder.bias`,
`decoder.bias`) whose file name carries the layer (`...-SAE-l19.pt`)."""

from __future__ import annotations

import re
from typing import Any

from sae_lens.toolkit.loaders.common import SAEConfigLoadOptions, StateDict, require_keys

_LAYER_PATTERN = re.compile(r"l(\d+)")
_LINEAR_KEYS = ["encoder.weight", "decoder.weight", "encoder.bias", "decoder.bias"]


def deepseek_r1_layer(filename: str) -> int:
    """The layer named in the file name (the last `l<n>` in it)."""
    matches = _LAYER_PATTERN.findall(filename)
    if not matches:
        raise ValueError(f"Could not find layer number in filename: {filename}")
    return int(matches[-1])


def deepseek_r1_config(layer: int, d_in: int = 4096, d_sae: int = 4096 * 16) -> dict[str, Any]:
    """SAE config of the DeepSeek R1 distill SAE at `layer` (Llama 8B width, 16x)."""
    return {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "bfloat16",
        "context_size": 1024,
        "model_name": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "hook_layer": layer,
        "hook_head_index": None,
        "prepend_bos": True,
        "dataset_path": "lmsys/lmsys-chat-1m",
        "dataset_trust_remote_code": False,
        "sae_lens_training_version": None,
        "activation_fn_str": "relu",
        "normalize_activations": "none",
        "apply_b_dec_to_input": False,
        "finetuning_scaling_factor": False,
    }


def get_deepseek_r1_config(
    repo_id: str,  # noqa: ARG001  (the layer is in the file name)
    folder_name: str,
    options: SAEConfigLoadOptions,
) -> dict[str, Any]:
    """Config of the DeepSeek R1 distill SAE whose file is `folder_name`."""
    cfg = deepseek_r1_config(deepseek_r1_layer(folder_name))
    cfg["device"] = options.device if options.device is not None else "cpu"
    return cfg


def convert_deepseek_r1_weights(loaded: StateDict, source: str) -> StateDict:
    """sae_lens weights from the `.pt` state dict (nn.Linear layout transposed)."""
    require_keys(loaded, _LINEAR_KEYS, source)
    return {
        "W_enc": loaded["encoder.weight"].T.contiguous(),  # [d_in, d_sae]
        "W_dec": loaded["decoder.weight"].T.contiguous(),  # [d_sae, d_in]
        "b_enc": loaded["encoder.bias"],
        "b_dec": loaded["decoder.bias"],
    }
