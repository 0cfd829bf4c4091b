"""Pieces every SAE format shares: load options, config defaults, safe weight reading,
shape checks and the folding of a norm scaling factor into the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from sae_lens.dtypes import dtype_from_name
from sae_lens.errors import SAEWeightsError
from sae_lens.saes.clt import encoder_rows
from sae_lens.saes.sae_folder import apply_legacy_cfg_defaults, read_cfg_json

StateDict = dict[str, torch.Tensor]
LoadedSAE = tuple[dict[str, Any], StateDict, "torch.Tensor | None"]


@dataclass
class SAEConfigLoadOptions:
    """Options passed to a format's config getter."""

    device: str | None = None
    force_download: bool = False
    d_sae_override: int | None = None
    layer_override: int | None = None
    cfg_overrides: dict[str, Any] | None = field(default_factory=dict)


def handle_config_defaulting(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Fill the fields that older configs lack (in place; also returned).

    `dataset_trust_remote_code` defaults to False: running a dataset's remote code is
    opt-in in this project. A missing or null `normalize_activations` means "none", and
    the old boolean form maps to "none" / "expected_average_only_in".
    """
    return apply_legacy_cfg_defaults(cfg_dict)


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file, with a one-line SAEConfigError if it is not one."""
    return read_cfg_json(Path(path))


def handle_scaling_factor(cfg_dict: dict[str, Any], state_dict: StateDict) -> None:
    """Apply the old `scaling_factor` convention (in place).

    A `scaling_factor` of all ones is dropped; any other value becomes
    `finetuning_scaling_factor`, which the config must then enable.
    """
    scaling = state_dict.pop("scaling_factor", None)
    if scaling is None or torch.allclose(scaling, torch.ones_like(scaling)):
        cfg_dict["finetuning_scaling_factor"] = False
        return
    if not cfg_dict.get("finetuning_scaling_factor"):
        raise ValueError(
            "The weights hold a scaling_factor that is not all ones but the config has "
            "finetuning_scaling_factor=False; set it to True to use the factor."
        )
    state_dict["finetuning_scaling_factor"] = scaling


def read_safetensors(path: str | Path, device: str = "cpu") -> StateDict:
    """All tensors of a safetensors file, with a one-line error if it is unreadable."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise SAEWeightsError(f"could not read safetensors file {path}: {e}") from e


def read_sae_from_disk(
    cfg_dict: dict[str, Any],
    weight_path: str,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[dict[str, Any], StateDict]:
    """Weights of an sae_lens `sae_weights.safetensors`, cast to `dtype` (default: the
    config's), with the old `scaling_factor` convention applied."""
    if dtype is None:
        dtype = dtype_from_name(cfg_dict["dtype"], "dtype in SAE config")
    state_dict = {k: v.to(dtype=dtype) for k, v in read_safetensors(weight_path, device).items()}
    handle_scaling_factor(cfg_dict, state_dict)
    return cfg_dict, state_dict


def load_pickled_state_dict(
    path: str | Path, device: str | torch.device | None = "cpu"
) -> StateDict:
    """A `.pt` state dict read with `weights_only=True` (no arbitrary code runs)."""
    try:
        loaded = torch.load(path, map_location=device or "cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad or unsafe pickles
        raise SAEWeightsError(
            f"could not read {path} as a PyTorch state dict with weights_only=True: {e}"
        ) from e
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise SAEWeightsError(
            f"{path} does not hold a state dict of tensors (got {type(loaded).__name__})"
        )
    return loaded


def require_keys(state_dict: StateDict, keys: list[str], source: str) -> None:
    """One-line error when a weights file lacks tensors its format must have."""
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise SAEWeightsError(f"{source} lacks tensors {missing}; it has {sorted(state_dict)}")


def expected_shapes(cfg_dict: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Shapes the SAE config implies for the tensors it may have."""
    d_in, d_sae = cfg_dict["d_in"], cfg_dict["d_sae"]
    # a transcoder's decoder writes its output hook (d_out wide); W_skip is saved [d_out, d_in]
    d_out = cfg_dict.get("d_out") if cfg_dict.get("hook_name_out") is not None else None
    d_out = d_out or d_in
    return {
        "W_enc": (encoder_rows(cfg_dict), d_sae),  # a CLT's: one layer's input wide
        "W_dec": (d_sae, d_out),
        "b_enc": (d_sae,),
        "b_dec": (d_out,),
        "W_skip": (d_out, d_in),
        "threshold": (d_sae,),
        "b_gate": (d_sae,),
        "b_mag": (d_sae,),
        "r_mag": (d_sae,),
        "finetuning_scaling_factor": (d_sae,),
    }


def check_state_dict_shapes(cfg_dict: dict[str, Any], state_dict: StateDict, source: str) -> None:
    """One-line error naming the first tensor whose shape disagrees with d_in / d_sae."""
    shapes = expected_shapes(cfg_dict)
    for name, tensor in state_dict.items():
        expected = shapes.get(name)
        if expected is not None and tuple(tensor.shape) != expected:
            raise SAEWeightsError(
                f"{source}: tensor '{name}' has shape {list(tensor.shape)}, expected "
                f"{list(expected)} (d_in={cfg_dict['d_in']}, d_sae={cfg_dict['d_sae']})"
            )


def cast_state_dict(state_dict: StateDict, dtype: torch.dtype) -> StateDict:
    """Every floating-point tensor cast to `dtype`."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def fold_norm_scaling_factor(
    cfg_dict: dict[str, Any], state_dict: StateDict, factor: float
) -> None:
    """Fold a dataset-wide activation scaling factor into the weights (in place).

    The SAE was trained on `x * factor`; after folding it takes raw `x` and returns outputs
    on the raw scale: W_enc is multiplied by `factor`, W_dec and b_dec divided by it, and
    `normalize_activations` becomes "none".
    """
    state_dict["W_enc"] = state_dict["W_enc"] * factor
    state_dict["W_dec"] = state_dict["W_dec"] / factor
    state_dict["b_dec"] = state_dict["b_dec"] / factor
    cfg_dict["normalize_activations"] = "none"
