"""Checks shared by SAE splicing and evals: does the model have the hook point, and does the
SAE fit the activation found there. Each failure is a one-line ValueError saying what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch

from sae_lens.hook_activations import sae_width_error


def require_hook(hook_name: str, available: Iterable[str]) -> None:
    """Raise a ValueError naming `hook_name` and the closest existing names if it is missing."""
    names = list(available)
    if hook_name in names:
        return
    close = difflib.get_close_matches(hook_name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
    raise ValueError(
        f"The model has no hook point {hook_name!r}{hint} "
        f"(model.hook_dict lists all {len(names)} hook points)"
    )


def check_sae_fits(
    hook_name: str,
    d_in: int,
    width: int,
    sae_device: torch.device,
    sae_dtype: torch.dtype,
    acts: torch.Tensor,
) -> None:
    """Raise a ValueError if an SAE with `d_in` (on `sae_device`, in `sae_dtype`) cannot take
    `acts`, whose feature width as the SAE sees it is `width`."""
    if width != d_in:
        raise sae_width_error(hook_name, d_in, width, acts)
    if not same_device(acts.device, sae_device) or acts.dtype != sae_dtype:
        raise ValueError(
            f"SAE at {hook_name!r} is on {sae_device} in {sae_dtype} but the activation there is "
            f"on {acts.device} in {acts.dtype}; move it first with "
            f"sae.to(device={str(acts.device)!r}, dtype={acts.dtype})"
        )


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same, treating "cuda" as the current CUDA device."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return a.index == b.index or a.index is None or b.index is None
    current = torch.cuda.current_device()
    index_a = current if a.index is None else a.index
    index_b = current if b.index is None else b.index
    return index_a == index_b


def module_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a module's first parameter (an SAE holds all its weights in one)."""
    param = next(module.parameters(), None)
    if param is None:
        raise ValueError(f"{type(module).__name__} has no parameters; expected an SAE with weights")
    return param.device, param.dtype
