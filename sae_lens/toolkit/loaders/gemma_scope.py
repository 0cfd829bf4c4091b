"""Gemma Scope (google/gemma-scope-*): JumpReLU SAEs stored as `params.npz`
(`W_enc` [d_in, d_sae], `W_dec` [d_sae, d_in], `b_enc`, `b_dec`, `threshold`).

Nothing but the repo and folder names describe an SAE: the repo names the model and the
hook site (`gemma-scope-2b-pt-res`), the folder the layer and width
(`layer_12/width_16k/average_l0_82`).

The transcoders (`gemma-scope-2b-pt-transcoders`) have the same files: a JumpReLU transcoder
from `blocks.<layer>.ln2.hook_normalized` to `blocks.<layer>.hook_mlp_out`; their sizes are
read off the weights.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_lens.errors import SAEWeightsError
from sae_lens.toolkit.loaders.common import (
    SAEConfigLoadOptions,
    StateDict,
    handle_scaling_factor,
    require_keys,
)

GEMMA_SCOPE_PARAMS_FILENAME = "params.npz"

_RELEASE_PATTERN = re.compile(
    r"gemma-scope-(?P<size>2b|9b|27b)-(?P<variant>pt|it)-(?P<site>res|mlp|att)"
)
_TRANSCODER_PATTERN = re.compile(r"gemma-scope-(?P<size>2b|9b|27b)-(?P<variant>pt|it)-transcoders")
_LAYER_PATTERN = re.compile(r"layer_(\d+)")
_WIDTH_PATTERN = re.compile(r"width_(\d+[km])")

# Published widths are powers of two named by their rounded size.
_WIDTHS = {
    "4k": 2**12,
    "16k": 2**14,
    "32k": 2**15,
    "65k": 2**16,
    "131k": 2**17,
    "262k": 2**18,
    "524k": 2**19,
    "1m": 2**20,
}
# d_model of each Gemma 2 size, and n_heads * d_head for the attention (hook_z) SAEs.
_RESID_WIDTH = {"2b": 2304, "9b": 3584, "27b": 4608}
_ATTN_Z_WIDTH = {"2b": 2048, "9b": 4096, "27b": 4608}


def _parse_release(text: str) -> tuple[str, str, str]:
    match = _RELEASE_PATTERN.search(text)
    if match is None:
        raise ValueError(
            f"cannot tell the Gemma 2 model and hook site from {text!r}; expected a name "
            f"like 'gemma-scope-2b-pt-res' (size 2b/9b/27b, pt/it, site res/mlp/att)"
        )
    return match["size"], match["variant"], match["site"]


def is_embedding_folder(folder_name: str) -> bool:
    """True for the folders of SAEs on the token embeddings (`embedding/width_4k/...`)."""
    return "embedding" in folder_name.split("/")


def _parse_layer(folder_name: str, layer_override: int | None) -> int:
    match = _LAYER_PATTERN.search(folder_name)
    if match is not None:
        return int(match[1])
    if layer_override is not None:
        return layer_override
    if is_embedding_folder(folder_name):
        return 0
    raise ValueError(
        f"no 'layer_<n>' in Gemma Scope folder {folder_name!r} and no layer_override given"
    )


def _parse_width(folder_name: str, d_sae_override: int | None) -> int:
    match = _WIDTH_PATTERN.search(folder_name)
    if match is not None and match[1] in _WIDTHS:
        return _WIDTHS[match[1]]
    if d_sae_override:
        return d_sae_override
    raise ValueError(
        f"no known 'width_<size>' in Gemma Scope folder {folder_name!r} (known: "
        f"{list(_WIDTHS)}) and no d_sae_override given"
    )


def gemma_scope_config(
    size: str, variant: str, site: str, layer: int, d_sae: int, embedding: bool
) -> dict[str, Any]:
    """The SAE config of one Gemma Scope SAE."""
    if site == "res":
        hook_name = "hook_embed" if embedding else f"blocks.{layer}.hook_resid_post"
    elif site == "mlp":
        hook_name = f"blocks.{layer}.hook_mlp_out"
    else:
        hook_name = f"blocks.{layer}.attn.hook_z"
    return {
        "architecture": "jumprelu",
        "d_in": _ATTN_Z_WIDTH[size] if site == "att" else _RESID_WIDTH[size],
        "d_sae": d_sae,
        "dtype": "float32",
        "model_name": f"gemma-2-{size}" + ("-it" if variant == "it" else ""),
        "hook_name": hook_name,
        "hook_layer": layer,
        "hook_head_index": None,
        "activation_fn_str": "relu",
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": True,
        "dataset_path": "monology/pile-uncopyrighted",
        "context_size": 1024,
        "dataset_trust_remote_code": False,
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
    }


def get_gemma_2_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the Gemma Scope SAE in `folder_name` of `repo_id` (read off the names)."""
    size, variant, site = _parse_release(repo_id)
    cfg = gemma_scope_config(
        size,
        variant,
        site,
        layer=_parse_layer(folder_name, options.layer_override),
        d_sae=_parse_width(folder_name, options.d_sae_override),
        embedding=is_embedding_folder(folder_name),
    )
    if options.device is not None:
        cfg["device"] = options.device
    return cfg


def gemma_scope_transcoder_config(
    repo_or_path: str, layer: int, d_sae: int, d_model: int | None = None
) -> dict[str, Any]:
    """The config of one Gemma Scope transcoder (`repo_or_path` names the model size)."""
    match = _TRANSCODER_PATTERN.search(repo_or_path)
    if match is None:
        raise ValueError(
            f"cannot tell the Gemma 2 model from {repo_or_path!r}; expected a name like "
            "'gemma-scope-2b-pt-transcoders'"
        )
    size, variant = match["size"], match["variant"]
    width = d_model or _RESID_WIDTH[size]
    cfg = gemma_scope_config(size, variant, "mlp", layer, d_sae, embedding=False)
    cfg.update(
        d_in=width,
        d_out=width,
        hook_name=f"blocks.{layer}.ln2.hook_normalized",
        hook_name_out=f"blocks.{layer}.hook_mlp_out",
        hook_layer_out=layer,
    )
    return cfg


def get_gemma_2_transcoder_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the Gemma Scope transcoder in `folder_name` of `repo_id` (read off the names;
    the loader corrects the sizes from the weights)."""
    layer = _parse_layer(folder_name, options.layer_override)
    cfg = gemma_scope_transcoder_config(
        repo_id, layer, _parse_width(folder_name, options.d_sae_override)
    )
    if options.device is not None:
        cfg["device"] = options.device
    return cfg


def adopt_transcoder_sizes(cfg: dict[str, Any], state_dict: StateDict) -> None:
    """d_in, d_out and d_sae of a Gemma Scope transcoder config from its weights (in place)."""
    cfg["d_in"], cfg["d_sae"] = (int(n) for n in state_dict["W_enc"].shape)
    cfg["d_out"] = int(state_dict["W_dec"].shape[1])


def read_npz_tensors(path: str | Path, device: str = "cpu") -> StateDict:
    """The arrays of a `params.npz` as float32 tensors in sae_lens naming (w_* -> W_*)."""
    state_dict: StateDict = {}
    try:
        with np.load(path) as data:  # allow_pickle stays False
            for key in data.files:
                name = "W_" + key[2:] if key.startswith("w_") else key
                state_dict[name] = torch.from_numpy(data[key]).to(torch.float32).to(device)
    except (OSError, ValueError) as e:
        raise SAEWeightsError(f"could not read Gemma Scope weights {path}: {e}") from e
    require_keys(state_dict, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"], str(path))
    return state_dict


def convert_gemma_scope_weights(
    cfg_dict: dict[str, Any], state_dict: StateDict, embedding: bool
) -> StateDict:
    """Gemma Scope weights as sae_lens weights (in place; also returned).

    Embedding SAEs were trained on embeddings scaled by sqrt(d_model), which
    TransformerLens's hook_embed does not apply, so that factor moves into the weights.
    """
    handle_scaling_factor(cfg_dict, state_dict)
    if embedding:
        scale = math.sqrt(cfg_dict["d_in"])
        state_dict["W_enc"] = state_dict["W_enc"] / scale
        state_dict["W_dec"] = state_dict["W_dec"] * scale
    return state_dict


def read_local_gemma_scope(
    params_path: Path, device: str = "cpu"
) -> tuple[dict[str, Any], StateDict]:
    """(config, weights) of a local `params.npz`; the model, site and layer are read off
    its path, which must keep the repo's names (.../gemma-scope-2b-pt-res/layer_3/...)."""
    location = params_path.resolve().parent.as_posix()
    transcoder = _TRANSCODER_PATTERN.search(location)
    if transcoder is not None:
        state_dict = read_npz_tensors(params_path, device)
        layer = _parse_layer(location[transcoder.end() :], None)
        cfg = gemma_scope_transcoder_config(location, layer, 0)
        adopt_transcoder_sizes(cfg, state_dict)
        cfg["device"] = device
        return cfg, state_dict
    size, variant, site = _parse_release(location)
    after_release = location[_RELEASE_PATTERN.search(location).end() :]  # type: ignore[union-attr]
    state_dict = read_npz_tensors(params_path, device)
    embedding = is_embedding_folder(after_release)
    cfg = gemma_scope_config(
        size,
        variant,
        site,
        layer=_parse_layer(after_release, None),
        d_sae=int(state_dict["W_enc"].shape[1]),
        embedding=embedding,
    )
    cfg["device"] = device
    return cfg, convert_gemma_scope_weights(cfg, state_dict, embedding)
