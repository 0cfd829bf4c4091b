"""Gradient accumulation (`gradient_accumulation_steps` = n): the trainer splits each
batch of `train_batch_size_tokens` into n equal micro-batches, runs forward and backward
on each with its loss divided by n, and steps once. Every training loss is a mean over the
batch's tokens, so the summed gradient is the whole batch's (up to float rounding; the
`dense_batch` MSE normalisation and AuxK's dead-latent count are then per micro-batch). The
memory of the training graph (the activations kept for backward and their gradients) is
that of one micro-batch; the step's output, merged here for statistics and logs, still
covers the whole batch.
"""

from __future__ import annotations

import torch

from sae_lens.training.training_sae import TrainStepOutput


def merge_micro_batch_outputs(outputs: list[TrainStepOutput]) -> TrainStepOutput:
    """One `TrainStepOutput` for the whole batch from its micro-batches' (in order):
    tensors [micro, ...] concatenated (detached), the loss and each loss term the mean of
    the micro-batches' values, as the whole batch's would be."""

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(o, name).detach() for o in outputs])

    def mean(values: list[float | torch.Tensor]) -> float | torch.Tensor:
        total = sum(v.detach() if isinstance(v, torch.Tensor) else v for v in values)
        return total / len(values)

    losses = {name: mean([o.losses[name] for o in outputs]) for name in outputs[0].losses}
    loss = mean([o.loss for o in outputs])
    return TrainStepOutput(
        sae_in=cat("sae_in"),
        sae_out=cat("sae_out"),
        feature_acts=cat("feature_acts"),
        hidden_pre=cat("hidden_pre"),
        loss=loss if isinstance(loss, torch.Tensor) else torch.tensor(loss),
        losses=losses,
        target=None if outputs[0].target is None else cat("target"),
    )
