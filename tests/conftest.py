"""Fixtures shared by the whole suite: a tiny model built from a config, and the embedded
default model and tokenizer (offline, shipped with the package)."""

from __future__ import annotations

import os

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

# The suite's tensors are tiny: one intra-op thread avoids thread contention that makes
# small ops orders of magnitude slower on a busy 2-core machine. Subprocesses (CLI tests,
# notebook kernels) inherit the same setting through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def build_tiny_tl_model(seed: int = 0, **overrides: object) -> HookedTransformer:
    """A 2-layer HookedTransformer with random weights and no tokenizer."""
    cfg_kwargs: dict[str, object] = dict(
        n_layers=2,
        d_model=16,
        d_head=4,
        n_heads=4,
        d_mlp=32,
        n_ctx=32,
        d_vocab=50,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    cfg_kwargs.update(overrides)
    model = HookedTransformer(HookedTransformerConfig(**cfg_kwargs))  # type: ignore[arg-type]
    model.eval()
    return model


@pytest.fixture
def tiny_tl_model() -> HookedTransformer:
    return build_tiny_tl_model()


@pytest.fixture(scope="session")
def embedded_model() -> HookedTransformer:
    """The embedded default model as a HookedTransformer (shared: do not modify it)."""
    from sae_lens.embedded import load_embedded_hooked_transformer

    model = load_embedded_hooked_transformer()
    model.eval()
    return model


@pytest.fixture(scope="session")
def embedded_tokenizer():  # noqa: ANN201
    from sae_lens.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()
