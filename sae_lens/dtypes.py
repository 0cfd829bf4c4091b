"""Torch dtypes by the names configs and saved SAE folders use for them ("float32",
"torch.bfloat16", ...). A leaf module: it imports nothing of the package."""

from __future__ import annotations

import torch

DTYPE_MAP: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "torch.float32": torch.float32,
    "torch.float64": torch.float64,
    "torch.float16": torch.float16,
    "torch.bfloat16": torch.bfloat16,
}


def dtype_from_name(name: str, what: str = "dtype") -> torch.dtype:
    """The torch dtype called `name`; a ValueError naming `what` (the field or file being
    read) and the accepted names otherwise."""
    try:
        return DTYPE_MAP[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {what} {name!r}: expected one of {list(DTYPE_MAP)}") from None
