"""saprmarks/dictionary_learning: `config.json` (keys `trainer`, optionally `buffer`) and
`ae.pt` (the dictionary's state dict), one folder per trained SAE.

Each `dict_class` maps to an sae_lens architecture with the same outputs:

| dict_class             | architecture | notes                                            |
|------------------------|--------------|--------------------------------------------------|
| AutoEncoder            | standard     | b_dec = `bias`, subtracted from the input        |
| AutoEncoderNew         | standard     | b_dec = `decoder.bias`, not subtracted           |
| GatedAutoEncoder       | gated        | b_dec = `decoder_bias`                           |
| AutoEncoderTopK        | standard     | activation `topk` with the trainer's k           |
| BatchTopKSAE           | jumprelu     | inference uses the learnt scalar threshold       |
| MatryoshkaBatchTopKSAE | jumprelu     | same                                             |
| JumpReluAutoEncoder    | jumprelu     | b_dec not subtracted                             |
"""

from __future__ import annotations

from typing import Any

import torch

from sae_lens.toolkit.loaders.common import (
    SAEConfigLoadOptions,
    StateDict,
    read_json,
    require_keys,
)
from sae_lens.toolkit.loaders.hub import download, repo_path

DICTIONARY_LEARNING_CONFIG_FILENAME = "config.json"
DICTIONARY_LEARNING_WEIGHTS_FILENAME = "ae.pt"
DEFAULT_CONTEXT_SIZE = 128  # dictionary_learning's ActivationBuffer default

_ARCHITECTURES = {
    "AutoEncoder": "standard",
    "AutoEncoderNew": "standard",
    "GatedAutoEncoder": "gated",
    "AutoEncoderTopK": "standard",
    "BatchTopKSAE": "jumprelu",
    "MatryoshkaBatchTopKSAE": "jumprelu",
    "JumpReluAutoEncoder": "jumprelu",
}
_NO_INPUT_CENTERING = {"AutoEncoderNew", "JumpReluAutoEncoder"}


def _dict_class(trainer: dict[str, Any]) -> str:
    dict_class = trainer.get("dict_class")
    if dict_class not in _ARCHITECTURES:
        raise ValueError(
            f"unsupported dictionary_learning dict_class {dict_class!r}; supported: "
            f"{sorted(_ARCHITECTURES)}"
        )
    return dict_class


def get_dictionary_learning_config_from_json(config: dict[str, Any]) -> dict[str, Any]:
    """SAE config from a dictionary_learning `config.json`."""
    if "trainer" not in config:
        raise ValueError("dictionary_learning config.json has no 'trainer' section")
    trainer = config["trainer"]
    dict_class = _dict_class(trainer)
    is_topk = dict_class == "AutoEncoderTopK"
    layer = trainer["layer"]
    return {
        "architecture": _ARCHITECTURES[dict_class],
        "d_in": trainer["activation_dim"],
        "d_sae": trainer["dict_size"],
        "dtype": "float32",
        "device": "cpu",
        "model_name": trainer["lm_name"].split("/")[-1],
        "hook_name": f"blocks.{layer}.hook_resid_post",
        "hook_layer": layer,
        "hook_head_index": None,
        "activation_fn_str": "topk" if is_topk else "relu",
        "activation_fn_kwargs": {"k": trainer["k"]} if is_topk else {},
        "apply_b_dec_to_input": dict_class not in _NO_INPUT_CENTERING,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": True,
        "dataset_path": "monology/pile-uncopyrighted",
        "context_size": (config.get("buffer") or {}).get("ctx_len", DEFAULT_CONTEXT_SIZE),
        "normalize_activations": "none",
        "neuronpedia_id": None,
        "dataset_trust_remote_code": False,
    }


def read_dictionary_learning_json(
    repo_id: str, folder_name: str, force_download: bool = False
) -> dict[str, Any]:
    """The raw `config.json` of a dictionary_learning SAE in a hub repo."""
    path = download(
        repo_id, repo_path(folder_name, DICTIONARY_LEARNING_CONFIG_FILENAME), force_download
    )
    return read_json(path)


def get_dictionary_learning_config_1(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of the dictionary_learning SAE in `folder_name` of `repo_id`."""
    raw = read_dictionary_learning_json(repo_id, folder_name, options.force_download)
    return get_dictionary_learning_config_from_json(raw)


def _linear(ae: StateDict) -> StateDict:
    return {
        "W_enc": ae["encoder.weight"].T.contiguous(),  # [d_in, d_sae]
        "W_dec": ae["decoder.weight"].T.contiguous(),  # [d_sae, d_in]
    }


def _threshold(ae: StateDict, d_sae: int) -> torch.Tensor:
    return ae["threshold"].float().expand(d_sae).clone()  # scalar -> [d_sae]


def convert_dictionary_learning_weights(
    config: dict[str, Any], ae: StateDict, source: str
) -> StateDict:
    """sae_lens weights from an `ae.pt` state dict of the config's dict_class."""
    trainer = config["trainer"]
    dict_class = _dict_class(trainer)
    d_sae = trainer["dict_size"]
    if dict_class == "AutoEncoder":
        require_keys(ae, ["encoder.weight", "encoder.bias", "decoder.weight", "bias"], source)
        return {**_linear(ae), "b_enc": ae["encoder.bias"], "b_dec": ae["bias"]}
    if dict_class == "AutoEncoderNew":
        require_keys(
            ae, ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"], source
        )
        return {**_linear(ae), "b_enc": ae["encoder.bias"], "b_dec": ae["decoder.bias"]}
    if dict_class == "GatedAutoEncoder":
        keys = [
            "encoder.weight",
            "decoder.weight",
            "decoder_bias",
            "r_mag",
            "gate_bias",
            "mag_bias",
        ]
        require_keys(ae, keys, source)
        return {
            **_linear(ae),
            "b_dec": ae["decoder_bias"],
            "b_gate": ae["gate_bias"],
            "b_mag": ae["mag_bias"],
            "r_mag": ae["r_mag"],
        }
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        require_keys(ae, ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec"], source)
        state_dict = {**_linear(ae), "b_enc": ae["encoder.bias"], "b_dec": ae["b_dec"]}
        if dict_class == "BatchTopKSAE":
            require_keys(ae, ["threshold"], source)
            state_dict["threshold"] = _threshold(ae, d_sae)
        return state_dict
    # MatryoshkaBatchTopKSAE and JumpReluAutoEncoder store sae_lens-style tensors.
    require_keys(ae, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], source)
    state_dict = {name: ae[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    threshold = ae["threshold"]
    state_dict["threshold"] = _threshold(ae, d_sae) if threshold.dim() == 0 else threshold
    return state_dict
