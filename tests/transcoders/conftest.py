"""Builders shared by the transcoder tests: small transcoder configs and perturbed
transcoders (so zero-initialised biases and W_skip matter)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens import HookedTransformer

from sae_lens.analysis.hooked_sae_transformer import HookedSAETransformer
from tests.analysis.test_hooked_sae_transformer import with_sae_support
from tests.conftest import build_tiny_tl_model
from tests.sae_configs import training_sae_cfg_dict
from tests.training.test_activations_store import word_tokenizer

# The architectures a transcoder may have (the list).
ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")
OUT_HOOK = "blocks.0.hook_mlp_out"


def transcoder_cfg_dict(
    architecture: str = "standard",
    *,
    d_in: int = 6,
    d_sae: int = 12,
    d_out: int = 5,
    skip_connection: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Every TrainingSAEConfig field of a small transcoder from `blocks.0.ln2.hook_normalized`
    to `blocks.0.hook_mlp_out`; topk and batchtopk keep k=3."""
    cfg = training_sae_cfg_dict(
        architecture,
        d_in=d_in,
        d_sae=d_sae,
        k=3,
        hook_name="blocks.0.ln2.hook_normalized",
        hook_name_out=OUT_HOOK,
        d_out=d_out,
        skip_connection=skip_connection,
        apply_b_dec_to_input=False,
    )
    if architecture == "batchtopk":
        cfg["activation_fn_kwargs"] = {"k": 3}
    cfg.update(overrides)
    return cfg


def perturb_(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Move every parameter of `module` by N(0, scale^2) noise, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


@pytest.fixture
def pair() -> tuple[HookedSAETransformer, HookedTransformer]:
    """The tiny model as a HookedSAETransformer and as a plain HookedTransformer."""
    return with_sae_support(build_tiny_tl_model())


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    """The tiny model of the activation-store tests (seed 1, a word tokenizer)."""
    tiny = build_tiny_tl_model(seed=1)
    tiny.tokenizer = word_tokenizer()
    return tiny
