"""The decoder-row upkeep of 5.6.0's default training (rows renormalised after each step,
their gradient projected before it) runs as one-pass CPU kernels; they must compute the
torch formulas."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from sae_lens import LanguageModelSAERunnerConfig
from sae_lens.saes import cpu_kernels
from sae_lens.training.training_sae import TrainingSAE, TrainingSAEConfig


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d"), [(37, 13), (1, 1), (300, 65)])
def test_row_kernels_match_the_torch_formulas(dtype: torch.dtype, n: int, d: int) -> None:
    g = torch.Generator().manual_seed(n * d)
    rows = torch.randn(n, d, generator=g, dtype=dtype)
    grad = torch.randn(n, d, generator=g, dtype=dtype)
    unit = rows / rows.norm(dim=1, keepdim=True)
    expected_grad = grad - (grad * unit).sum(-1, keepdim=True) * unit
    cpu_kernels.normalize_rows_(rows)
    cpu_kernels.project_out_rows_(grad, rows)
    assert_close(rows, unit)
    assert_close(grad, expected_grad)


def test_a_zero_row_turns_nan_as_torch_division_does() -> None:
    rows = torch.ones(3, 4)
    rows[1] = 0.0
    cpu_kernels.normalize_rows_(rows)
    assert rows[1].isnan().all() and not rows[[0, 2]].isnan().any()


def _sae(d_in: int, d_sae: int) -> TrainingSAE:
    cfg = LanguageModelSAERunnerConfig(d_in=d_in, d_sae=d_sae, log_to_wandb=False, device="cpu")
    return TrainingSAE(TrainingSAEConfig.from_sae_runner_config(cfg))  # 5.6.0's defaults


@pytest.mark.parametrize(("d_in", "d_sae"), [(7, 19), (64, 1031)])  # torch ops, kernels
def test_training_sae_upkeep_matches_the_formulas(d_in: int, d_sae: int) -> None:
    torch.manual_seed(0)
    sae = _sae(d_in, d_sae)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(d_sae, 1) + 0.5)  # rows of various norms
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    W, grad = sae.W_dec.detach().clone(), sae.W_dec.grad.clone()
    sae.set_decoder_norm_to_unit_norm()
    unit = W / W.norm(dim=1, keepdim=True)
    assert_close(sae.W_dec.data, unit)
    sae.before_optimizer_step()
    assert_close(sae.W_dec.grad, grad - (grad * unit).sum(-1, keepdim=True) * unit)
