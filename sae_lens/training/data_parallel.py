"""Setting up a data-parallel training run (see `sae_lens.training.distributed`): what the
runners do once per process, so that every rank starts from the same SAE and run folder
and reads its own part of the data."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from sae_lens.training.distributed import DistributedContext, split_evenly, take_data_shard

if TYPE_CHECKING:
    from sae_lens.config import LanguageModelSAERunnerConfig


def join_run(cfg: LanguageModelSAERunnerConfig) -> DistributedContext:
    """This process's place in the run `cfg` configures (a run of one process unless torchrun
    started it). Checks up front what a data-parallel run cannot do, puts a CUDA run on the
    rank's GPU and gives every rank rank 0's run folder (its id is drawn at random)."""
    context = DistributedContext.from_environment(cfg.device)
    if not context.enabled:
        return context
    split_evenly(cfg.train_batch_size_tokens, context.world_size, "train_batch_size_tokens")
    if cfg.use_cached_activations:
        raise ValueError(
            "data-parallel training reads activations from the model; training from cached "
            "activations runs in one process (drop torchrun or use_cached_activations)"
        )
    place_on_rank(cfg, context)
    cfg.checkpoint_path = context.broadcast(cfg.checkpoint_path)
    if not context.is_main:  # one progress bar: rank 0's
        os.environ["TQDM_DISABLE"] = "1"
    return context


def place_on_rank(cfg: LanguageModelSAERunnerConfig, context: DistributedContext) -> None:
    """A CUDA run's model, SAE and store on this rank's GPU (`cuda:<LOCAL_RANK>`)."""
    if context.device.type != "cuda":
        return
    if torch.device(cfg.act_store_device) == torch.device(cfg.device):
        cfg.act_store_device = str(context.device)
    cfg.device = str(context.device)


def shard_stores(
    context: DistributedContext, cfg: LanguageModelSAERunnerConfig, *stores: Any
) -> None:
    """Each store (None skipped) reads this rank's part of its dataset and serves its share
    of `train_batch_size_tokens`."""
    for store in stores:
        if store is not None:
            take_data_shard(store, context, cfg.train_batch_size_tokens)


def agree_on_start(context: DistributedContext, sae: torch.nn.Module, store: Any) -> None:
    """Every rank starts from rank 0's SAE (b_dec was set from each rank's own data) and
    scales activations by one factor: that of the mean activation norm over all ranks."""
    if not context.enabled:
        return
    context.broadcast_module(sae)
    if store.estimated_norm_scaling_factor is None:
        store.set_norm_scaling_factor_if_needed()
    agree_on_scaling_factor(context, store)


def agree_on_scaling_factor(context: DistributedContext, store: Any) -> None:
    """Give `store` (on every rank) the factor of the mean activation norm over the ranks'
    estimates, each from its own data (a factor is sqrt(d_in) / mean norm, so the norms are
    averaged, not the factors). Every rank calls it for the same stores, in one order."""
    factor = store.estimated_norm_scaling_factor
    if context.enabled and factor is not None:
        store.estimated_norm_scaling_factor = 1.0 / context.mean(1.0 / factor)
