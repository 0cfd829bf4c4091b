"""Loading published SAEs: the registry says where an SAE lives and which format it is
in; one loader per format turns its files into an sae_lens config and state dict.

Every loader returns `(cfg_dict, state_dict, log_sparsity | None)` and reads files with
`huggingface_hub`, which uses the local cache and honours `HF_HUB_OFFLINE=1`.
`load_pretrained_sae_files` is the entry point `SAE.from_pretrained` uses; it also takes
a local path or an unregistered repo id in place of a release.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from sae_lens import logger as logger  # 5.6.0 re-export
from sae_lens.dtypes import DTYPE_MAP as DTYPE_MAP  # 5.6.0 re-export
from sae_lens.errors import UnknownPretrainedSAEError, check_device, did_you_mean
from sae_lens.saes.sae_folder import check_finite_weights
from sae_lens.toolkit.loaders.circuit_tracer import CONFIG_FILENAME as CIRCUIT_TRACER_CONFIG
from sae_lens.toolkit.loaders.circuit_tracer import read_circuit_tracer
from sae_lens.toolkit.loaders.common import (
    LoadedSAE,
    SAEConfigLoadOptions,
    fold_norm_scaling_factor,
    handle_config_defaulting,
    load_pickled_state_dict,
    read_sae_from_disk,
    read_safetensors,
)
from sae_lens.toolkit.loaders.connor_rob import (
    convert_connor_rob_weights,
    get_connor_rob_hook_z_config,
)
from sae_lens.toolkit.loaders.deepseek_r1 import (
    convert_deepseek_r1_weights,
    get_deepseek_r1_config,
)
from sae_lens.toolkit.loaders.dictionary_learning import (
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    convert_dictionary_learning_weights,
    get_dictionary_learning_config_1,
    read_dictionary_learning_json,
)
from sae_lens.toolkit.loaders.gemma_scope import (
    GEMMA_SCOPE_PARAMS_FILENAME,
    adopt_transcoder_sizes,
    convert_gemma_scope_weights,
    get_gemma_2_config,
    get_gemma_2_transcoder_config,
    is_embedding_folder,
    read_npz_tensors,
)
from sae_lens.toolkit.loaders.hub import download, download_folder, download_optional, repo_path
from sae_lens.toolkit.loaders.llama_scope import (
    LLAMA_SCOPE,
    LLAMA_SCOPE_R1,
    OpenMossLayout,
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
    "circuit_tracer_loader",
    "gemma_2_sae_loader",
    "gemma_2_transcoder_loader",
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
    if sae_info is None and not looks_like_repo_id(release):
        raise UnknownPretrainedSAEError(unknown_release_message(release))
    repo_id, folder_name = get_repo_id_and_folder_name(release, sae_id)
    overrides: dict[str, Any] = {}
    if sae_info is not None:
        overrides.update(sae_info.config_overrides or {})
        overrides["neuronpedia_id"] = sae_info.neuronpedia_id.get(sae_id)
    overrides.update(options.cfg_overrides or {})
    getter = NAMED_PRETRAINED_SAE_CONFIG_GETTERS[get_conversion_loader_name(sae_info)]
    return handle_config_defaulting({**getter(repo_id, folder_name, options), **overrides})


# --- one loader per format: a table of what sets each apart, driving one function -----

_Weights = tuple[dict[str, torch.Tensor], torch.Tensor | None]  # state dict, log sparsity


class _OverridesAt(Enum):
    """When a loader applies its caller's `cfg_overrides` (each format keeps its own)."""

    CONFIG = auto()  # with the release's overrides, before missing fields get defaults
    BEFORE_WEIGHTS = auto()  # over the defaulted config, with `device`, before the weights
    AFTER_WEIGHTS = auto()  # last, over the config the weights completed


@dataclass(frozen=True)
class _RegistrySAE:
    """A registry SAE's config and its folder (for single-file formats, its file) in a hub
    repo."""

    cfg: dict[str, Any]
    repo_id: str
    folder: str
    force_download: bool

    def download(self, filename: str | None = None) -> str:
        """Local path of `filename` in the SAE's folder (of the SAE's own file when None)."""
        path = self.folder if filename is None else repo_path(self.folder, filename)
        return download(self.repo_id, path, self.force_download)


@dataclass(frozen=True)
class _RegistryFormat:
    """What sets a format's loader apart: how it reads the weights (it may complete the
    config from them) and when it applies `cfg_overrides`."""

    read_weights: Callable[[_RegistrySAE, str], _Weights]
    overrides_at: _OverridesAt


def _load_registry_sae(
    fmt: _RegistryFormat,
    release: str,
    sae_id: str,
    device: str,
    force_download: bool,
    cfg_overrides: dict[str, Any] | None,
    d_sae_override: int | None = None,
    layer_override: int | None = None,
) -> LoadedSAE:
    """(config, weights, log sparsity or None) of a registry SAE in format `fmt`."""
    options = SAEConfigLoadOptions(
        device=device,
        force_download=force_download,
        d_sae_override=d_sae_override,
        layer_override=layer_override,
    )
    if fmt.overrides_at is _OverridesAt.CONFIG:
        options.cfg_overrides = cfg_overrides
    repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
    sae = _RegistrySAE(get_sae_config(release, sae_id, options), repo_id, folder, force_download)
    if fmt.overrides_at is _OverridesAt.BEFORE_WEIGHTS:
        sae.cfg["device"] = device
        sae.cfg.update(cfg_overrides or {})
    state_dict, log_sparsity = fmt.read_weights(sae, device)
    check_finite_weights(state_dict, f"{release}/{sae_id}")
    if fmt.overrides_at is _OverridesAt.AFTER_WEIGHTS:
        sae.cfg.update(cfg_overrides or {})
    return sae.cfg, state_dict, log_sparsity


# Weights readers, one per format: (registry SAE, device) -> (state dict, log sparsity).


def _read_sae_lens(sae: _RegistrySAE, device: str) -> _Weights:
    weights_path = sae.download(SAE_WEIGHTS_FILENAME)
    sparsity_path = download_optional(
        sae.repo_id, repo_path(sae.folder, SPARSITY_FILENAME), sae.force_download
    )
    _, state_dict = read_sae_from_disk(sae.cfg, weights_path, device)
    return state_dict, read_sparsity(sparsity_path, device) if sparsity_path else None


def _read_connor_rob(sae: _RegistrySAE, device: str) -> _Weights:
    path = sae.download()
    return convert_connor_rob_weights(load_pickled_state_dict(path, device), path), None


def _read_gemma_scope(sae: _RegistrySAE, device: str) -> _Weights:
    tensors = read_npz_tensors(sae.download(GEMMA_SCOPE_PARAMS_FILENAME), device)
    embedding = is_embedding_folder(sae.folder)
    return convert_gemma_scope_weights(sae.cfg, tensors, embedding), None


def _read_gemma_transcoder(sae: _RegistrySAE, device: str) -> _Weights:
    tensors = read_npz_tensors(sae.download(GEMMA_SCOPE_PARAMS_FILENAME), device)
    adopt_transcoder_sizes(sae.cfg, tensors)
    return tensors, None


def _read_openmoss(layout: OpenMossLayout, sae: _RegistrySAE, device: str) -> _Weights:
    return layout.read_weights(sae.cfg, sae.download(layout.weights_path), device), None


def _read_dictionary_learning(sae: _RegistrySAE, device: str) -> _Weights:
    raw = read_dictionary_learning_json(sae.repo_id, sae.folder, sae.force_download)
    path = sae.download(DICTIONARY_LEARNING_WEIGHTS_FILENAME)
    ae = load_pickled_state_dict(path, device)
    return convert_dictionary_learning_weights(raw, ae, path), None


def _read_deepseek_r1(sae: _RegistrySAE, device: str) -> _Weights:
    path = sae.download()
    state_dict = convert_deepseek_r1_weights(load_pickled_state_dict(path, device), path)
    sae.cfg["d_in"], sae.cfg["d_sae"] = state_dict["W_enc"].shape
    return state_dict, None


def _read_sparsify(sae: _RegistrySAE, device: str) -> _Weights:
    path = sae.download(SPARSIFY_WEIGHTS_FILENAME)
    return convert_sparsify_weights(read_safetensors(path, device), path), None


_FORMATS: dict[str, _RegistryFormat] = {
    "sae_lens": _RegistryFormat(_read_sae_lens, _OverridesAt.CONFIG),
    "connor_rob_hook_z": _RegistryFormat(_read_connor_rob, _OverridesAt.CONFIG),
    "gemma_2": _RegistryFormat(_read_gemma_scope, _OverridesAt.BEFORE_WEIGHTS),
    "gemma_2_transcoder": _RegistryFormat(_read_gemma_transcoder, _OverridesAt.BEFORE_WEIGHTS),
    "llama_scope": _RegistryFormat(
        partial(_read_openmoss, LLAMA_SCOPE), _OverridesAt.BEFORE_WEIGHTS
    ),
    "llama_scope_r1_distill": _RegistryFormat(
        partial(_read_openmoss, LLAMA_SCOPE_R1), _OverridesAt.BEFORE_WEIGHTS
    ),
    "dictionary_learning_1": _RegistryFormat(
        _read_dictionary_learning, _OverridesAt.BEFORE_WEIGHTS
    ),
    "deepseek_r1": _RegistryFormat(_read_deepseek_r1, _OverridesAt.AFTER_WEIGHTS),
    "sparsify": _RegistryFormat(_read_sparsify, _OverridesAt.CONFIG),
}


# --- the public loaders, made from the table ------------------------------------------


def _named(loader: Callable[..., LoadedSAE], name: str, doc: str) -> Callable[..., LoadedSAE]:
    """`loader` with the public name and docstring it is exported under."""
    loader.__name__ = loader.__qualname__ = name
    loader.__doc__ = doc
    return loader


def _registry_loader(format_name: str, name: str, doc: str) -> Callable[..., LoadedSAE]:
    """The public loader `name` of format `format_name`."""

    def loader(
        release: str,
        sae_id: str,
        device: str = "cpu",
        force_download: bool = False,
        cfg_overrides: dict[str, Any] | None = None,
    ) -> LoadedSAE:
        fmt = _FORMATS[format_name]
        return _load_registry_sae(fmt, release, sae_id, device, force_download, cfg_overrides)

    return _named(loader, name, doc)


def _registry_loader_with_shape_overrides(
    format_name: str, name: str, doc: str
) -> Callable[..., LoadedSAE]:
    """The public loader `name` of format `format_name`, whose config getter takes
    `d_sae_override` and `layer_override`."""

    def loader_with_shape_overrides(
        release: str,
        sae_id: str,
        device: str = "cpu",
        force_download: bool = False,
        cfg_overrides: dict[str, Any] | None = None,
        d_sae_override: int | None = None,
        layer_override: int | None = None,
    ) -> LoadedSAE:
        return _load_registry_sae(
            _FORMATS[format_name],
            release,
            sae_id,
            device,
            force_download,
            cfg_overrides,
            d_sae_override,
            layer_override,
        )

    return _named(loader_with_shape_overrides, name, doc)


sae_lens_loader = _registry_loader(
    "sae_lens", "sae_lens_loader", "An SAE in the native sae_lens folder format."
)
gemma_2_sae_loader = _registry_loader_with_shape_overrides(
    "gemma_2", "gemma_2_sae_loader", "A Gemma Scope JumpReLU SAE (`params.npz`)."
)
gemma_2_transcoder_loader = _registry_loader_with_shape_overrides(
    "gemma_2_transcoder",
    "gemma_2_transcoder_loader",
    "A Gemma Scope JumpReLU transcoder (`params.npz`), ln2.hook_normalized -> hook_mlp_out.",
)
llama_scope_sae_loader = _registry_loader_with_shape_overrides(
    "llama_scope",
    "llama_scope_sae_loader",
    "A Llama Scope JumpReLU SAE (`hyperparams.json` + `checkpoints/final.safetensors`).",
)
llama_scope_r1_distill_sae_loader = _registry_loader_with_shape_overrides(
    "llama_scope_r1_distill",
    "llama_scope_r1_distill_sae_loader",
    "A Llama Scope R1 Distill JumpReLU SAE (`config.json` + `sae_weights.safetensors`).",
)
dictionary_learning_sae_loader_1 = _registry_loader(
    "dictionary_learning_1",
    "dictionary_learning_sae_loader_1",
    "A saprmarks/dictionary_learning SAE (`config.json` + `ae.pt`).",
)
deepseek_r1_sae_loader = _registry_loader(
    "deepseek_r1",
    "deepseek_r1_sae_loader",
    "qresearch's DeepSeek R1 distill SAE (one `.pt` file); d_in / d_sae from its shapes.",
)
sparsify_sae_loader = _registry_loader(
    "sparsify",
    "sparsify_sae_loader",
    "An EleutherAI sparsify SAE (`cfg.json` + `sae.safetensors`), as a TopK SAE.",
)


def connor_rob_hook_z_loader(
    release: str,
    sae_id: str,
    device: str | None = None,
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], None]:
    """A Connor & Rob GPT-2 hook_z SAE (`<name>.pt` + `<name>_cfg.json`)."""
    fmt = _FORMATS["connor_rob_hook_z"]
    cfg, state_dict, _ = _load_registry_sae(
        fmt, release, sae_id, device or "cpu", force_download, cfg_overrides
    )
    return cfg, state_dict, None


def circuit_tracer_loader(
    release: str,
    sae_id: str,
    device: str = "cpu",
    force_download: bool = False,
    cfg_overrides: dict[str, Any] | None = None,
) -> LoadedSAE:
    """A circuit-tracer CLT folder, or one `layer_<i>.safetensors` of a transcoder set, in a
    hub repo (with the folder's `config.yaml`; see toolkit/loaders/circuit_tracer.py)."""
    repo_id, path = get_repo_id_and_folder_name(release, sae_id)
    is_file = path.endswith(".safetensors")
    folder = path.rpartition("/")[0] if is_file else path
    config = Path(download(repo_id, repo_path(folder, CIRCUIT_TRACER_CONFIG), force_download))
    if is_file:
        local = Path(download(repo_id, path, force_download))
    else:
        layer = 0
        while download_optional(repo_id, repo_path(folder, f"W_enc_{layer}.safetensors")):
            download(repo_id, repo_path(folder, f"W_dec_{layer}.safetensors"), force_download)
            layer += 1
        local = config.parent
    cfg, state_dict = read_circuit_tracer(local, device)
    return {**cfg, "device": device, **(cfg_overrides or {})}, state_dict, None


def get_circuit_tracer_config(
    repo_id: str, folder_name: str, options: SAEConfigLoadOptions
) -> dict[str, Any]:
    """A circuit-tracer SAE's config (read with its weights: the sizes are in the files)."""
    device = options.device or "cpu"
    cfg, _, _ = circuit_tracer_loader(repo_id, folder_name, device, options.force_download)
    return {**cfg, **(options.cfg_overrides or {})}


NAMED_PRETRAINED_SAE_LOADERS: dict[str, PretrainedSaeLoader] = {
    "sae_lens": sae_lens_loader,
    "connor_rob_hook_z": connor_rob_hook_z_loader,  # type: ignore[dict-item]
    "gemma_2": gemma_2_sae_loader,
    "gemma_2_transcoder": gemma_2_transcoder_loader,
    "circuit_tracer": circuit_tracer_loader,
    "llama_scope": llama_scope_sae_loader,
    "llama_scope_r1_distill": llama_scope_r1_distill_sae_loader,
    "dictionary_learning_1": dictionary_learning_sae_loader_1,
    "deepseek_r1": deepseek_r1_sae_loader,
    "sparsify": sparsify_sae_loader,
}

NAMED_PRETRAINED_SAE_CONFIG_GETTERS = {
    "sae_lens": get_sae_config_from_hf,
    "connor_rob_hook_z": get_connor_rob_hook_z_config,
    "gemma_2": get_gemma_2_config,
    "gemma_2_transcoder": get_gemma_2_transcoder_config,
    "circuit_tracer": get_circuit_tracer_config,
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
        entries = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise FileNotFoundError(
            f"SAE id {sae_id!r} is not a file or folder in local path {root}"
            f"{did_you_mean(sae_id, entries)} (it has {entries[:10]})"
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
    check_device(device)
    directory = get_pretrained_saes_directory()
    sae_info = directory.get(release)
    if sae_info is None:
        local = _local_sae_path(release, sae_id)
        if local is not None:
            return read_local_sae_folder(local, device)
        if not looks_like_repo_id(release):
            raise UnknownPretrainedSAEError(unknown_release_message(release))
        folder = Path(download_folder(release, sae_id, force_download))
        if not folder.exists():
            raise FileNotFoundError(f"{sae_id!r} not found in Hugging Face repo {release!r}")
        return read_local_sae_folder(folder, device)
    if sae_id not in sae_info.saes_map:
        raise UnknownPretrainedSAEError(unknown_sae_id_message(release, sae_id))
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
    return finalise_loaded_sae(cfg, state_dict, log_sparsity, device, None, source, True)
