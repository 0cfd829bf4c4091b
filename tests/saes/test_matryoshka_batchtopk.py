"""Matryoshka BatchTopK: the loss adds the reconstruction error of every nested prefix of
the latents (`matryoshka_widths`) to BatchTopK's; widths are validated with one-line
errors and default to quartering levels of d_sae."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.testing import assert_close

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.matryoshka_batchtopk import default_matryoshka_widths
from tests.saes.test_batchtopk import D_SAE, K, batch, dense_batch_topk, direct_losses, make_sae

WIDTHS = [4, 13, 30, D_SAE]


def direct_inner_losses(
    params: dict[str, torch.Tensor], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """For each inner width w: the MSE of (the first w latents of the BatchTopK acts) @
    (the first w decoder rows) + b_dec."""
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
    acts = dense_batch_topk(pre, K * x.shape[0], params["W_dec"].detach().norm(dim=1))
    return {
        f"inner_mse_loss_{w}": ((acts[:, :w] @ params["W_dec"][:w] + params["b_dec"] - x) ** 2)
        .sum(-1)
        .mean()
        for w in WIDTHS[:-1]
    }


@pytest.mark.parametrize("path", ["sparse", "step by step"])
def test_losses_and_gradients_match_the_direct_formulas(path: str) -> None:
    sae = make_sae("matryoshka_batchtopk", matryoshka_widths=WIDTHS)
    if path == "step by step":
        sae.hook_sae_acts_pre.add_hook(lambda acts, hook: acts)
    x = batch(seed=4)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[1::3] = True
    out = sae.training_forward_pass(x, current_l1_coefficient=1.0, dead_neuron_mask=dead)
    out.loss.backward()

    params = {n: p.detach().clone().requires_grad_() for n, p in sae.named_parameters()}
    expected = {**direct_losses(params, x, dead), **direct_inner_losses(params, x)}
    sum(expected.values()).backward()  # type: ignore[union-attr]
    assert set(out.losses) == set(expected)
    for name, value in expected.items():
        assert_close(torch.as_tensor(out.losses[name]), value.detach(), msg=name)
    assert_close(out.loss, sum(expected.values()))  # type: ignore[arg-type]
    for name, param in sae.named_parameters():
        assert_close(param.grad, params[name].grad, msg=name)


def test_default_widths_quarter_down_from_d_sae() -> None:
    assert default_matryoshka_widths(2048) == [32, 128, 512, 2048]
    assert default_matryoshka_widths(512) == [32, 128, 512]  # no level under 16 latents
    assert default_matryoshka_widths(1000) == [62, 250, 1000]
    assert default_matryoshka_widths(40) == [40]
    sae = make_sae("matryoshka_batchtopk")  # matryoshka_widths None: D_SAE 40 -> one level
    out = sae.training_forward_pass(batch(), current_l1_coefficient=1.0)
    assert not any(name.startswith("inner_mse_loss") for name in out.losses)


def run_cfg(**overrides: Any) -> LanguageModelSAERunnerConfig:
    return LanguageModelSAERunnerConfig(
        architecture="matryoshka_batchtopk",
        activation_fn_kwargs={"k": 16},
        d_sae=512,
        log_to_wandb=False,
        verbose=False,
        **overrides,
    )


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        ([64, 32, 512], r"matryoshka_widths must be strictly increasing, got \[64, 32, 512\]"),
        ([0, 512], "matryoshka_widths must be positive"),
        ([64, 256], "matryoshka_widths must end at d_sae=512 .*got \\[64, 256\\]"),
        ([], "matryoshka_widths must be a non-empty list"),
        ([64.5, 512], "matryoshka_widths must hold ints"),
    ],
)
def test_bad_widths_are_refused_when_the_config_is_built(widths: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_cfg(matryoshka_widths=widths)


def test_widths_reach_the_training_sae() -> None:
    from sae_lens.training.training_sae import TrainingSAEConfig

    cfg = TrainingSAEConfig.from_sae_runner_config(run_cfg(matryoshka_widths=[64, 128, 512]))
    assert cfg.matryoshka_widths == [64, 128, 512]
