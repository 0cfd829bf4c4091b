"""Activation normalisation of the activations store.

With `normalize_activations="expected_average_only_in"` every served activation is
multiplied by one factor, estimated once from training batches, that makes the mean L2
norm of an activation sqrt(d_in); the trainer folds the factor into the SAE's weights at
the end. Any other setting serves activations as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

NORMALIZE_WITH_FACTOR = "expected_average_only_in"
_NOT_SET = (
    "estimated_norm_scaling_factor is not set: call set_norm_scaling_factor_if_needed() first"
)


class ActivationScaler:
    """Holds the normalisation setting and the estimated scaling factor (None until set)."""

    def __init__(self, normalize_activations: str, d_in: int):
        self.normalize_activations = normalize_activations
        self.d_in = d_in
        self.scaling_factor: float | None = None

    @property
    def needs_estimate(self) -> bool:
        """True while the setting asks for a factor and none is set yet."""
        return self.normalize_activations == NORMALIZE_WITH_FACTOR and self.scaling_factor is None

    def check_ready(self) -> None:
        """Raise if activations cannot be served yet because the factor is missing."""
        if self.normalize_activations == NORMALIZE_WITH_FACTOR and self.scaling_factor is None:
            raise ValueError(_NOT_SET)  # the condition of `needs_estimate`, inlined: per batch

    def scale(self, activations: torch.Tensor) -> torch.Tensor:
        """`activations` [..., d_in] times the factor (which must be set)."""
        if self.scaling_factor is None:
            raise ValueError(_NOT_SET)
        return activations * self.scaling_factor

    def unscale(self, activations: torch.Tensor) -> torch.Tensor:
        """Undo `scale`: `activations` [..., d_in] divided by the factor."""
        if self.scaling_factor is None:
            raise ValueError(_NOT_SET)
        return activations / self.scaling_factor

    def for_serving(self, activations: torch.Tensor) -> torch.Tensor:
        """`activations` [..., d_in] as the store serves them: scaled if the setting asks."""
        if self.normalize_activations == NORMALIZE_WITH_FACTOR:
            return self.scale(activations)
        return activations

    def factor_for(self, activations: torch.Tensor) -> torch.Tensor:
        """sqrt(d_in) / mean L2 norm of `activations` [..., d_in]."""
        return (self.d_in**0.5) / activations.norm(dim=-1).mean()

    @torch.no_grad()
    def estimate(self, next_batch: Callable[[], torch.Tensor], n_batches: int) -> float:
        """The factor that makes the mean activation norm sqrt(d_in), averaged over
        `n_batches` unscaled batches [batch, ..., d_in] drawn from `next_batch`."""
        if n_batches < 1:
            raise ValueError(f"n_batches_for_norm_estimate must be >= 1, got {n_batches}")
        total = 0.0
        for _ in tqdm(range(n_batches), desc="Estimating norm scaling factor", delay=2.0):
            total += next_batch().norm(dim=-1).mean().item()
        return self.d_in**0.5 / (total / n_batches)
