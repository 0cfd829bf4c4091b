"""The sae_lens on-disk SAE format: a folder with `cfg.json` (the SAEConfig fields),
`sae_weights.safetensors` and optionally `sparsity.safetensors` (tensor `sparsity`, log10
firing frequencies [d_sae]). Files are written under temporary names and then renamed, so
an interrupted save never leaves a half-written file under a final name."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from sae_lens.dtypes import DTYPE_MAP, dtype_from_name
from sae_lens.errors import (
    NonFiniteWeightsError,
    SAEConfigError,
    SAEWeightsError,
    closest_names,
    did_you_mean,
)
from sae_lens.file_modes import save_tensors
from sae_lens.saes import transcoder
from sae_lens.saes.registry import architecture_names

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
SPARSITY_FILENAME = "sparsity.safetensors"

# Config keys renamed since early sae_lens versions: old name -> current name.
LEGACY_CFG_KEYS = {
    "hook_point": "hook_name",
    "hook_point_head_index": "hook_head_index",
    "hook_point_layer": "hook_layer",
    "activation_fn": "activation_fn_str",
}

_INT, _STR, _BOOL, _NONE, _DICT = (int,), (str,), (bool,), (type(None),), (dict,)
# SAEConfig's fields (sae_lens.sae), in its order, and the JSON types cfg.json may hold for
# each; the first 18 are its required fields (no default). null is allowed where published
# configs hold it.
CFG_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "architecture": _STR,
    "d_in": _INT,
    "d_sae": _INT,
    "activation_fn_str": _STR,
    "apply_b_dec_to_input": _BOOL,
    "finetuning_scaling_factor": _BOOL,
    "context_size": _INT + _NONE,
    "model_name": _STR,
    "hook_name": _STR,
    "hook_layer": _INT,
    "hook_head_index": _INT + _NONE,
    "prepend_bos": _BOOL,
    "dataset_path": _STR + _NONE,
    "dataset_trust_remote_code": _BOOL + _NONE,
    "normalize_activations": _STR + _NONE,
    "dtype": _STR,
    "device": (object,),  # set by the loader: a string or a torch.device
    "sae_lens_training_version": (str, int, float, type(None)),
    "activation_fn_kwargs": _DICT + _NONE,
    "neuronpedia_id": _STR + _NONE,
    "model_from_pretrained_kwargs": _DICT + _NONE,
    "seqpos_slice": (list, tuple, int, type(None)),
    "hook_name_out": _STR + _NONE,
    "hook_layer_out": _INT + _NONE,
    "d_out": _INT + _NONE,
    "skip_connection": _BOOL,
}
REQUIRED_CFG_FIELDS = tuple(CFG_FIELD_TYPES)[:18]
_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false", type(None): "null"}
_TYPE_NAMES.update({dict: "a JSON object", list: "a list", float: "a number"})


def apply_legacy_cfg_defaults(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Fill config keys that SAEs saved by older sae_lens versions lack (in place)."""
    cfg_dict.setdefault("prepend_bos", True)
    cfg_dict.setdefault("dataset_trust_remote_code", False)
    cfg_dict.setdefault("apply_b_dec_to_input", True)
    cfg_dict.setdefault("finetuning_scaling_factor", False)
    cfg_dict.setdefault("sae_lens_training_version", None)
    cfg_dict.setdefault("activation_fn_str", cfg_dict.get("activation_fn", "relu"))
    cfg_dict.setdefault("architecture", "standard")
    cfg_dict.setdefault("neuronpedia_id", None)
    normalize = cfg_dict.get("normalize_activations")
    if isinstance(normalize, bool):
        # Early versions stored a flag; True meant the "expected average" scaling.
        cfg_dict["normalize_activations"] = "expected_average_only_in" if normalize else "none"
    elif normalize is None:
        cfg_dict["normalize_activations"] = "none"
    cfg_dict.setdefault("device", "cpu")
    return cfg_dict


def _json_type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def check_sae_cfg(cfg_dict: dict[str, Any], source: str | Path) -> None:
    """Raise an SAEConfigError naming `source` (the config file) and the field when a
    required field is missing (legacy names count), a field holds the wrong JSON type, d_in
    or d_sae is not positive, or the architecture or dtype is unknown."""
    present = set(cfg_dict) | {new for old, new in LEGACY_CFG_KEYS.items() if old in cfg_dict}
    missing = [name for name in REQUIRED_CFG_FIELDS if name not in present]
    if missing:
        unknown = [key for key in cfg_dict if key not in CFG_FIELD_TYPES]
        typos = [
            f"{close[0]!r} for {name!r}"
            for name in missing
            if (close := closest_names(name, unknown, n=1))
        ]
        typo = f" (misspelt? it has {', '.join(typos)})" if typos else ""
        raise SAEConfigError(
            f"{source} lacks required field(s) {missing}{typo}: add them (SAE.save_model "
            "writes every field)"
        )
    for name, allowed in CFG_FIELD_TYPES.items():
        value = cfg_dict.get(name, cfg_dict.get(_legacy_name(name)))
        if name not in present:
            continue
        # bool is an int in Python, but not in JSON: 'true' is no width.
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
            raise SAEConfigError(
                f"{source}: field {name!r} must be {expected}, got {_json_type_name(value)} "
                f"{value!r}"
            )
    for name in ("d_in", "d_sae"):
        if cfg_dict[name] < 1:
            raise SAEConfigError(
                f"{source}: field {name!r} must be a positive integer, got {cfg_dict[name]}"
            )
    _check_known(cfg_dict["architecture"], architecture_names(), "SAE architecture", source)
    _check_known(cfg_dict["dtype"], list(DTYPE_MAP), "dtype", source)


def _legacy_name(name: str) -> str:
    return next((old for old, new in LEGACY_CFG_KEYS.items() if new == name), name)


def _check_known(value: str, known: list[str], field: str, source: str | Path) -> None:
    if value not in known:
        raise SAEConfigError(
            f"{source}: unknown {field} {value!r}: expected one of {known}"
            f"{did_you_mean(value, known)}"
        )


def read_cfg_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; an SAEConfigError naming the file when it is empty, not
    JSON, or not an object."""
    text = path.read_text()
    if not text.strip():
        raise SAEConfigError(f"{path} is empty: expected a JSON object of SAE config fields")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as e:
        raise SAEConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(loaded, dict):
        raise SAEConfigError(f"{path} must hold a JSON object, got {type(loaded).__name__}")
    return loaded


def check_finite_weights(state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise a NonFiniteWeightsError naming `source` (the weights file) and the first
    tensor that holds NaN or infinite values, with how many."""
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        n_nan = int(torch.isnan(tensor).sum())
        n_inf = int(torch.isinf(tensor).sum())
        counts = " and ".join(
            f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n
        )
        plural = "" if n_nan + n_inf == 1 else "s"
        raise NonFiniteWeightsError(
            f"{source}: {name} holds {counts} value{plural} (of {tensor.numel()}); the file is "
            "damaged or the SAE diverged in training: use another checkpoint"
        )


def read_safetensors(
    path: Path, device: str = "cpu", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, optionally cast to `dtype`."""
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except SafetensorError as e:
        raise SAEWeightsError(
            f"cannot read {path} as safetensors (corrupt or truncated?): {e}"
        ) from None
    if dtype is not None:
        tensors = {name: t.to(dtype) for name, t in tensors.items()}
    return tensors


def _handle_legacy_scaling_factor(cfg_dict: dict[str, Any], state_dict: dict[str, Any]) -> None:
    """Old files stored the finetuning scale as `scaling_factor` (all ones when unused)."""
    scale = state_dict.pop("scaling_factor", None)
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        if not cfg_dict["finetuning_scaling_factor"]:
            raise ValueError(
                "weights hold a non-trivial 'scaling_factor' but cfg.json has "
                "finetuning_scaling_factor=false"
            )
        state_dict["finetuning_scaling_factor"] = scale
    cfg_dict["finetuning_scaling_factor"] = "finetuning_scaling_factor" in state_dict


def read_sae_folder(
    path: str | Path, device: str = "cpu", dtype: str | None = None, check_cfg: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """(cfg_dict, state_dict, log_sparsity or None) of an SAE folder in sae_lens format.

    The config gets `device` and, when given, `dtype`; weights are cast to the config's dtype.
    With `check_cfg` the config must hold every SAEConfig field (`check_sae_cfg`) before the
    weights are read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"SAE folder not found: {folder}")
    cfg_path = folder / SAE_CFG_FILENAME
    if not cfg_path.is_file():
        entries = sorted(p.name for p in folder.iterdir())[:10]
        raise FileNotFoundError(
            f"{folder} has no {SAE_CFG_FILENAME}: not an sae_lens SAE folder (it has {entries})"
        )
    cfg_dict = apply_legacy_cfg_defaults(read_cfg_json(cfg_path))
    transcoder.cfg_dict_from_saved(cfg_dict)
    cfg_dict["device"] = device
    if dtype is not None:
        cfg_dict["dtype"] = dtype
    if check_cfg:
        check_sae_cfg(cfg_dict, cfg_path)
    if "dtype" not in cfg_dict:
        raise SAEConfigError(f"{cfg_path} has no 'dtype' and none was given")
    target_dtype = dtype_from_name(cfg_dict["dtype"])

    state_dict = read_safetensors(folder / SAE_WEIGHTS_FILENAME, device, target_dtype)
    _handle_legacy_scaling_factor(cfg_dict, state_dict)

    log_sparsity = None
    sparsity_path = folder / SPARSITY_FILENAME
    if sparsity_path.is_file():
        sparsity_file = read_safetensors(sparsity_path, device)
        if "sparsity" not in sparsity_file:
            raise ValueError(f"{sparsity_path} has no tensor 'sparsity'")
        log_sparsity = sparsity_file["sparsity"]
    return cfg_dict, state_dict, log_sparsity


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")


def write_sae_folder(
    path: str | Path,
    cfg_dict: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    sparsity: torch.Tensor | None = None,
) -> tuple[Path, ...]:
    """Write an SAE folder; returns (weights, cfg[, sparsity]) paths, as 5.6.0's save_model."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / SAE_WEIGHTS_FILENAME, folder / SAE_CFG_FILENAME]
    if sparsity is not None:
        targets.append(folder / SPARSITY_FILENAME)
    temps = [_temp_name(t) for t in targets]
    try:
        save_tensors({k: v.detach().contiguous() for k, v in state_dict.items()}, temps[0])
        temps[1].write_text(json.dumps(cfg_dict, indent=2))
        if sparsity is not None:
            save_tensors({"sparsity": sparsity.detach().contiguous()}, temps[2])
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return tuple(targets)
