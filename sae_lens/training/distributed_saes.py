"""A multi-SAE run whose SAEs are spread over the processes of a torchrun run
(`distribute_saes`), as sparsify's module distribution does.

Every rank runs the model on its own part of each batch and keeps an activations store for
every SAE (it serves that rank's rows). Each SAE belongs to one rank (`assign_owners`),
which trains it on the whole batch: every step, each SAE's rows are gathered from all ranks
onto its owner, in rank order, so an SAE sees the rows a data-parallel run would average
its gradient over. Checkpoints are written by each SAE's owner and hold every rank's
position in that SAE's store, so a resume with the same number of processes continues
exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sae_lens.training import checkpoints
from sae_lens.training.distributed import DistributedContext

if TYPE_CHECKING:
    from sae_lens.training.sae_trainer import SAETrainer


def assign_owners(sizes: dict[str, int], world_size: int) -> dict[str, int]:
    """The rank owning each SAE (`sizes`: name -> parameter count, in config order): largest
    first, each to the rank with the least so far (the lower rank on ties)."""
    if len(sizes) < world_size:
        raise ValueError(
            f"distribute_saes spreads {len(sizes)} SAE(s) over {world_size} processes: each "
            "process needs at least one; use fewer processes or data parallel "
            "(distribute_saes: false)"
        )
    order = list(sizes)
    load = [0] * world_size
    owners: dict[str, int] = {}
    for name in sorted(order, key=lambda n: (-sizes[n], order.index(n))):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[name] = rank
        load[rank] += sizes[name]
    return {name: owners[name] for name in order}


class SpreadSAEs:
    """The collective steps of a run with SAEs spread over ranks: every rank calls each
    method at the same point, with the same SAE names in the same order."""

    def __init__(self, context: DistributedContext, owners: dict[str, int]):
        self.context = context
        self.owners = owners

    def owns(self, name: str) -> bool:
        """True when this rank trains SAE `name`."""
        return self.owners[name] == self.context.rank

    def gather_batches(self, local: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{name: whole batch} of the SAEs this rank owns, from every SAE's rows [n, width]
        on every rank."""
        gathered = {}
        for name, rows in local.items():
            whole = self.context.gather_rows(rows, dst=self.owners[name])
            if whole is not None:
                gathered[name] = whole
        return gathered

    def save_checkpoints(
        self,
        checkpoint_name: str,
        stores: dict[str, Any],
        eval_stores: dict[str, Any],
        trainers: dict[str, SAETrainer],
        own_rng: Callable[[str], AbstractContextManager[None]],
    ) -> None:
        """Checkpoint `checkpoint_name` of every SAE, each written by its owner with every
        rank's state of that SAE's store (`trainers`: this rank's; `own_rng(name)`: a block
        in which torch's random state is that SAE's own)."""
        for name, store in stores.items():
            with own_rng(name) if self.owns(name) else nullcontext():
                own_state = checkpoints.rank_state(store, eval_stores.get(name))
            states = self.context.gather_to(own_state, dst=self.owners[name])
            if states is not None:
                trainer = trainers[name]
                folder = Path(trainer.cfg.checkpoint_path) / checkpoint_name
                checkpoints.save_training_checkpoint(trainer, folder, rank_states=states)

    def restore(
        self,
        states: dict[str, dict[str, Any]],
        stores: dict[str, Any],
        trainers: dict[str, SAETrainer],
    ) -> None:
        """Load each SAE's checkpoint state: the owner's trainer (its SAE, optimizer, stores
        and random state), and every other rank's position in the SAE's store."""
        rank = self.context.rank
        for name, state in states.items():
            if self.owns(name):
                checkpoints.restore_training_state(trainers[name], state, rank=rank)
            else:
                own = checkpoints.own_rank_state(state, rank)
                stores[name].load_checkpoint_state(own["activations_store"])
