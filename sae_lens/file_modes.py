"""Files written with the process's normal permissions. The safetensors writer creates its
files readable by their owner only (mode 0600), unlike everything else a run writes (0666
less the umask, usually 0644), so collaborators on a shared disk could not read the SAE
weights. Writers call `save_tensors` instead."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file


def current_umask() -> int:
    """The process's umask, read from /proc where Linux offers it (no change of state);
    elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """`safetensors.torch.save_file`, leaving the file with the permissions `open()` would
    have given it."""
    save_file(tensors, str(path))
    os.chmod(path, 0o666 & ~current_umask())
