"""Reading an SAE from a local folder (or single file) in any supported format, the
format told by the files present."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sae_lens.dtypes import dtype_from_name
from sae_lens.errors import check_device, closest_names
from sae_lens.saes.sae_folder import (
    SAE_CFG_FILENAME,
    SAE_WEIGHTS_FILENAME,
    check_finite_weights,
    check_sae_cfg,
    read_sae_folder,
)
from sae_lens.toolkit.loaders.circuit_tracer import CONFIG_FILENAME as CIRCUIT_TRACER_CONFIG
from sae_lens.toolkit.loaders.circuit_tracer import read_circuit_tracer
from sae_lens.toolkit.loaders.common import (
    LoadedSAE,
    StateDict,
    cast_state_dict,
    check_state_dict_shapes,
    handle_config_defaulting,
    load_pickled_state_dict,
    read_json,
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
    DICTIONARY_LEARNING_CONFIG_FILENAME,
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    convert_dictionary_learning_weights,
    get_dictionary_learning_config_from_json,
)
from sae_lens.toolkit.loaders.gemma_scope import (
    GEMMA_SCOPE_PARAMS_FILENAME,
    read_local_gemma_scope,
)
from sae_lens.toolkit.loaders.llama_scope import LLAMA_SCOPE, LLAMA_SCOPE_R1
from sae_lens.toolkit.loaders.sparsify import (
    SPARSIFY_CFG_FILENAME,
    SPARSIFY_RUN_CONFIG_FILENAME,
    SPARSIFY_WEIGHTS_FILENAME,
    convert_sparsify_weights,
    is_sparsify_cfg,
    safetensors_dtype_name,
    sparsify_config,
)

# (path, device, dtype override or None) -> loaded SAE; readers whose conversion casts
# tensors apply the dtype override first, so nothing is rounded twice.
Reader = Callable[[Path, str, str | None], LoadedSAE]

# Format name -> files that identify a folder of that format (checked in this order).
FOLDER_LAYOUTS: dict[str, tuple[str, ...]] = {
    "sae_lens": (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME),
    "sparsify": (SPARSIFY_CFG_FILENAME, SPARSIFY_WEIGHTS_FILENAME),
    "gemma_2": (GEMMA_SCOPE_PARAMS_FILENAME,),
    "dictionary_learning_1": (
        DICTIONARY_LEARNING_CONFIG_FILENAME,
        DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    ),
    "llama_scope": (LLAMA_SCOPE.config_filename, LLAMA_SCOPE.weights_path),
    "llama_scope_r1_distill": (LLAMA_SCOPE_R1.config_filename, LLAMA_SCOPE_R1.weights_path),
    "circuit_tracer": (CIRCUIT_TRACER_CONFIG, "W_enc_0.safetensors"),  # a CLT
}
FILE_LAYOUTS = {
    "connor_rob_hook_z": "<name>.pt with <name>_cfg.json beside it",
    "deepseek_r1": "<name>-l<layer>.pt",
    "gemma_2": "params.npz",
    "circuit_tracer": "layer_<i>.safetensors with config.yaml beside it",
}


def detect_sae_format(path: str | Path) -> str:
    """Name of the format (a key of NAMED_PRETRAINED_SAE_LOADERS) of a local SAE."""
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"SAE folder not found: {target}{_sibling_hint(target)}")
    if target.is_file():
        if target.suffix == ".npz":
            return "gemma_2"
        if target.suffix == ".pt":
            has_cfg = Path(connor_rob_cfg_path(str(target))).exists()
            return "connor_rob_hook_z" if has_cfg else "deepseek_r1"
        if target.suffix == ".safetensors" and (target.parent / CIRCUIT_TRACER_CONFIG).exists():
            return "circuit_tracer"
        raise ValueError(
            f"unrecognised SAE file {target}; single-file SAEs are {list(FILE_LAYOUTS.values())}"
        )
    for name, files in FOLDER_LAYOUTS.items():
        if all((target / file).exists() for file in files):
            return name
    if (target / SAE_CFG_FILENAME).exists():  # a weights file is missing: its reader says which
        return "sparsify" if is_sparsify_cfg(read_json(target / SAE_CFG_FILENAME)) else "sae_lens"
    entries = sorted(p.name for p in target.iterdir())
    subfolders = [name for name in entries if (target / name).is_dir()]
    hint = f"; it has subfolders {subfolders[:10]}: pass one of them" if subfolders else ""
    layouts = {name: list(files) for name, files in FOLDER_LAYOUTS.items()}
    raise FileNotFoundError(
        f"{target} has no {SAE_CFG_FILENAME}: not an sae_lens SAE folder, nor one of the "
        f"layouts {layouts} (found {entries[:10]}){hint}"
    )


def _sibling_hint(target: Path) -> str:
    """A "did you mean" naming the entries beside a missing path that look like it."""
    parent = target.parent
    if not parent.is_dir():
        return f" (its parent folder {parent} does not exist either)"
    close = closest_names(target.name, [p.name for p in parent.iterdir()])
    return f"; did you mean {' or '.join(repr(str(parent / c)) for c in close)}?" if close else ""


def local_weights_file(path: str | Path) -> Path:
    """The file a local SAE (folder or single file, in any supported format) keeps its
    weights in."""
    target = Path(path)
    if target.is_file():
        return target
    return target / FOLDER_LAYOUTS[detect_sae_format(target)][-1]


def _read_sae_lens(path: Path, device: str, dtype: str | None) -> LoadedSAE:
    return read_sae_folder(path, device, dtype, check_cfg=True)


def _read_sparsify(path: Path, device: str, dtype: str | None) -> LoadedSAE:
    weights_path = path / SPARSIFY_WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"no such weights file: {weights_path}")
    run_path = path.parent / SPARSIFY_RUN_CONFIG_FILENAME
    cfg = sparsify_config(
        read_json(path / SPARSIFY_CFG_FILENAME),
        hookpoint=path.name,
        dtype=safetensors_dtype_name(weights_path),
        run_config=read_json(run_path) if run_path.exists() else None,
    )
    weights = convert_sparsify_weights(read_safetensors(weights_path, device), str(weights_path))
    return cfg, weights, None


def _read_gemma_scope(path: Path, device: str, dtype: str | None) -> LoadedSAE:
    params = path if path.is_file() else path / GEMMA_SCOPE_PARAMS_FILENAME
    cfg, state_dict = read_local_gemma_scope(params, device)
    return cfg, state_dict, None


def _read_dictionary_learning(path: Path, device: str, dtype: str | None) -> LoadedSAE:
    raw = read_json(path / DICTIONARY_LEARNING_CONFIG_FILENAME)
    cfg = get_dictionary_learning_config_from_json(raw)
    weights_path = path / DICTIONARY_LEARNING_WEIGHTS_FILENAME
    ae = load_pickled_state_dict(weights_path, device)
    return cfg, convert_dictionary_learning_weights(raw, ae, str(weights_path)), None


def _read_connor_rob(path: Path, device: str, dtype: str | None) -> LoadedSAE:
    cfg = connor_rob_config(read_json(connor_rob_cfg_path(str(path))))
    weights = convert_connor_rob_weights(load_pickled_state_dict(path, device), str(path))
    return cfg, weights, None


def _read_deepseek_r1(path: Path, device: str, dtype: str | None) -> LoadedSAE:
    weights = convert_deepseek_r1_weights(load_pickled_state_dict(path, device), str(path))
    d_in, d_sae = weights["W_enc"].shape
    return deepseek_r1_config(deepseek_r1_layer(path.name), d_in, d_sae), weights, None


def _read_circuit_tracer(path: Path, device: str, dtype: str | None) -> LoadedSAE:
    return (*read_circuit_tracer(path, device), None)


READERS: dict[str, Reader] = {
    "sae_lens": _read_sae_lens,
    "sparsify": _read_sparsify,
    "gemma_2": _read_gemma_scope,
    "dictionary_learning_1": _read_dictionary_learning,
    "llama_scope": LLAMA_SCOPE.read_local,
    "llama_scope_r1_distill": LLAMA_SCOPE_R1.read_local,
    "connor_rob_hook_z": _read_connor_rob,
    "deepseek_r1": _read_deepseek_r1,
    "circuit_tracer": _read_circuit_tracer,
}


def finalise_loaded_sae(
    cfg_dict: dict[str, Any],
    state_dict: StateDict,
    log_sparsity: torch.Tensor | None,
    device: str,
    dtype: str | None,
    source: str,
    finite_checked: bool = False,
) -> LoadedSAE:
    """Defaults filled, the config checked, tensors checked to be finite (unless
    `finite_checked`), cast to the config's dtype (or `dtype`) and moved to `device`,
    shapes checked against d_in / d_sae. Errors name `source`: the weights file, or the
    release and SAE id."""
    cfg_dict = handle_config_defaulting(cfg_dict)
    if dtype is not None:
        cfg_dict["dtype"] = dtype
    cfg_dict["device"] = device
    check_sae_cfg(cfg_dict, source)
    if not finite_checked:
        check_finite_weights(state_dict, source)
    torch_dtype = dtype_from_name(cfg_dict["dtype"], "dtype in SAE config")
    state_dict = {k: v.to(device) for k, v in cast_state_dict(state_dict, torch_dtype).items()}
    check_state_dict_shapes(cfg_dict, state_dict, source)
    if log_sparsity is not None:
        log_sparsity = log_sparsity.to(device)
    return cfg_dict, state_dict, log_sparsity


def read_local_sae_folder(
    path: str | Path, device: str = "cpu", dtype: str | None = None
) -> LoadedSAE:
    """(config dict, state dict, log sparsity or None) of a local SAE in any supported
    format: an sae_lens folder, Gemma Scope `params.npz`, dictionary_learning `ae.pt`,
    sparsify `sae.safetensors`, Llama Scope, or a single-file format."""
    check_device(device)
    target = Path(path)
    name = detect_sae_format(target)
    cfg_dict, state_dict, log_sparsity = READERS[name](target, device, dtype)
    source = str(local_weights_file(target))
    return finalise_loaded_sae(cfg_dict, state_dict, log_sparsity, device, dtype, source)
