"""EleutherAI sparsify: one folder per hookpoint with `cfg.json` (SparseCoderConfig plus
`d_in`) and `sae.safetensors` (`encoder.weight` [d_sae, d_in], `encoder.bias` [d_sae],
`W_dec` [d_sae, d_in], `b_dec` [d_in]); the run folder above may hold the training
`config.json` (model, dataset, ctx_len).

sparsify encodes `topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias), k)` and
decodes `acts @ W_dec + b_dec`: an sae_lens TopK SAE with `apply_b_dec_to_input`. (ReLU
then TopK equals TopK then ReLU: both keep the same positive values.) Transcoders, skip
connections and the groupmax activation have no sae_lens equivalent and are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from safetensors import safe_open

from sae_lens.toolkit.loaders.common import (
    SAEConfigLoadOptions,
    StateDict,
    read_json,
    require_keys,
)
from sae_lens.toolkit.loaders.hub import download, download_optional, repo_path

SPARSIFY_CFG_FILENAME = "cfg.json"
SPARSIFY_WEIGHTS_FILENAME = "sae.safetensors"
SPARSIFY_RUN_CONFIG_FILENAME = "config.json"

_LAYER_HOOKPOINT = re.compile(
    r"^(?:.*\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?$"
)
_EMBEDDING_HOOKPOINTS = ("embed_tokens", "wte", "embed_in")
_SITE_HOOKS = {
    None: "hook_resid_post",
    "mlp": "hook_mlp_out",
    "self_attn": "hook_attn_out",
    "attn": "hook_attn_out",
    "attention": "hook_attn_out",
}


def is_sparsify_cfg(cfg: dict[str, Any]) -> bool:
    """True for a sparsify `cfg.json` (as opposed to an sae_lens one)."""
    return "d_sae" not in cfg and "d_in" in cfg and "k" in cfg


def is_sparsify_run_config(config: dict[str, Any]) -> bool:
    """True for a sparsify training `config.json` (it nests the coder config under 'sae')."""
    return isinstance(config.get("sae"), dict)


def hookpoint_to_hook(hookpoint: str) -> tuple[str, int]:
    """TransformerLens hook name and layer for a sparsify (Hugging Face module) hookpoint.

    `layers.6` / `h.6` -> blocks.6.hook_resid_post, `layers.6.mlp` -> blocks.6.hook_mlp_out,
    `layers.6.self_attn` -> blocks.6.hook_attn_out, `embed_tokens` -> hook_embed. Other
    names are kept as they are, with the first number in them as the layer.
    """
    match = _LAYER_HOOKPOINT.match(hookpoint)
    if match is not None:
        layer = int(match[1])
        return f"blocks.{layer}.{_SITE_HOOKS[match[2]]}", layer
    if hookpoint.split(".")[-1] in _EMBEDDING_HOOKPOINTS:
        return "hook_embed", 0
    number = re.search(r"\d+", hookpoint)
    return hookpoint, int(number[0]) if number else 0


def _refuse_unsupported(cfg: dict[str, Any]) -> None:
    if cfg.get("transcode"):
        raise ValueError("sparsify transcoders (transcode=true) are not supported; only SAEs are")
    if cfg.get("skip_connection"):
        raise ValueError("sparsify SAEs with skip_connection=true are not supported")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise ValueError(f"sparsify activation {activation!r} is not supported; only 'topk' is")


def sparsify_config(
    cfg: dict[str, Any],
    hookpoint: str,
    dtype: str,
    run_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SAE config from a sparsify `cfg.json`, the hookpoint (its folder name), the weights'
    dtype name and, when there is one, the run's training `config.json`."""
    _refuse_unsupported(cfg)
    d_in = cfg["d_in"]
    hook_name, hook_layer = hookpoint_to_hook(hookpoint)
    run = run_config if run_config is not None and is_sparsify_run_config(run_config) else {}
    return {
        "architecture": "topk",
        "d_in": d_in,
        "d_sae": cfg.get("num_latents") or d_in * cfg.get("expansion_factor", 32),
        "dtype": dtype,
        "model_name": run.get("model", ""),
        "hook_name": hook_name,
        "hook_layer": hook_layer,
        "hook_head_index": None,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": cfg["k"]},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": True,
        "dataset_path": run.get("dataset", ""),
        "context_size": run.get("ctx_len", 2048),
        "dataset_trust_remote_code": False,
        "normalize_activations": "none",
    }


def convert_sparsify_weights(loaded: StateDict, source: str) -> StateDict:
    """sae_lens weights from a sparsify `sae.safetensors`."""
    require_keys(loaded, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], source)
    return {
        "W_enc": loaded["encoder.weight"].T.contiguous(),  # [d_in, d_sae]
        "b_enc": loaded["encoder.bias"],
        "W_dec": loaded["W_dec"],  # [d_sae, d_in]
        "b_dec": loaded["b_dec"],
    }


_SAFETENSORS_DTYPES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16"}


def safetensors_dtype_name(path: str | Path) -> str:
    """dtype name (as in SAE configs) of the first tensor of a safetensors file, read from
    the file's header without loading any tensor."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        first = next(iter(f.keys()), None)
        if first is None:
            raise ValueError(f"{path} holds no tensors")
        code = f.get_slice(first).get_dtype()
    if code not in _SAFETENSORS_DTYPES:
        raise ValueError(
            f"{path}: unsupported tensor dtype {code}; expected one of {list(_SAFETENSORS_DTYPES)}"
        )
    return _SAFETENSORS_DTYPES[code]


def _parent_folder(folder_name: str) -> str:
    folder_name = folder_name.strip("/")
    return folder_name.rsplit("/", 1)[0] if "/" in folder_name else ""


def get_sparsify_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the sparsify SAE in `folder_name` (its hookpoint) of `repo_id`."""
    cfg = read_json(
        download(repo_id, repo_path(folder_name, SPARSIFY_CFG_FILENAME), options.force_download)
    )
    weights = download(
        repo_id, repo_path(folder_name, SPARSIFY_WEIGHTS_FILENAME), options.force_download
    )
    run_path = download_optional(
        repo_id,
        repo_path(_parent_folder(folder_name), SPARSIFY_RUN_CONFIG_FILENAME),
        options.force_download,
    )
    run_config = read_json(run_path) if run_path is not None else None
    hookpoint = folder_name.strip("/").rsplit("/", 1)[-1]
    sae_cfg = sparsify_config(cfg, hookpoint, safetensors_dtype_name(weights), run_config)
    if options.device is not None:
        sae_cfg["device"] = options.device
    return sae_cfg
