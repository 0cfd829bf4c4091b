"""The process group of a run started with `torchrun`, and the collective operations a
data-parallel run needs, all no-ops in a run of one process.

Data parallel: every process ("rank") runs the model on its own part of the token stream
(`take_data_shard`) and serves `train_batch_size_tokens / world_size` rows a step; the
SAE's gradients are averaged over the ranks before each optimizer step, so every rank
holds the same weights and the step is that of the global batch. Firing counts are summed
over the ranks (dead latents and firing frequencies are the global batch's), evaluation
metrics averaged; only rank 0 writes files and logs.

`torchrun --nproc_per_node N -m sae_lens.sae_training_runner ...` starts N processes with
`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` in their environment.
`DistributedContext.from_environment(device)` joins them into one process group (gloo on
CPU, NCCL on CUDA, each CUDA rank on GPU `LOCAL_RANK`); without those variables it is the
single-process context, whose operations return their input. Collectives that wait longer
than `timeout_s` for a rank (one that died or hangs) raise `RankFailedError` naming the
rank that did not answer, where the backend says.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "RankFailedError",
    "launched_rank",
    "launch_command",
    "leave_run",
    "split_evenly",
    "take_data_shard",
]

T = TypeVar("T")

# how long a collective waits for the other ranks before the run stops with an error
DEFAULT_TIMEOUT_S = 60.0
_ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class RankFailedError(RuntimeError):
    """Another rank of the run died or stopped answering."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: `rank` of `world_size`, on `device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_environment(
        cls, device: str | torch.device, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> DistributedContext:
        """Join the run's process group when torchrun started this process (its
        environment variables are set), else the single-process context on `device`. A
        CUDA device becomes `cuda:<LOCAL_RANK>`."""
        device = torch.device(device)
        if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
            return cls(device=device, timeout_s=timeout_s)
        missing = [name for name in _ENVIRONMENT if name not in os.environ]
        if missing:
            raise ValueError(
                f"WORLD_SIZE is set but {', '.join(missing)} is not: start the run with "
                "torchrun (e.g. torchrun --standalone --nproc_per_node 2 -m ...)"
            )
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(
                backend,
                rank=rank,
                world_size=world,
                timeout=datetime.timedelta(seconds=timeout_s),
            )
        return cls(rank, world, local_rank, device, timeout_s)

    @property
    def enabled(self) -> bool:
        """True when the run has more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes files."""
        return self.rank == 0

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the ranks (one all-reduce of
        all gradients flattened together). Every rank must pass the same parameters."""
        if not self.enabled:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._all_reduce(flat, dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place (every rank gets the sum); returns it."""
        if self.enabled:
            self._all_reduce(tensor, dist.ReduceOp.SUM)
        return tensor

    def sum_number(self, value: int) -> int:
        """The sum of `value` over the ranks."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=self._collective_device)
        return int(self.sum_(tensor).item())

    def mean_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """`metrics` with each number replaced by its mean over the ranks (every rank must
        pass the same keys); other values are rank 0's."""
        if not self.enabled:
            return metrics
        gathered = self.gather(metrics)
        averaged = dict(gathered[0])
        for key, value in gathered[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                averaged[key] = sum(float(m[key]) for m in gathered) / self.world_size
        return averaged

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers of `module` (in place)."""
        if not self.enabled:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            self._collective(dist.broadcast, tensor.data, src=0)

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is True on any (e.g. a stop one rank was asked for)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=self._collective_device)
        self._all_reduce(value, dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks (e.g. a logged loss)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self._collective_device)
        self._all_reduce(tensor, dist.ReduceOp.SUM)
        return tensor.item() / self.world_size

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        self._collective(dist.all_gather_object, gathered, obj)
        return gathered

    def gather_rows(self, rows: torch.Tensor, dst: int) -> torch.Tensor | None:
        """Every rank's `rows` [n, ...] (the same shape on every rank) concatenated in rank
        order, on rank `dst`; None on the others."""
        if not self.enabled:
            return rows
        rows = rows.contiguous()
        parts = [torch.empty_like(rows) for _ in range(self.world_size)]
        self._collective(dist.gather, rows, parts if self.rank == dst else None, dst=dst)
        return torch.cat(parts) if self.rank == dst else None

    def gather_to(self, obj: T, dst: int) -> list[T] | None:
        """Every rank's `obj` (picklable) in rank order, on rank `dst`; None on the others."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] | None = [None] * self.world_size if self.rank == dst else None
        self._collective(dist.gather_object, obj, gathered, dst=dst)
        return gathered

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` (picklable), on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        self._collective(dist.broadcast_object_list, box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        if self.enabled:
            self._collective(dist.barrier)

    def close(self) -> None:
        """Leave the process group (at the end of the run)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _all_reduce(self, tensor: torch.Tensor, op: Any) -> None:
        self._collective(dist.all_reduce, tensor, op=op)

    def _collective(self, operation: Any, *args: Any, **kwargs: Any) -> None:
        try:
            operation(*args, **kwargs)
        except RuntimeError as error:
            message = _failure_message(error, self.rank, self.world_size, self.timeout_s)
            raise RankFailedError(message) from error


def _failure_message(error: RuntimeError, rank: int, world_size: int, timeout_s: float) -> str:
    """What to tell the user when a collective failed: the rank the backend blames, when
    its message names one (in a run of two: the other one)."""
    text = str(error)
    blamed = re.search(r"rank[ :=]*(\d+)", text, flags=re.IGNORECASE)
    if blamed:
        who = f"rank {blamed.group(1)}"
    else:
        who = f"rank {1 - rank}" if world_size == 2 else "another rank"
    return (
        f"rank {rank}: {who} of the run stopped answering (it died, hangs, or waited more "
        f"than {timeout_s:g} s); the run stops without writing anything more. Backend "
        f"error: {text.splitlines()[0] if text else type(error).__name__}"
    )


def split_evenly(total: int, world_size: int, what: str) -> int:
    """`total` / `world_size`, or a ValueError naming `what` when it does not divide."""
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, got {world_size}")
    if total % world_size:
        raise ValueError(
            f"{what} ({total:,}) must divide evenly over the {world_size} processes of the "
            f"run: use a multiple of {world_size}"
        )
    return total // world_size


def take_data_shard(store: Any, context: DistributedContext, batch_size_tokens: int) -> None:
    """Make `store` (an `ActivationsStore`, before it served anything) this rank's part of a
    data-parallel run: it reads every `world_size`-th part of the input dataset and serves
    `batch_size_tokens / world_size` rows a batch. No-op in a run of one process."""
    if not context.enabled:
        return
    store.train_batch_size_tokens = split_evenly(
        batch_size_tokens, context.world_size, "train_batch_size_tokens"
    )
    store.take_shard(context.rank, context.world_size)


def launched_rank() -> int:
    """The rank torchrun gave this process (0 when it did not start it)."""
    return int(os.environ.get("RANK", "0"))


def leave_run() -> None:
    """Leave the run's process group, if this process joined one (at the end of a CLI run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_command(prog: str) -> str:
    """`prog` ("python -m <module>") as this process was started: under torchrun, the
    torchrun command of the same number of processes (a resume needs that number)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return prog
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = "" if per_node == world else f"--nnodes {world // per_node} (and rendezvous) "
    return prog.replace("python ", f"torchrun {nodes}--nproc_per_node {per_node} ", 1)
