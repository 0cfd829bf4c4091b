"""Fixtures of the dashboard tests: SAEs with random weights (so latents fire on a good
share of tokens), the tiny config-built model with random tokens, and one dashboard built
on the embedded model and corpus, written to a folder the page tests open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sae_lens.dashboard import DashboardData, DashboardSettings, build_dashboard
from sae_lens.sae import SAE
from tests.conftest import build_tiny_tl_model
from tests.sae_configs import random_relu_sae

TINY_HOOK = "blocks.0.hook_resid_post"
EMBEDDED_FEATURES = list(range(12))


def random_sae(
    d_in: int, d_sae: int, hook_name: str = TINY_HOOK, seed: int = 0, **overrides: Any
) -> SAE:
    """A ReLU SAE whose parameters are all random (scaled so latents fire often)."""
    defaults = dict(model_name="tiny-pydoc-gpt2", dataset_path="pydoc-corpus", context_size=16)
    return random_relu_sae(
        hook_name, d_in=d_in, d_sae=d_sae, seed=seed, **{**defaults, **overrides}
    )


@pytest.fixture(scope="module")
def tiny_setup() -> tuple[Any, SAE, torch.Tensor]:
    """(the tiny 2-layer model without tokenizer, a random SAE on its layer-0 residual,
    24 sequences x 12 random tokens)."""
    model = build_tiny_tl_model()
    sae = random_sae(model.cfg.d_model, 20)
    tokens = torch.randint(
        0, model.cfg.d_vocab, (24, 12), generator=torch.Generator().manual_seed(1)
    )
    return model, sae, tokens


@pytest.fixture(scope="session")
def embedded_dashboard(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Any
) -> tuple[DashboardData, Path]:
    """Dashboards of 12 latents of a random SAE on the embedded model, over 3,000 tokens
    of the embedded corpus, written (page, JSON, Neuronpedia batches) to a folder."""
    sae = random_sae(embedded_model.cfg.d_model, 64, seed=3)
    folder = tmp_path_factory.mktemp("dashboard")
    settings = DashboardSettings(n_tokens=3_000, batch_size_prompts=8, n_top_examples=8)
    data = build_dashboard(
        sae,
        EMBEDDED_FEATURES,
        settings,
        model=embedded_model,
        output_dir=folder,
        sae_name="random-sae",
        progress=False,
    )
    return data, folder
