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

from sae_lens.dtypes import dtype_from_name
from sae_lens.file_modes import save_tensors

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
SPARSITY_FILENAME = "sparsity.safetensors"


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
        raise ValueError(
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
    path: str | Path, device: str = "cpu", dtype: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor | None]:
    """(cfg_dict, state_dict, log_sparsity or None) of an SAE folder in sae_lens format.

    The config gets `device` and, when given, `dtype`; weights are cast to the config's dtype.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"SAE folder not found: {folder}")
    cfg_path = folder / SAE_CFG_FILENAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} has no {SAE_CFG_FILENAME}: not an sae_lens SAE folder")
    try:
        cfg_dict = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(cfg_dict, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object, got {type(cfg_dict).__name__}")
    cfg_dict = apply_legacy_cfg_defaults(cfg_dict)
    cfg_dict["device"] = device
    if dtype is not None:
        cfg_dict["dtype"] = dtype
    if "dtype" not in cfg_dict:
        raise ValueError(f"{cfg_path} has no 'dtype' and none was given")
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
