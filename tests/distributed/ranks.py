"""Running a function in several local processes joined into one gloo process group, as
torchrun would start them (RANK, WORLD_SIZE, ... in their environment)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _enter(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    import torch

    torch.set_num_threads(1)
    fn(rank, *args)


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Call `fn(rank, *args)` in `world_size` spawned processes (`fn` must be importable);
    raises if any of them fails."""
    mp.spawn(_enter, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
