"""Process-wide settings of glibc's memory allocator for long CPU runs.

A training step on CPU allocates and frees several tensors of tens of MiB (latents,
pre-activations, gradients, the model's attention and MLP intermediates). glibc serves
blocks that large with mmap and unmaps them when freed, so every step page-faults fresh
zeroed pages back in: 10-40% of a CPU step on the benchmark machine. Raising the mmap and
trim thresholds keeps freed blocks in the heap for reuse. The cost is that memory freed
during the run is not given back to the OS until the process ends or trims.

Opt in with the config field `reuse_freed_memory` (on by default in the command-line runners
only): `SAETrainingRunner` and `CacheActivationsRunner` then apply the settings for the
length of `run()` on a CPU device, say so in one line, and restore glibc's defaults after.
The environment variable SAE_LENS_KEEP_MALLOC_DEFAULTS=1 refuses the settings everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

OPT_OUT_VARIABLE = "SAE_LENS_KEEP_MALLOC_DEFAULTS"
# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# blocks up to 1 GiB come from the heap; up to 2 GiB of free heap top is kept
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1
# glibc's own starting values of both thresholds (128 KiB)
DEFAULT_THRESHOLD_BYTES = 128 * 1024

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
        print(
            "reuse_freed_memory: glibc keeps freed blocks for reuse during this run "
            "(faster CPU steps; memory is given back when the run ends)",
            flush=True,  # on stdout: stderr is for errors, which stay one line
        )
    _applied = ok
    return ok


def restore_malloc_defaults() -> bool:
    """Undo `reuse_freed_memory`: glibc's default thresholds, and the freed memory held
    for reuse given back to the OS. Returns whether there was anything to undo."""
    global _applied
    if not _applied:
        return False
    mallopt = _glibc_mallopt()
    assert mallopt is not None  # it was applied through it
    mallopt(_M_MMAP_THRESHOLD, DEFAULT_THRESHOLD_BYTES)
    mallopt(_M_TRIM_THRESHOLD, DEFAULT_THRESHOLD_BYTES)
    _malloc_trim()
    _applied = False
    return True


@contextmanager
def freed_memory_reused(device: str | torch.device, enabled: bool) -> Iterator[bool]:
    """While active, `reuse_freed_memory_on_cpu(device)` when `enabled`; glibc's defaults
    come back on exit if this call applied the settings. Yields whether they are on."""
    applied_here = enabled and not _applied and reuse_freed_memory_on_cpu(device)
    try:
        yield _applied
    finally:
        if applied_here:
            restore_malloc_defaults()


def reuse_freed_memory_on_cpu(device: str | torch.device) -> bool:
    """`reuse_freed_memory()` when `device` is the CPU (on a GPU the big tensors are not
    glibc's); False otherwise."""
    return torch.device(device).type == "cpu" and reuse_freed_memory()


def _malloc_trim() -> None:
    libc = _glibc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (on Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, or None where the C library is not glibc."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallopt"):
        return None  # another C library (e.g. musl) without glibc's tunables
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
