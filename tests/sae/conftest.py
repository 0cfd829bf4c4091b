"""Factories for small SAEs with random weights, shared by the SAE tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from sae_lens.sae import SAE
from tests.sae_configs import sae_cfg_dict

D_IN, D_SAE, K = 6, 10, 3


def make_cfg_dict(architecture: str = "standard", **overrides: Any) -> dict[str, Any]:
    """A complete cfg.json-style dict for a tiny SAE (topk gets k=3)."""
    return sae_cfg_dict(architecture, d_in=D_IN, d_sae=D_SAE, k=K, **overrides)


def make_random_sae(architecture: str = "standard", seed: int = 0, **overrides: Any) -> SAE:
    """An SAE whose every parameter is random (biases too; thresholds positive)."""
    torch.manual_seed(seed)
    sae = SAE.from_dict(make_cfg_dict(architecture, **overrides))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.normal_(0, 0.5)
            if name == "threshold":
                p.abs_()
    return sae


@pytest.fixture
def cfg_dict() -> Callable[..., dict[str, Any]]:
    return make_cfg_dict


@pytest.fixture
def random_sae() -> Callable[..., SAE]:
    return make_random_sae
