"""What the library raises for bad input it is given (SAE files, hook names, devices), and
the closest-name hint those errors carry. A leaf module: it imports nothing of the package.

Every error here is a `ValueError` (the unknown hook also a `KeyError`, which 5.6.0 raised
for it), and its message is one line: what was wrong, where, and what would be right.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch


class SAELoadError(ValueError):
    """An SAE's files cannot be loaded as they are."""


class SAEConfigError(SAELoadError):
    """An SAE's config (cfg.json or its format's equivalent) is not valid JSON, lacks a
    required field, or holds a value of the wrong type."""


class SAEWeightsError(SAELoadError):
    """An SAE's weights file is unreadable, lacks a tensor, or holds one of the wrong shape."""


class NonFiniteWeightsError(SAEWeightsError):
    """An SAE's weights hold NaN or infinite values."""


class UnknownPretrainedSAEError(ValueError):
    """A release that is not in the pretrained SAEs directory (nor a repo id or local path),
    or an SAE id that its release does not have."""


class HookNameError(KeyError, ValueError):
    """A hook name the model does not have, or a hook_layer that disagrees with the hook."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DeviceError(ValueError):
    """A device string torch does not know, or a device this machine does not have."""


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `candidates` that look most like `name`, best first (difflib)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """ "; did you mean 'a' or 'b'?" for the closest candidates, or "" when none is close."""
    close = closest_names(name, candidates, n)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def check_device(device: str | torch.device, what: str = "device") -> torch.device:
    """`device` as a torch.device, or a DeviceError when torch does not know it or this
    machine lacks it (no CUDA, fewer CUDA devices, no MPS)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        if isinstance(device, int):
            raise DeviceError(
                f"{what} {device} (an accelerator index) asked for, but this machine has no "
                "accelerator: use 'cpu'"
            ) from None
        raise DeviceError(
            f"{what} {str(device)!r} is not a torch device: use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{what} {str(device)!r} asked for, but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False): use 'cpu'"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(
                f"{what} {str(device)!r} asked for, but this machine has {count} CUDA "
                f"device(s): use 'cuda:0' to 'cuda:{count - 1}'"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{what} {str(device)!r} asked for, but MPS is not available: use 'cpu'")
    return parsed
