"""Fixtures for the evals tests: SAEs with random weights, and a store serving fixed tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from sae_lens.sae import SAE
from tests.sae_configs import random_relu_sae


def build_sae(
    hook_name: str, d_in: int = 16, d_sae: int = 24, seed: int = 0, **cfg_overrides: Any
) -> SAE:
    """A standard ReLU SAE whose parameters are all random (so latents fire on some tokens)."""
    overrides = dict(model_name="tiny", dataset_path="", context_size=8)
    return random_relu_sae(
        hook_name, d_in=d_in, d_sae=d_sae, seed=seed, **{**overrides, **cfg_overrides}
    )


class FixedTokensStore:
    """The part of ActivationsStore that run_evals uses, serving given batches in order."""

    def __init__(
        self,
        batches: list[torch.Tensor],
        normalize_activations: str = "none",
        scaling_factor: float = 1.0,
    ):
        self.batches = batches
        self.position = 0
        self.context_size = batches[0].shape[1]
        self.store_batch_size_prompts = batches[0].shape[0]
        self.normalize_activations = normalize_activations
        self.scaling_factor = scaling_factor

    def get_batch_tokens(self, batch_size: int | None = None) -> torch.Tensor:
        assert batch_size in (None, self.store_batch_size_prompts)
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch

    def apply_norm_scaling_factor(self, activations: torch.Tensor) -> torch.Tensor:
        return activations * self.scaling_factor

    def unscale(self, activations: torch.Tensor) -> torch.Tensor:
        return activations / self.scaling_factor


@pytest.fixture
def make_sae() -> Callable[..., SAE]:
    return build_sae


@pytest.fixture
def make_store() -> type[FixedTokensStore]:
    return FixedTokensStore


@pytest.fixture
def token_batches() -> list[torch.Tensor]:
    """Two batches of 3 prompts x 8 tokens from the tiny model's 50-token vocabulary."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(1, 50, (3, 8), generator=generator) for _ in range(2)]
