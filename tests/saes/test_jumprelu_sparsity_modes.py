"""JumpReLU's tanh sparsity loss and pre-activation loss (SAELens 6's options): values and
gradients against the plain formulas, on the fused training step (CPU kernels and torch
ops) and on the step-by-step path."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.testing import assert_close

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes import cpu_kernels
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import perturbed_training_sae, training_sae_cfg_dict

N, D_IN, D_SAE = 10, 5, 12
BANDWIDTH, L1, TANH_SCALE = 0.5, 0.7, 3.0


def make_sae(**overrides: Any) -> TrainingSAE:
    cfg = training_sae_cfg_dict(
        "jumprelu",
        d_in=D_IN,
        d_sae=D_SAE,
        dtype="float64",
        jumprelu_init_threshold=0.3,
        jumprelu_bandwidth=BANDWIDTH,
        **overrides,
    )
    return perturbed_training_sae(cfg)


def direct_losses(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    dead: torch.Tensor,
    mode: str,
    pre_act: float | None,
) -> dict[str, torch.Tensor]:
    """The losses written out. The threshold's straight-through gradient through the
    JumpReLU, -(theta / bandwidth) * rectangle((z - theta) / bandwidth), enters as a term
    that is 0 in value; the step's, -(1 / bandwidth) * rectangle(...), likewise."""
    theta = params["log_threshold"].exp()
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]  # [n, d_sae]
    window = (((pre - theta) / BANDWIDTH).abs() < 0.5).to(pre).detach()
    zero_with_grad = theta - theta.detach()
    acts = pre * (pre > theta) - (theta.detach() / BANDWIDTH) * window * zero_with_grad
    out = acts @ params["W_dec"] + params["b_dec"]
    norms = params["W_dec"].norm(dim=1)
    if mode == "tanh":
        penalty = torch.tanh(TANH_SCALE * acts * norms).sum(-1)
    else:
        penalty = ((pre > theta).to(pre) - window / BANDWIDTH * zero_with_grad).sum(-1)
    losses = {"mse_loss": ((out - x) ** 2).sum(-1).mean(), "l0_loss": (L1 * penalty).mean()}
    if pre_act is not None:
        gap = (theta - pre).relu() * dead * norms
        losses["pre_act_loss"] = pre_act * gap.sum(-1).mean()
    return losses


@pytest.fixture(params=["fused, cpu kernels", "fused, torch ops", "step by step"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fused, torch ops":
        monkeypatch.setattr(cpu_kernels, "serves", lambda *tensors: False)
    return request.param


@pytest.mark.parametrize(("mode", "pre_act"), [("tanh", None), ("tanh", 0.4), ("step", 0.4)])
def test_losses_and_gradients_match_the_direct_formulas(
    path: str, mode: str, pre_act: float | None
) -> None:
    sae = make_sae(
        jumprelu_sparsity_loss_mode=mode,
        jumprelu_tanh_scale=TANH_SCALE,
        pre_act_loss_coefficient=pre_act,
    )
    if path == "step by step":
        sae.hook_sae_acts_post.add_hook(lambda acts, hook: acts)
    x = torch.randn(N, D_IN, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    out = sae.training_forward_pass(x, current_l1_coefficient=L1, dead_neuron_mask=dead)
    out.loss.backward()

    params = {n: p.detach().clone().requires_grad_() for n, p in sae.named_parameters()}
    expected = direct_losses(params, x, dead, mode, pre_act)
    sum(expected.values()).backward()  # type: ignore[union-attr]
    assert set(out.losses) == set(expected)
    for name, value in expected.items():
        assert_close(torch.as_tensor(out.losses[name]), value.detach(), msg=name)
    for name, param in sae.named_parameters():
        assert_close(param.grad, params[name].grad, msg=name)
    assert params["log_threshold"].grad.abs().sum() > 0  # the window caught some latents


def test_pre_act_loss_is_zero_without_dead_latents() -> None:
    sae = make_sae(pre_act_loss_coefficient=1.0)
    x = torch.randn(N, D_IN, dtype=torch.float64)
    out = sae.training_forward_pass(x, current_l1_coefficient=L1, dead_neuron_mask=None)
    assert float(out.losses["pre_act_loss"]) == 0.0


def test_step_mode_stays_the_default() -> None:
    cfg = LanguageModelSAERunnerConfig(architecture="jumprelu", log_to_wandb=False, verbose=False)
    assert (cfg.jumprelu_sparsity_loss_mode, cfg.pre_act_loss_coefficient) == ("step", None)
    out = make_sae().training_forward_pass(torch.randn(N, D_IN, dtype=torch.float64), L1)
    assert set(out.losses) == {"mse_loss", "l0_loss"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"jumprelu_sparsity_loss_mode": "quadratic"},
            r"must be one of \['step', 'tanh'\], got 'quadratic'",
        ),
        ({"jumprelu_tanh_scale": 0.0}, "jumprelu_tanh_scale must be > 0, got 0.0"),
        ({"pre_act_loss_coefficient": -1.0}, "pre_act_loss_coefficient must be >= 0 or None"),
    ],
)
def test_bad_options_are_refused_when_the_config_is_built(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LanguageModelSAERunnerConfig(
            architecture="jumprelu", log_to_wandb=False, verbose=False, **overrides
        )
