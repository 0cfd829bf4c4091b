"""ActivationScaler: the factor makes the mean activation norm sqrt(d_in), scaling is undone
exactly, and serving without a factor fails with the 5.6.0 message."""

from __future__ import annotations

import pytest
import torch

from sae_lens.training.activation_scaler import ActivationScaler

D_IN = 4


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 1, D_IN, generator=gen) * (i + 1) for i in range(n)]


def test_estimate_averages_the_mean_norm_of_each_batch() -> None:
    scaler = ActivationScaler("expected_average_only_in", D_IN)
    data = batches(3)
    factor = scaler.estimate(iter(data).__next__, n_batches=3)
    mean_norm = sum(b.norm(dim=-1).mean().item() for b in data) / 3
    assert factor == pytest.approx(D_IN**0.5 / mean_norm)
    torch.testing.assert_close(scaler.factor_for(data[0]), D_IN**0.5 / data[0].norm(dim=-1).mean())
    with pytest.raises(ValueError, match="n_batches_for_norm_estimate must be >= 1, got 0"):
        scaler.estimate(iter(data).__next__, n_batches=0)


def test_served_activations_are_scaled_and_unscale_undoes_it() -> None:
    scaler = ActivationScaler("expected_average_only_in", D_IN)
    assert scaler.needs_estimate
    with pytest.raises(ValueError, match="call set_norm_scaling_factor_if_needed"):
        scaler.check_ready()
    scaler.scaling_factor = 2.5
    assert not scaler.needs_estimate
    scaler.check_ready()
    acts = batches(1)[0]
    torch.testing.assert_close(scaler.for_serving(acts), acts * 2.5)
    torch.testing.assert_close(scaler.unscale(scaler.scale(acts)), acts)


def test_without_normalisation_activations_are_served_as_they_are() -> None:
    scaler = ActivationScaler("none", D_IN)
    acts = batches(1)[0]
    scaler.check_ready()
    assert not scaler.needs_estimate and scaler.for_serving(acts) is acts
    with pytest.raises(ValueError, match="estimated_norm_scaling_factor is not set"):
        scaler.scale(acts)
