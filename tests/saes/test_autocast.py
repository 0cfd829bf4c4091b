"""Training steps under autocast (bfloat16 matmuls, as `autocast=True` runs them) work for
every architecture and stay close to the float32 step: the sparse decoders of the TopK
family take the encoder's half-precision values."""

from __future__ import annotations

import pytest
import torch

from tests.sae_configs import SAE_ARCHITECTURES, perturbed_training_sae, training_sae_cfg_dict


@pytest.mark.parametrize("architecture", SAE_ARCHITECTURES)
def test_a_training_step_under_autocast_matches_the_float32_step(architecture: str) -> None:
    cfg = training_sae_cfg_dict(
        architecture, d_in=16, d_sae=64, l1_coefficient=0.3, activation_fn_kwargs={"k": 4}
    )
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(2))
    results = []
    for autocast in (False, True):
        sae = perturbed_training_sae(cfg)
        sae.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = sae.training_forward_pass(sae_in=x, current_l1_coefficient=0.3)
        out.loss.backward()
        assert sae.W_dec.grad is not None and sae.W_dec.grad.dtype == torch.float32
        results.append((out.loss.detach().float(), sae.W_dec.grad.clone()))
    (loss32, grad32), (loss16, grad16) = results
    assert torch.isfinite(loss16)
    assert loss16 == pytest.approx(loss32.item(), rel=0.05)
    assert torch.nn.functional.cosine_similarity(grad16.flatten(), grad32.flatten(), dim=0) > 0.99
