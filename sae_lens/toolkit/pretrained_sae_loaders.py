"""Loading published SAEs: the registry says where an SAE lives and which format it is
in; one loader per format turns its files into an sae_lens config and state dict.

Every loader returns `(cfg_dict, state_dict, log_sparsity | None)` and reads files with
`huggingface_hub`, which uses the local cache and honours `HF_HUB_OFFLINE=1`.
`load_pretrained_sae_files` is the entry point `SAE.from_pretrained` uses; it also takes
a local path or an unregistered repo id in place of a release.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Protocol

import torch

from sae_lens.toolkit.loaders.common import (
    SAEConfigLoadOptions,
    fold_norm_scaling_factor,
    handle_config_defaulting,
    load_pickled_state_dict,
    read_json,
    read_sae_from_disk,
    read_safetensors,
)
from sae_lens.toolkit.loaders.connor_rob import (
    connor_rob_cfg_path,
    connor_rob_config,
    convert_connor_rob_weights,
)
from sae_lens.toolkit.loaders.deepseek_r1 import (
    convert_deepseek_r1_weights,
    deepseek_r1_config,
    deepseek_r1_layer,
)
from sae_lens.toolkit.loaders.dictionary_learning import (
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    convert_dictionary_learning_weights,
    get_dictionary_learning_config_1,
    read_dictionary_learning_json,
)
from sae_lens.toolkit.loaders.gemma_scope import (
    GEMMA_SCOPE_PARAMS_FILENAME,
    convert_gemma_scope_weights,
    get_gemma_2_config,
    read_npz_tensors,
)
from sae_lens.toolkit.loaders.hub import download, download_folder, download_optional, repo_path
from sae_lens.toolkit.loaders.llama_scope import (
    LLAMA_SCOPE_R1_WEIGHTS_FILENAME,
    LLAMA_SCOPE_WEIGHTS_PATH,
    convert_llama_scope_r1_weights,
    convert_llama_scope_weights,
    get_llama_scope_config,
    get_llama_scope_r1_distill_config,
)
from sae_lens.toolkit.loaders.local_folder import (
    detect_sae_format,
    finalise_loaded_sae,
    read_local_sae_folder,
)
from sae_lens.toolkit.loaders.sae_lens_format import (
    SAE_WEIGHTS_FILENAME,
    SPARSITY_FILENAME,
    get_sae_config_from_hf,
    read_sparsity,
)
from sae_lens.toolkit.loaders.sparsify import (
    SPARSIFY_WEIGHTS_FILENAME,
    convert_sparsify_weights,
    get_sparsify_config,
)
from sae_lens.toolkit.pretrained_saes_directory import (
    PretrainedSAELookup,
    get_norm_scaling_factor,
    get_pretrained_saes_directory,
    get_repo_id_and_folder_name,
    looks_like_repo_id,
    unknown_release_message,
    unknown_sae_id_message,
)

__all__ = [
    "NAMED_PRETRAINED_SAE_CONFIG_GETTERS",
    "NAMED_PRETRAINED_SAE_LOADERS",
    "PretrainedSaeLoader",
    "SAEConfigLoadOptions",
    "connor_rob_hook_z_loader",
    "deepseek_r1_sae_loader",
    "detect_sae_format",
    "dictionary_learning_sae_loader_1",
    "gemma_2_sae_loader",
    "get_connor_rob_hook_z_config",
    "get_conversion_loader_name",
    "get_deepseek_r1_config",
    "get_dictionary_learning_config_1",
    "get_gemma_2_config",
    "get_llama_scope_config",
    "get_llama_scope_r1_distill_config",
    "get_sae_config",
    "get_sae_config_from_hf",
    "get_sparsify_config",
    "handle_config_defaulting",
    "llama_scope_r1_distill_sae_loader",
    "llama_scope_sae_loader",
    "load_pretrained_sae_files",
    "read_local_sae_folder",
    "read_sae_from_disk",
    "sae_lens_loader",
    "sparsify_sae_loader",
]

LoadedSAE = tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]


class PretrainedSaeLoader(Protocol):
    """A format's loader: release and SAE id in, (config, weights, log sparsity) out."""

    def __call__(
        self,
        release: str,
        sae_id: str,
        device: str | torch.device | None = None,
        force_download: bool = False,
        cfg_overrides: dict[str, Any] | None = None,
    ) -> LoadedSAE: ...


# --- config getters that only need the registry's names ------------------------------


def get_connor_rob_hook_z_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """Config of a Connor & Rob hook_z SAE, from the `*_cfg.json` beside its weights."""
    cfg_path = download(repo_id, connor_rob_cfg_path(folder_name), options.force_download)
    cfg = connor_rob_config(read_json(cfg_path))
    cfg["device"] = options.device if options.device is not None else "cpu"
    return cfg


def get_deepseek_r1_config(
    repo_id: str,  # noqa: ARG001  (the layer is in the file name)
    folder_name: str,
    options: SAEConfigLoadOptions,
) -> dict[str, Any]:
    """Config of the DeepSeek R1 distill SAE whose file is `folder_name`."""
    cfg = deepseek_r1_config(deepseek_r1_layer(folder_name))
    cfg["device"] = options.device if options.device is not None else "cpu"
    return cfg


# --- registry -> config --------------------------------------------------------------


def get_conversion_loader_name(sae_info: PretrainedSAELookup | None) -> str:
    """The loader name of a release (`sae_lens` when it names none)."""
    name = "sae_lens"
    if sae_info is not None and sae_info.conversion_func is not None:
        name = sae_info.conversion_func
    if name not in NAMED_PRETRAINED_SAE_LOADERS:
        raise ValueError(
            f"Conversion func {name!r} not found in NAMED_PRETRAINED_SAE_LOADERS "
            f"(known: {sorted(NAMED_PRETRAINED_SAE_LOADERS)})."
        )
    return name


def get_sae_config(release: str, sae_id: str, options: SAEConfigLoadOptions) -> dict[str, Any]:
    """The SAE's config: its format's config, then the release's `config_overrides` and
    Neuronpedia id, then `options.cfg_overrides`, then defaults for missing fields."""
    sae_info = get_pretrained_saes_directory().get(release)
    repo_id, folder_name = get_repo_id_and_folder_name(release, sae_id)
    overrides: dict[str, Any] = {}
    if sae_info is not None:
        overrides.update(sae_info.config_overrides or {})
        overrides["neuronpedia_id"] = sae_info.neuronpedia_id.get(sae_id)
    overrides.update(options.cfg_overrides or {})
    getter = NAMED_PRETRAINED_SAE_CONFIG_GETTERS[get_conversion_loader_name(sae_info)]
    return handle_config_defaulting({**getter(repo_id, folder_name, options), **overrides})


def _config_and_location(
    release: str, sae_id: str, options: SAEConfigLoadOptions
) -> tuple[dict[str, Any], str, str]:
    cfg = get_sae_config(release, sae_id, options)
    repo_id, folder_name = get_repo_id_and_folder_name(release, sae_id)
    return cfg, repo_id, folder_name


def _apply_overrides(cfg: dict[str, Any], device: str, overrides: dict[str, Any] | None) -> None:
    cfg["device"] = device
    cfg.update(overrides or {})


# --- one loader per format -------------------------------------------------------------


def sae_lens_loader(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> LoadedSAE:
    """An SAE in the native sae_lens folder format."""
    options = SAEConfigLoadOptions(
        device=device, force_download=force_download, cfg_overrides=cfg_overrides
    )
    cfg, repo_id, folder = _config_and_location(release, sae_id, options)
    weights_path = download(repo_id, repo_path(folder, SAE_WEIGHTS_FILENAME), force_download)
    sparsity_path = download_optional(repo_id, repo_path(folder, SPARSITY_FILENAME), force_download)
    cfg, state_dict = read_sae_from_disk(cfg, weights_path, device)
    log_sparsity = read_sparsity(sparsity_path, device) if sparsity_path else None
    return cfg, state_dict, log_sparsity


def connor_rob_hook_z_loader(
    release: str,
    sae_id: str,
    device: str | None = None,
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], None]:
    """A Connor & Rob GPT-2 hook_z SAE (`<name>.pt` + `<name>_cfg.json`)."""
    options = SAEConfigLoadOptions(
        device=device, force_download=force_download, cfg_overrides=cfg_overrides
    )
    cfg, repo_id, filename = _config_and_location(release, sae_id, options)
    path = download(repo_id, filename, force_download)
    return cfg, convert_connor_rob_weights(load_pickled_state_dict(path, device), path), None


def gemma_2_sae_loader(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
    d_sae_override: int | None = None,
    layer_override: int | None = None,
) -> LoadedSAE:
    """A Gemma Scope JumpReLU SAE (`params.npz`)."""
    options = SAEConfigLoadOptions(
        device=device,
        force_download=force_download,
        d_sae_override=d_sae_override,
        layer_override=layer_override,
    )
    cfg, repo_id, folder = _config_and_location(release, sae_id, options)
    _apply_overrides(cfg, device, cfg_overrides)
    path = download(repo_id, repo_path(folder, GEMMA_SCOPE_PARAMS_FILENAME), force_download)
    embedding = "embedding" in folder.split("/")
    state_dict = convert_gemma_scope_weights(cfg, read_npz_tensors(path, device), embedding)
    return cfg, state_dict, None


def llama_scope_sae_loader(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
    d_sae_override: int | None = None,
    layer_override: int | None = None,
) -> LoadedSAE:
    """A Llama Scope JumpReLU SAE (`hyperparams.json` + `checkpoints/final.safetensors`)."""
    options = SAEConfigLoadOptions(
        device=device,
        force_download=force_download,
        d_sae_override=d_sae_override,
        layer_override=layer_override,
    )
    cfg, repo_id, folder = _config_and_location(release, sae_id, options)
    _apply_overrides(cfg, device, cfg_overrides)
    path = download(repo_id, repo_path(folder, LLAMA_SCOPE_WEIGHTS_PATH), force_download)
    return cfg, convert_llama_scope_weights(cfg, read_safetensors(path, device), path), None


def llama_scope_r1_distill_sae_loader(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
    d_sae_override: int | None = None,
    layer_override: int | None = None,
) -> LoadedSAE:
    """A Llama Scope R1 Distill JumpReLU SAE (`config.json` + `sae_weights.safetensors`)."""
    options = SAEConfigLoadOptions(
        device=device,
        force_download=force_download,
        d_sae_override=d_sae_override,
        layer_override=layer_override,
    )
    cfg, repo_id, folder = _config_and_location(release, sae_id, options)
    _apply_overrides(cfg, device, cfg_overrides)
    path = download(repo_id, repo_path(folder, LLAMA_SCOPE_R1_WEIGHTS_FILENAME), force_download)
    return cfg, convert_llama_scope_r1_weights(cfg, read_safetensors(path, device), path), None


def dictionary_learning_sae_loader_1(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> LoadedSAE:
    """A saprmarks/dictionary_learning SAE (`config.json` + `ae.pt`)."""
    options = SAEConfigLoadOptions(device=device, force_download=force_download)
    cfg, repo_id, folder = _config_and_location(release, sae_id, options)
    _apply_overrides(cfg, device, cfg_overrides)
    raw = read_dictionary_learning_json(repo_id, folder, force_download)
    path = download(
        repo_id, repo_path(folder, DICTIONARY_LEARNING_WEIGHTS_FILENAME), force_download
    )
    ae = load_pickled_state_dict(path, device)
    return cfg, convert_dictionary_learning_weights(raw, ae, path), None


def deepseek_r1_sae_loader(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> LoadedSAE:
    """qresearch's DeepSeek R1 distill SAE (one `.pt` file); d_in / d_sae from its shapes."""
    options = SAEConfigLoadOptions(device=device, force_download=force_download)
    cfg, repo_id, filename = _config_and_location(release, sae_id, options)
    path = download(repo_id, filename, force_download)
    state_dict = convert_deepseek_r1_weights(load_pickled_state_dict(path, device), path)
    cfg["d_in"], cfg["d_sae"] = state_dict["W_enc"].shape
    cfg.update(cfg_overrides or {})
    return cfg, state_dict, None


def sparsify_sae_loader(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> LoadedSAE:
    """An EleutherAI sparsify SAE (`cfg.json` + `sae.safetensors`), as a TopK SAE."""
    options = SAEConfigLoadOptions(
        device=device, force_download=force_download, cfg_overrides=cfg_overrides
    )
    cfg, repo_id, folder = _config_and_location(release, sae_id, options)
    path = download(repo_id, repo_path(folder, SPARSIFY_WEIGHTS_FILENAME), force_download)
    return cfg, convert_sparsify_weights(read_safetensors(path, device), path), None


NAMED_PRETRAINED_SAE_LOADERS: dict[str, PretrainedSaeLoader] = {
    "sae_lens": sae_lens_loader,  # type: ignore[dict-item]
    "connor_rob_hook_z": connor_rob_hook_z_loader,  # type: ignore[dict-item]
    "gemma_2": gemma_2_sae_loader,  # type: ignore[dict-item]
    "llama_scope": llama_scope_sae_loader,  # type: ignore[dict-item]
    "llama_scope_r1_distill": llama_scope_r1_distill_sae_loader,  # type: ignore[dict-item]
    "dictionary_learning_1": dictionary_learning_sae_loader_1,  # type: ignore[dict-item]
    "deepseek_r1": deepseek_r1_sae_loader,  # type: ignore[dict-item]
    "sparsify": sparsify_sae_loader,  # type: ignore[dict-item]
}

NAMED_PRETRAINED_SAE_CONFIG_GETTERS = {
    "sae_lens": get_sae_config_from_hf,
    "connor_rob_hook_z": get_connor_rob_hook_z_config,
    "gemma_2": get_gemma_2_config,
    "llama_scope": get_llama_scope_config,
    "llama_scope_r1_distill": get_llama_scope_r1_distill_config,
    "dictionary_learning_1": get_dictionary_learning_config_1,
    "deepseek_r1": get_deepseek_r1_config,
    "sparsify": get_sparsify_config,
}


# --- the entry point ---------------------------------------------------------------------


def _local_sae_path(release: str, sae_id: str) -> Path | None:
    """The local file or folder meant by (release, sae_id), if `release` is a local path."""
    root = Path(release).expanduser()
    if not root.exists():
        return None
    if sae_id in ("", "."):
        return root
    target = root / sae_id
    if not target.exists():
        entries = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else []
        raise FileNotFoundError(
            f"SAE id {sae_id!r} is not a file or folder in local path {root} (it has {entries})"
        )
    return target


def _fold_registry_norm_scaling_factor(
    release: str, sae_id: str, cfg: dict[str, Any], state_dict: dict[str, torch.Tensor]
) -> None:
    if cfg.get("normalize_activations") != "expected_average_only_in":
        return
    factor = get_norm_scaling_factor(release, sae_id)
    if factor is None:
        warnings.warn(
            f"norm_scaling_factor not found for {release} and {sae_id}, but "
            f"normalize_activations is 'expected_average_only_in'. Skipping normalization folding.",
            stacklevel=3,
        )
        return
    fold_norm_scaling_factor(cfg, state_dict, factor)


def load_pretrained_sae_files(
    release: str, sae_id: str, device: str = "cpu", force_download: bool = False
) -> LoadedSAE:
    """(config dict, state dict, log sparsity or None) of a published SAE.

    `release` is a registry release, a local path (then `sae_id` is the folder or file
    under it, or "" for the path itself), or a Hugging Face repo id that is not in the
    registry (then `sae_id` is the folder inside it, in any supported format). Registry
    SAEs trained on rescaled inputs get their norm scaling factor folded into the weights.
    """
    directory = get_pretrained_saes_directory()
    sae_info = directory.get(release)
    if sae_info is None:
        local = _local_sae_path(release, sae_id)
        if local is not None:
            return read_local_sae_folder(local, device)
        if not looks_like_repo_id(release):
            raise ValueError(unknown_release_message(release))
        folder = Path(download_folder(release, sae_id, force_download))
        if not folder.exists():
            raise FileNotFoundError(f"{sae_id!r} not found in Hugging Face repo {release!r}")
        return read_local_sae_folder(folder, device)
    if sae_id not in sae_info.saes_map:
        raise ValueError(unknown_sae_id_message(release, sae_id))
    loader = NAMED_PRETRAINED_SAE_LOADERS[get_conversion_loader_name(sae_info)]
    cfg, state_dict, log_sparsity = loader(
        release,
        sae_id=sae_id,
        device=device,
        force_download=force_download,
        cfg_overrides=sae_info.config_overrides,
    )
    _fold_registry_norm_scaling_factor(release, sae_id, cfg, state_dict)
    source = f"{release}/{sae_id}"
    return finalise_loaded_sae(cfg, state_dict, log_sparsity, device, None, source)
