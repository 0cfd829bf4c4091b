"""A transcoder's training forward pass: its prediction, losses and gradients equal a
direct computation, for every architecture it may have."""

from __future__ import annotations

import pytest
import torch

from sae_lens.training.training_sae import TrainingSAE
from tests.transcoders.conftest import ARCHITECTURES, perturb_, transcoder_cfg_dict


def _batch(d_in: int = 6, d_out: int = 5, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, d_in, generator=generator), torch.randn(n, d_out, generator=generator)


def _trained(architecture: str, **overrides: object) -> TrainingSAE:
    sae = TrainingSAE.from_dict(transcoder_cfg_dict(architecture, **overrides))
    perturb_(sae)
    return sae


def test_standard_skip_transcoder_loss_and_gradients_match_a_direct_computation() -> None:
    sae = _trained("standard")
    x, y = _batch()
    output = sae.training_forward_pass(x, current_l1_coefficient=0.5, target=y)
    output.loss.backward()

    params = {name: p.detach().clone().requires_grad_() for name, p in sae.named_parameters()}
    acts = torch.relu(x @ params["W_enc"] + params["b_enc"])  # no b_dec on the input
    prediction = acts @ params["W_dec"] + params["b_dec"] + x @ params["W_skip"]
    mse = (prediction - y).pow(2).sum(-1).mean()
    expected = mse + 0.5 * acts.sum(-1).mean()
    expected.backward()

    torch.testing.assert_close(output.sae_out, prediction.detach())
    torch.testing.assert_close(output.losses["mse_loss"], mse.detach())
    torch.testing.assert_close(output.loss, expected.detach())
    for name, param in sae.named_parameters():
        torch.testing.assert_close(param.grad, params[name].grad, msg=name)
    assert output.target is y


def test_topk_skip_transcoder_loss_and_gradients_match_a_direct_computation() -> None:
    sae = _trained("topk")
    x, y = _batch()
    output = sae.training_forward_pass(x, current_l1_coefficient=0.0, target=y)
    output.loss.backward()

    params = {name: p.detach().clone().requires_grad_() for name, p in sae.named_parameters()}
    hidden_pre = x @ params["W_enc"] + params["b_enc"]
    top = hidden_pre.topk(3, dim=-1)
    acts = torch.zeros_like(hidden_pre).scatter(-1, top.indices, torch.relu(top.values))
    prediction = acts @ params["W_dec"] + params["b_dec"] + x @ params["W_skip"]
    expected = (prediction - y).pow(2).sum(-1).mean()  # no dead latents: AuxK is 0
    expected.backward()

    torch.testing.assert_close(output.loss, expected.detach())
    for name, param in sae.named_parameters():
        torch.testing.assert_close(param.grad, params[name].grad, msg=name)


def test_topk_aux_loss_reconstructs_the_residual_of_the_target() -> None:
    sae = _trained("topk")
    x, y = _batch()
    dead = torch.zeros(12, dtype=torch.bool)
    dead[:6] = True
    output = sae.training_forward_pass(x, 0.0, dead_neuron_mask=dead, target=y)
    hidden_pre = output.hidden_pre.detach()
    dead_pre = torch.where(dead, hidden_pre, -torch.inf)
    top = dead_pre.topk(6, dim=-1)  # k_aux = d_sae // 2 = 6 = n_dead
    aux_acts = torch.zeros_like(hidden_pre).scatter(-1, top.indices, top.values)
    residual = y - output.sae_out.detach()
    aux = (aux_acts @ sae.W_dec + sae.b_dec - residual).pow(2).sum(-1).mean()
    torch.testing.assert_close(output.losses["auxiliary_reconstruction_loss"], aux.detach())


@pytest.mark.parametrize("architecture", ["jumprelu", "batchtopk"])
def test_thresholded_transcoders_predict_and_score_against_the_target(architecture: str) -> None:
    sae = _trained(architecture)
    x, y = _batch()
    output = sae.training_forward_pass(x, current_l1_coefficient=0.1, target=y)
    acts = output.feature_acts.detach()
    prediction = acts @ sae.W_dec + sae.b_dec + x @ sae.W_skip
    torch.testing.assert_close(output.sae_out.detach(), prediction.detach())
    mse = (prediction - y).pow(2).sum(-1).mean()
    torch.testing.assert_close(output.losses["mse_loss"].detach(), mse.detach())
    output.loss.backward()
    # the skip path's gradient is the MSE's alone: 2/n x^T (prediction - y)
    expected_skip_grad = 2 * x.T @ (prediction - y).detach() / x.shape[0]
    torch.testing.assert_close(sae.W_skip.grad, expected_skip_grad)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_parameters_have_the_output_width(architecture: str) -> None:
    sae = TrainingSAE.from_dict(transcoder_cfg_dict(architecture))
    assert tuple(sae.W_enc.shape) == (6, 12)
    assert tuple(sae.W_dec.shape) == (12, 5) and tuple(sae.b_dec.shape) == (5,)
    assert tuple(sae.W_skip.shape) == (6, 5)
    assert torch.count_nonzero(sae.W_skip) == 0  # the skip path starts at zero


def test_without_skip_connection_there_is_no_w_skip() -> None:
    sae = TrainingSAE.from_dict(transcoder_cfg_dict(skip_connection=False))
    assert not hasattr(sae, "W_skip")


def test_a_transcoder_refuses_a_forward_pass_without_its_target() -> None:
    sae = TrainingSAE.from_dict(transcoder_cfg_dict())
    with pytest.raises(ValueError, match="pass it as target"):
        sae.training_forward_pass(torch.randn(4, 6), 0.0)


def test_an_architecture_that_ignores_d_out_is_refused() -> None:
    with pytest.raises(ValueError, match="gated SAEs cannot be transcoders with d_out=5"):
        TrainingSAE.from_dict(transcoder_cfg_dict("gated"))


def test_b_dec_initialisation_takes_the_output_width() -> None:
    sae = TrainingSAE.from_dict(transcoder_cfg_dict())
    sae.initialize_b_dec_with_mean(torch.arange(10.0).reshape(2, 5))
    torch.testing.assert_close(sae.b_dec.data, torch.tensor([2.5, 3.5, 4.5, 5.5, 6.5]))
    with pytest.raises(ValueError, match=r"b_dec origin must have shape \[5\]"):
        sae.initialize_b_dec_with_precalculated(torch.zeros(6))


def test_tying_the_encoder_to_the_decoder_needs_equal_widths() -> None:
    with pytest.raises(ValueError, match="cannot start as the decoder's transpose"):
        TrainingSAE.from_dict(transcoder_cfg_dict(init_encoder_as_decoder_transpose=True))
    tied = TrainingSAE.from_dict(
        transcoder_cfg_dict(d_out=6, init_encoder_as_decoder_transpose=True)
    )
    assert torch.equal(tied.W_enc, tied.W_dec.T)
