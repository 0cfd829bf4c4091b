"""Stacked steps: a multi-SAE run steps its SAEs of one shape and architecture together.

SAEs whose architectures give them one `stack_key` (same architecture, widths and the
options their forward depends on, e.g. TopK's k) run their training forwards as one batched
pass over stacked weights (`Architecture.stacked_training_forward`) and one backward of the
sum of their losses; each SAE's gradient is its own loss's (the SAEs share no parameter).
Each trainer then does the rest of its step as usual (clipping, optimizer, statistics,
logging, checkpoints) through `SAETrainer.train_on_batch(batch, stepped=...)`.

On a GPU one batched matmul for n small SAEs keeps the device busy where n matmuls one after
another leave it idle between kernels. On a CPU the batched matmuls are no faster and the
SAEs' one-pass CPU kernels would be lost, so `stack_saes="auto"` stacks only on CUDA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sae_lens.training.sae_trainer import SAETrainer
from sae_lens.training.training_sae import TrainStepOutput


def stacking_on(setting: str | bool, device: str | torch.device) -> bool:
    """Whether a run with `stack_saes=setting` on `device` steps same-shape SAEs together."""
    if setting == "auto":
        return torch.device(device).type == "cuda"
    return bool(setting)


def stack_groups(
    trainers: Mapping[str, SAETrainer], batches: Mapping[str, torch.Tensor]
) -> list[list[str]]:
    """The trainers' names in groups that step together (in the order of their first
    member); an SAE that cannot be stacked with any other forms a group of its own. Call
    it after the trainers' `begin_step()`: the keys depend on the step's k and on the SAEs
    being in training mode."""
    groups: dict[Any, list[str]] = {}
    for name, trainer in trainers.items():
        key = _stack_key(trainer, batches[name])
        groups.setdefault(("alone", name) if key is None else key, []).append(name)
    return list(groups.values())


def _stack_key(trainer: SAETrainer, batch: torch.Tensor) -> tuple[Any, ...] | None:
    cfg, sae = trainer.cfg, trainer.sae
    if cfg.gradient_accumulation_steps > 1 or cfg.autocast or cfg.compile_sae:
        return None  # the trainer's own forward: micro-batches, autocast, a compiled forward
    if batch.shape[-1] != sae.cfg.d_in:  # a transcoder's batch holds its target too
        return None
    key = sae.architecture.stack_key(sae, batch)
    return None if key is None else (key, batch.shape, batch.dtype, batch.device, sae.dtype)


def stacked_forward_and_backward(
    trainers: Sequence[SAETrainer], batches: Sequence[torch.Tensor]
) -> list[TrainStepOutput]:
    """The training forward of every trainer's SAE on its batch [batch, d_in] in one
    stacked pass (the trainers' `begin_step()` called first), and one backward of the sum
    of their losses; returns each SAE's step output, for `train_on_batch(stepped=...)`."""
    saes = [trainer.sae for trainer in trainers]
    xs = [sae.process_sae_in(batch) for sae, batch in zip(saes, batches, strict=True)]
    forwards = saes[0].architecture.stacked_training_forward(saes, torch.stack(xs))
    outputs = [
        trainer.sae.training_step_output(
            batch, x, forward, trainer.current_l1_coefficient, trainer.dead_neurons
        )
        for trainer, batch, x, forward in zip(trainers, batches, xs, forwards, strict=True)
    ]
    torch.stack([output.loss for output in outputs]).sum().backward()
    return outputs
