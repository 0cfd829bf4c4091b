"""Process-wide settings of glibc's memory allocator for long CPU runs.

A training step on CPU allocates and frees several tensors of tens of MiB (latents,
pre-activations, gradients, the model's attention and MLP intermediates). glibc serves
blocks that large with mmap and unmaps them when freed, so every step page-faults fresh
zeroed pages back in: 10-40% of a CPU step on the benchmark machine. Raising the mmap and
trim thresholds keeps freed blocks in the heap for reuse. The cost is that memory freed
during the run is not given back to the OS until the process ends or trims.

`SAETrainingRunner` and `CacheActivationsRunner` call `reuse_freed_memory_on_cpu` with
their device; set the environment variable SAE_LENS_KEEP_MALLOC_DEFAULTS=1 to leave glibc's
defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable

import torch

from sae_lens import logger

OPT_OUT_VARIABLE = "SAE_LENS_KEEP_MALLOC_DEFAULTS"
# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# blocks up to 1 GiB come from the heap; up to 2 GiB of free heap top is kept
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1

_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse instead of returning them to the OS.
    Returns True when the settings are in effect (now or from an earlier call); False on
    other platforms or C libraries, or when SAE_LENS_KEEP_MALLOC_DEFAULTS=1 is set."""
    global _applied
    if _applied:
        return True
    if os.environ.get(OPT_OUT_VARIABLE, "") not in ("", "0"):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    if ok:
        logger.info(
            "glibc allocator set to keep freed blocks for reuse "
            f"(set {OPT_OUT_VARIABLE}=1 to keep its defaults)"
        )
    _applied = ok
    return ok


def reuse_freed_memory_on_cpu(device: str | torch.device) -> bool:
    """`reuse_freed_memory()` when `device` is the CPU (on a GPU the big tensors are not
    glibc's); False otherwise."""
    return torch.device(device).type == "cpu" and reuse_freed_memory()


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # another C library (e.g. musl) without glibc's tunables
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
