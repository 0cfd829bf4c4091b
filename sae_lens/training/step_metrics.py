"""The metrics a training run logs: one step's losses and reconstruction quality, and a
sampling window's firing statistics (5.6.0's keys and values)."""

from __future__ import annotations

from typing import Any

import torch

from sae_lens.training.training_sae import TrainStepOutput

# Rows per chunk when counting latent firings: small enough to stay in cache.
_FIRING_COUNT_CHUNK_ROWS = 256


def item(value: float | torch.Tensor) -> float:
    """A loss term as a Python float."""
    return value.item() if isinstance(value, torch.Tensor) else float(value)


def log_feature_sparsity(feature_sparsity: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """log10 of firing frequencies [d_sae], on the CPU."""
    return torch.log10(feature_sparsity + eps).detach().cpu()


@torch.no_grad()
def sparsity_window_metrics(
    sparsity: torch.Tensor, dead_feature_threshold: float, with_histogram: bool
) -> dict[str, Any]:
    """What a closed sampling window logs, from its firing frequencies `sparsity` [d_sae];
    `with_histogram` adds the wandb histogram of their logs."""
    log_sparsity = log_feature_sparsity(sparsity)
    metrics: dict[str, Any] = {
        "metrics/mean_log10_feature_sparsity": log_sparsity.mean().item(),
        "sparsity/below_1e-5": (sparsity < 1e-5).sum().item(),
        "sparsity/below_1e-6": (sparsity < 1e-6).sum().item(),
        "sparsity/below_dead_feature_threshold": ((sparsity < dead_feature_threshold).sum().item()),
    }
    if with_histogram:
        import wandb

        metrics["plots/feature_density_line_chart"] = wandb.Histogram(log_sparsity.numpy())
    return metrics


@torch.no_grad()
def train_step_metrics(
    output: TrainStepOutput,
    n_training_tokens: int,
    l1_coefficient: float,
    learning_rate: float,
    passes_since_fired: torch.Tensor,
    n_dead: int,
) -> dict[str, Any]:
    """The metrics logged for one training step (5.6.0's keys and values)."""
    target, sae_out = output.trained_towards.float(), output.sae_out.float()  # [batch, d_out]
    per_token_l2 = (sae_out - target).pow(2).sum(-1)  # [batch]
    total_variance = (target - target.mean(0)).pow(2).sum(-1)  # [batch]
    explained_variance = 1 - per_token_l2 / total_variance
    metrics: dict[str, Any] = {
        "losses/overall_loss": output.loss.item(),
        "metrics/explained_variance": explained_variance.mean().item(),
        "metrics/explained_variance_std": explained_variance.std().item(),
        "metrics/l0": (output.feature_acts > 0).float().sum(-1).mean().item(),
        "sparsity/mean_passes_since_fired": passes_since_fired.mean().item(),
        "sparsity/dead_features": n_dead,
        "details/current_learning_rate": learning_rate,
        "details/current_l1_coefficient": l1_coefficient,
        "details/n_training_tokens": n_training_tokens,
    }
    for name, value in output.losses.items():
        if name != "l1_loss":
            metrics[f"losses/{name}"] = item(value)
            continue
        # 5.6.0 reports the L1 loss per unit of the (current) coefficient, and the raw
        # value beside it; with a zero coefficient only the raw value means something.
        if l1_coefficient != 0:
            metrics["losses/l1_loss"] = item(value) / l1_coefficient
        metrics["losses/raw_l1_loss"] = item(value)
    return metrics


def count_nonzero_rows(feature_acts: torch.Tensor) -> torch.Tensor:
    """[d_sae] int64: on how many rows of `feature_acts` each latent is non-zero."""
    # |sign| is 1 where non-zero and 0 elsewhere, and summing it is about 3x faster than
    # count_nonzero on CPU. Counted in row chunks, so the temporary stays in cache; summed
    # in float32, exact below 2**24 rows a chunk.
    counts = torch.zeros(feature_acts.shape[1], dtype=torch.long, device=feature_acts.device)
    for chunk in feature_acts.detach().split(_FIRING_COUNT_CHUNK_ROWS):
        counts += chunk.sign().abs_().sum(dim=0, dtype=torch.float32).long()
    return counts
