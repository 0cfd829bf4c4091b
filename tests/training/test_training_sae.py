"""TrainingSAE: each architecture's losses and gradients against hand computations, the
initialisation options, decoder-norm upkeep around the optimiser step, and saving."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.sae import SAE, SAEConfig
from sae_lens.training.training_sae import (
    JumpReLU,
    Step,
    TrainingSAE,
    TrainingSAEConfig,
    rectangle,
)
from tests.sae_configs import training_sae_cfg_dict

D_IN, D_SAE = 5, 8


def training_cfg(architecture: str = "standard", **overrides: Any) -> dict[str, Any]:
    base = dict(dtype="float64", jumprelu_init_threshold=0.3, jumprelu_bandwidth=0.5)
    return training_sae_cfg_dict(architecture, d_in=D_IN, d_sae=D_SAE, **{**base, **overrides})


def make_sae(architecture: str = "standard", seed: int = 0, **overrides: Any) -> TrainingSAE:
    """A float64 TrainingSAE with random biases on top of its initialisation."""
    torch.manual_seed(seed)
    sae = TrainingSAE.from_dict(training_cfg(architecture, **overrides))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name.startswith("b_") or name == "r_mag":
                p.normal_(0, 0.3)
    return sae


def batch(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def mse(sae_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ((sae_out - x) ** 2).sum(-1).mean()


# --- standard ---------------------------------------------------------------------------
@pytest.mark.parametrize("lp_norm", [1.0, 2.0])
def test_standard_loss_is_mse_plus_lp_penalty(lp_norm: float) -> None:
    sae = make_sae(lp_norm=lp_norm)
    x = batch()
    out = sae.training_forward_pass(x, current_l1_coefficient=0.3)
    acts = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    sae_out = acts @ sae.W_dec + sae.b_dec
    l1 = 0.3 * (acts.abs() ** lp_norm).sum(-1).pow(1 / lp_norm).mean()
    assert set(out.losses) == {"l1_loss", "mse_loss"}
    assert_close(out.losses["mse_loss"], mse(sae_out, x))
    assert_close(out.losses["l1_loss"], l1)
    assert_close(out.loss, mse(sae_out, x) + l1)
    assert_close(out.feature_acts, acts)
    assert_close(out.sae_out, sae_out)


def test_sparsity_penalty_scaled_by_decoder_norm() -> None:
    sae = make_sae(scale_sparsity_penalty_by_decoder_norm=True)
    x = batch()
    out = sae.training_forward_pass(x, current_l1_coefficient=2.0)
    acts = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    assert_close(out.losses["l1_loss"], 2.0 * (acts * sae.W_dec.norm(dim=1)).sum(-1).mean())


def test_dense_batch_mse_normalisation() -> None:
    sae = make_sae(mse_loss_normalization="dense_batch")
    x = batch()
    out = sae.training_forward_pass(x, current_l1_coefficient=0.0)
    sae_out = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc) @ sae.W_dec + sae.b_dec
    spread = (x - x.mean(0)).norm(dim=-1, keepdim=True)
    assert_close(out.losses["mse_loss"], ((sae_out - x) ** 2 / (spread + 1e-6)).sum(-1).mean())


def test_ghost_grad_loss_only_in_training_with_a_dead_mask() -> None:
    sae = make_sae(use_ghost_grads=True)
    x = batch()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[[1, 4, 6]] = True
    out = sae.training_forward_pass(x, 0.1, dead_neuron_mask=dead)

    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    residual = x - out.sae_out
    ghost = torch.exp(pre[:, dead]) @ sae.W_dec[dead]
    ghost = ghost * (residual.norm(dim=-1) / (1e-6 + 2 * ghost.norm(dim=-1)))[:, None]
    ghost_mse = (ghost - residual) ** 2
    expected = ((residual**2 / (ghost_mse + 1e-6)) * ghost_mse).mean()
    assert_close(out.losses["ghost_grad_loss"], expected)
    assert_close(out.loss, out.losses["mse_loss"] + out.losses["l1_loss"] + expected)

    assert "ghost_grad_loss" not in sae.training_forward_pass(x, 0.1).losses
    sae.eval()
    assert "ghost_grad_loss" not in sae.training_forward_pass(x, 0.1, dead).losses


# --- gated ------------------------------------------------------------------------------
def test_gated_losses() -> None:
    sae = make_sae("gated")
    x = batch()
    out = sae.training_forward_pass(x, current_l1_coefficient=0.7)
    xc = x - sae.b_dec
    gate_pre = xc @ sae.W_enc + sae.b_gate
    magnitude = torch.relu(xc @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
    acts = (gate_pre > 0) * magnitude
    sae_out = acts @ sae.W_dec + sae.b_dec
    l1 = 0.7 * (torch.relu(gate_pre) * sae.W_dec.norm(dim=1)).sum(-1).mean()
    aux = ((torch.relu(gate_pre) @ sae.W_dec + sae.b_dec - x) ** 2).sum(-1).mean()
    assert set(out.losses) == {"l1_loss", "auxiliary_reconstruction_loss", "mse_loss"}
    assert_close(out.feature_acts, acts)
    assert_close(out.losses["l1_loss"], l1)
    assert_close(out.losses["auxiliary_reconstruction_loss"], aux)
    assert_close(out.loss, mse(sae_out, x) + l1 + aux)


# --- jumprelu ---------------------------------------------------------------------------
def test_jumprelu_starts_at_the_configured_threshold() -> None:
    sae = make_sae("jumprelu", jumprelu_init_threshold=0.05)
    assert_close(sae.log_threshold, torch.full((D_SAE,), math.log(0.05), dtype=torch.float64))
    assert_close(sae.threshold, torch.full((D_SAE,), 0.05, dtype=torch.float64))
    assert "threshold" not in dict(sae.named_parameters())


def test_jumprelu_loss_and_threshold_gradient_by_hand() -> None:
    bandwidth, coef = 0.5, 0.2
    sae = make_sae("jumprelu", jumprelu_bandwidth=bandwidth)
    with torch.no_grad():
        sae.log_threshold.copy_(torch.linspace(-2.0, 0.0, D_SAE))
    x = batch(32)
    out = sae.training_forward_pass(x, current_l1_coefficient=coef)
    out.loss.backward()

    with torch.no_grad():
        theta = sae.log_threshold.exp()
        h = (x - sae.b_dec) @ sae.W_enc + sae.b_enc  # [B, d_sae]
        fires = (h > theta).double()
        acts = h * fires
        sae_out = acts @ sae.W_dec + sae.b_dec
        n = x.shape[0]
        l0 = coef * fires.sum(-1).mean()
        grad_acts = (2 / n) * (sae_out - x) @ sae.W_dec.T  # dL/dacts [B, d_sae]
        window = (((h - theta) / bandwidth).abs() < 0.5).double()  # rectangle kernel
        d_theta = (-(theta / bandwidth) * window * grad_acts).sum(0) + (
            -(1 / bandwidth) * window * coef / n
        ).sum(0)
        d_log_theta = theta * d_theta
        d_b_enc = (fires * grad_acts).sum(0)

    assert window.sum() > 0  # some pre-activations are inside the kernel's window
    assert_close(out.losses["l0_loss"], l0)
    assert_close(out.loss, mse(sae_out, x) + l0)
    assert_close(sae.log_threshold.grad, d_log_theta)
    assert_close(sae.b_enc.grad, d_b_enc)


def test_step_and_jumprelu_functions() -> None:
    x = torch.tensor([[0.1, 0.5, 0.9], [0.45, 0.55, 2.0]], requires_grad=True)
    threshold = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    bandwidth = 0.2
    assert torch.equal(
        rectangle(torch.tensor([-0.6, -0.5, 0.0, 0.49, 0.5])),
        torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]),
    )

    out = JumpReLU.apply(x, threshold, bandwidth)
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 0.9], [0.0, 0.55, 2.0]]))
    out.sum().backward()
    # rectangle((x - 0.5)/0.2) is 1 for |x - 0.5| < 0.1: entries 0.5, 0.45, 0.55.
    assert_close(threshold.grad, torch.tensor([-0.5 / 0.2, -2 * 0.5 / 0.2, 0.0]))
    assert torch.equal(x.grad, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))

    threshold.grad = None
    steps = Step.apply(x, threshold, bandwidth)
    assert torch.equal(steps, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    steps.sum().backward()
    assert_close(threshold.grad, torch.tensor([-1 / 0.2, -2 / 0.2, 0.0]))


def test_jumprelu_save_stores_threshold_and_loads_back(tmp_path: Path) -> None:
    sae = make_sae("jumprelu")
    with torch.no_grad():
        sae.log_threshold.copy_(torch.linspace(-3.0, -0.5, D_SAE))
    sae.save_model(tmp_path)
    inference = SAE.load_from_pretrained(str(tmp_path))
    assert_close(inference.threshold, sae.threshold)
    reloaded = TrainingSAE.load_from_pretrained(str(tmp_path))
    assert_close(reloaded.log_threshold, sae.log_threshold)
    x = batch()
    sae.eval()
    with torch.no_grad():
        assert_close(inference(x), sae(x))


@pytest.mark.parametrize("architecture", ["standard", "gated", "jumprelu"])
def test_fold_W_dec_norm_keeps_training_outputs(architecture: str) -> None:
    sae = make_sae(architecture)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1, dtype=torch.float64) + 0.5)
    sae.eval()
    x = batch()
    with torch.no_grad():
        before = sae(x)
        sae.fold_W_dec_norm()
        assert_close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE, dtype=torch.float64))
        assert_close(sae(x), before)


# --- topk -------------------------------------------------------------------------------
def test_topk_keeps_k_latents_and_has_no_aux_loss_without_dead_latents() -> None:
    sae = make_sae("topk")
    x = batch()
    out = sae.training_forward_pass(x, current_l1_coefficient=1.0)
    assert ((out.feature_acts != 0).sum(-1) <= 2).all()
    assert ((out.feature_acts != 0).sum(-1) == 2).sum() > 0
    assert set(out.losses) == {"auxiliary_reconstruction_loss", "mse_loss"}
    assert out.losses["auxiliary_reconstruction_loss"].item() == 0.0
    no_dead = torch.zeros(D_SAE, dtype=torch.bool)
    assert sae.training_forward_pass(x, 1.0, no_dead).losses["auxiliary_reconstruction_loss"] == 0


@pytest.mark.parametrize("dead_latents", [[0, 3, 5], list(range(D_SAE))])
def test_topk_aux_loss_by_hand(dead_latents: list[int]) -> None:
    sae = make_sae("topk")
    x = batch()
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[dead_latents] = True
    out = sae.training_forward_pass(x, 1.0, dead_neuron_mask=dead)

    k_aux = D_SAE // 2
    n_dead = len(dead_latents)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    dead_pre = pre.masked_fill(~dead, -torch.inf)
    keep = dead_pre.topk(min(k_aux, n_dead), dim=-1).indices
    aux_acts = torch.zeros_like(pre).scatter(-1, keep, pre.gather(-1, keep))
    residual = x - out.sae_out
    expected = (
        min(n_dead / k_aux, 1.0)
        * ((aux_acts @ sae.W_dec + sae.b_dec - residual) ** 2).sum(-1).mean()
    )
    assert_close(out.losses["auxiliary_reconstruction_loss"], expected)
    assert_close(out.loss, out.losses["mse_loss"] + expected)


# --- noise ------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_noise_only_in_training_mode(architecture: str) -> None:
    sae = make_sae(architecture, noise_scale=1.0)
    x = batch()
    clean_pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    noisy = sae.training_forward_pass(x, 1.0).hidden_pre
    assert (noisy - clean_pre).abs().mean() > 0.3
    sae.eval()
    assert_close(sae.training_forward_pass(x, 1.0).hidden_pre, clean_pre)


# --- initialisation ---------------------------------------------------------------------
def test_normalize_sae_decoder_gives_unit_rows() -> None:
    sae = make_sae(normalize_sae_decoder=True)
    assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE, dtype=torch.float64))


def test_decoder_orthogonal_init() -> None:
    sae = make_sae(decoder_orthogonal_init=True)
    assert_close(sae.W_dec.T @ sae.W_dec, torch.eye(D_IN, dtype=torch.float64))


def test_decoder_heuristic_init_and_encoder_as_transpose() -> None:
    sae = make_sae(decoder_heuristic_init=True, init_encoder_as_decoder_transpose=True)
    assert_close(sae.W_dec.norm(dim=1), torch.full((D_SAE,), 0.1, dtype=torch.float64))
    assert torch.equal(sae.W_enc, sae.W_dec.T)


@pytest.mark.parametrize("architecture", ["standard", "gated", "jumprelu", "topk"])
def test_decoder_init_norm_gives_saelens_6_initialisation(architecture: str) -> None:
    sae = make_sae(architecture, normalize_sae_decoder=False, decoder_init_norm=0.3)
    assert_close(sae.W_dec.norm(dim=1), torch.full((D_SAE,), 0.3, dtype=torch.float64))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    # rows keep kaiming-uniform's signs and directions (not all-positive like the heuristic)
    assert (sae.W_dec < 0).float().mean() > 0.3


def test_b_dec_initialisers() -> None:
    sae = make_sae()
    acts = batch(50)
    sae.initialize_b_dec_with_mean(acts)
    assert_close(sae.b_dec, acts.mean(0))
    origin = torch.arange(D_IN, dtype=torch.float32)
    sae.initialize_b_dec_with_precalculated(origin)
    assert torch.equal(sae.b_dec, origin.double())
    with pytest.raises(ValueError, match=r"b_dec origin must have shape \[5\], got \[4\]"):
        sae.initialize_b_dec_with_precalculated(torch.zeros(4))


# --- around the optimiser step ----------------------------------------------------------
def test_gradient_parallel_to_decoder_rows_is_removed() -> None:
    sae = make_sae(normalize_sae_decoder=True)
    sae.training_forward_pass(batch(), 1.0).loss.backward()
    grad = sae.W_dec.grad.clone()
    sae.before_optimizer_step()
    rows = sae.W_dec.detach()
    assert_close((sae.W_dec.grad * rows).sum(-1), torch.zeros(D_SAE, dtype=torch.float64))
    assert_close(sae.W_dec.grad, grad - (grad * rows).sum(-1, keepdim=True) * rows)


def test_optimizer_step_hooks_keep_decoder_rows_unit_norm() -> None:
    sae = make_sae(normalize_sae_decoder=True)
    optimizer = torch.optim.SGD(sae.parameters(), lr=0.5)
    sae.training_forward_pass(batch(), 1.0).loss.backward()
    sae.before_optimizer_step()
    optimizer.step()
    assert not torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE, dtype=torch.float64))
    sae.after_optimizer_step()
    assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE, dtype=torch.float64))


def test_optimizer_step_hooks_do_nothing_without_normalize_sae_decoder() -> None:
    sae = make_sae(normalize_sae_decoder=False)
    sae.training_forward_pass(batch(), 1.0).loss.backward()
    grad, weights = sae.W_dec.grad.clone(), sae.W_dec.detach().clone()
    sae.before_optimizer_step()
    sae.after_optimizer_step()
    assert torch.equal(sae.W_dec.grad, grad) and torch.equal(sae.W_dec, weights)


@pytest.mark.parametrize("architecture", ["standard", "gated", "jumprelu", "topk"])
def test_a_few_adam_steps_reduce_the_loss(architecture: str) -> None:
    sae = make_sae(architecture, normalize_sae_decoder=True, dtype="float32")
    x = batch(64).float()
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = sae.training_forward_pass(x, current_l1_coefficient=1e-3)
        losses.append(out.loss.item())
        out.loss.backward()
        sae.before_optimizer_step()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        sae.after_optimizer_step()
    assert losses[-1] < 0.8 * losses[0]


# --- configuration ----------------------------------------------------------------------
def test_config_from_runner_config() -> None:
    runner = LanguageModelSAERunnerConfig(
        d_in=16,
        expansion_factor=2,
        architecture="jumprelu",
        l1_coefficient=3.0,
        jumprelu_bandwidth=0.01,
        log_to_wandb=False,
        verbose=False,
    )
    cfg = TrainingSAEConfig.from_sae_runner_config(runner)
    assert (cfg.architecture, cfg.d_in, cfg.d_sae) == ("jumprelu", 16, 32)
    assert cfg.l1_coefficient == 3.0 and cfg.jumprelu_bandwidth == 0.01
    assert cfg.model_name == runner.model_name and cfg.hook_name == runner.hook_name
    assert cfg.finetuning_scaling_factor is False
    assert TrainingSAE(cfg).cfg is cfg


def test_config_dict_round_trip_and_base_dict() -> None:
    cfg = TrainingSAEConfig.from_dict(
        {**training_cfg("gated"), "lr": 0.1, "seqpos_slice": [1, None]}
    )
    assert cfg.seqpos_slice == (1, None)
    assert TrainingSAEConfig.from_dict(cfg.to_dict()) == cfg
    base = cfg.get_base_sae_cfg_dict()
    assert set(base) == {f.name for f in fields(SAEConfig)}
    assert SAEConfig.from_dict(base).architecture == "gated"


def test_loading_an_inference_folder_names_missing_training_fields(tmp_path: Path) -> None:
    SAE.from_dict(training_cfg()).save_model(tmp_path)
    with pytest.raises(
        ValueError, match=r"TrainingSAEConfig is missing required field\(s\) \['l1_coefficient'"
    ):
        TrainingSAE.load_from_pretrained(str(tmp_path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(architecture="gated", use_ghost_grads=True),
            "use_ghost_grads is not supported by gated SAEs",
        ),
        (
            dict(architecture="topk", activation_fn_str="relu"),
            "topk SAEs need activation_fn_str='topk', got 'relu'",
        ),
        (dict(mse_loss_normalization="l2"), "mse_loss_normalization must be one of"),
    ],
)
def test_unsupported_options_are_refused(overrides: dict, message: str) -> None:
    cfg = training_cfg(**overrides)
    with pytest.raises(ValueError, match=message):
        TrainingSAE.from_dict(cfg)


def test_gated_training_sae_refuses_the_error_term() -> None:
    cfg = TrainingSAEConfig.from_dict(training_cfg("gated"))
    with pytest.raises(ValueError, match="use_error_term=True is not supported by gated"):
        TrainingSAE(cfg, use_error_term=True)


def test_threshold_only_for_jumprelu() -> None:
    with pytest.raises(
        ValueError, match="threshold is only defined for jumprelu SAEs, this one is standard"
    ):
        _ = make_sae().threshold
