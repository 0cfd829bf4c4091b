"""A CLT's training loss and its gradients equal the direct computation (every layer's
encoder on its own input, a TopK per layer or over all layers, each output the sum of the
decoders of that layer's and every earlier layer's latents), and the decoder blocks from a
later layer to an earlier one stay zero through training."""

from __future__ import annotations

import copy

import pytest
import torch

from sae_lens.sae import SAE
from sae_lens.saes.clt import causal_mask
from sae_lens.training.training_sae import TrainingSAE
from tests.clt.conftest import N_LAYERS, _layout, direct_forward, perturbed_clt

BATCH = 10


def _batch(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, N_LAYERS * 16, generator=generator)
    target = torch.randn(BATCH, N_LAYERS * 16, generator=generator)
    return x, target


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_loss_and_every_gradient_match_the_direct_formula(scope: str) -> None:
    clt = perturbed_clt(scope=scope)
    reference = copy.deepcopy(clt)
    x, target = _batch()

    out = clt.training_forward_pass(sae_in=x, current_l1_coefficient=1.0, target=target)
    out.loss.backward()
    latents, prediction = direct_forward(reference, x, scope)
    loss = (prediction - target).pow(2).sum(-1).mean()
    loss.backward()

    torch.testing.assert_close(out.feature_acts, latents)
    torch.testing.assert_close(out.sae_out, prediction)
    torch.testing.assert_close(out.losses["mse_loss"], loss)
    assert out.losses["auxiliary_reconstruction_loss"] == 0  # no dead latents given
    for name, param in clt.named_parameters():
        torch.testing.assert_close(param.grad, dict(reference.named_parameters())[name].grad)


def test_per_layer_topk_keeps_k_latents_in_every_layer_and_global_keeps_k_times_layers() -> None:
    x, _ = _batch()
    per_layer = perturbed_clt(scope="layer", k=3).encode(x)  # [batch, 2 * 12]
    layer_counts = (per_layer.unflatten(-1, (N_LAYERS, 12)) != 0).sum(-1)
    # at most k per layer (fewer only where a kept pre-activation is not positive)
    assert (layer_counts <= 3).all() and (layer_counts == 3).float().mean() >= 0.8
    global_acts = perturbed_clt(scope="global", k=3).encode(x)
    assert ((global_acts != 0).sum(-1) <= 3 * N_LAYERS).all()
    # a global TopK does not give every layer the same share on every token
    shares = (global_acts.unflatten(-1, (N_LAYERS, 12)) != 0).sum(-1)
    assert (shares != 3).any()


def test_the_inference_forward_is_the_training_forward() -> None:
    training = perturbed_clt(scope="layer")
    inference = SAE.from_dict(training.cfg.get_base_sae_cfg_dict())
    inference.load_state_dict(training.state_dict())
    x, target = _batch()
    expected = training.training_forward_pass(x, 1.0, target=target).sae_out
    torch.testing.assert_close(inference(x), expected)


def test_decoder_blocks_from_a_later_layer_to_an_earlier_one_stay_zero_through_training() -> None:
    clt = perturbed_clt(scope="layer", normalize_sae_decoder=True)
    lower = ~causal_mask(_layout(clt))
    assert lower.any() and (clt.W_dec[lower] == 0).all()
    optimizer = torch.optim.Adam(clt.parameters(), lr=0.05)
    dead = torch.ones(clt.cfg.d_sae, dtype=torch.bool)  # the AuxK loss on, too
    for seed in range(5):
        x, target = _batch(seed)
        optimizer.zero_grad()
        out = clt.training_forward_pass(x, 1.0, dead_neuron_mask=dead, target=target)
        assert out.losses["auxiliary_reconstruction_loss"] > 0
        out.loss.backward()
        clt.before_optimizer_step()
        optimizer.step()
        clt.after_optimizer_step()
    assert (clt.W_dec[lower] == 0).all()
    assert (clt.W_dec[~lower] != 0).all()


def test_auxk_loss_matches_the_direct_formula() -> None:
    clt = perturbed_clt(scope="layer")
    x, target = _batch()
    dead = torch.zeros(clt.cfg.d_sae, dtype=torch.bool)
    dead[::3] = True
    out = clt.training_forward_pass(x, 1.0, dead_neuron_mask=dead, target=target)
    hidden_pre = out.hidden_pre.detach()
    n_dead, k_aux = int(dead.sum()), clt.cfg.d_sae // 2
    masked = torch.where(dead, hidden_pre, -torch.inf)
    top = masked.topk(min(n_dead, k_aux), dim=-1)
    aux_acts = torch.zeros_like(hidden_pre).scatter(-1, top.indices, top.values)
    aux_out = aux_acts @ clt.W_dec + clt.b_dec  # the zero blocks add nothing
    residual = target - out.sae_out.detach()
    expected = min(n_dead / k_aux, 1.0) * (aux_out - residual).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.losses["auxiliary_reconstruction_loss"], expected)


def test_a_transcoder_target_is_required() -> None:
    clt = perturbed_clt()
    with pytest.raises(ValueError, match="pass it as target"):
        clt.training_forward_pass(_batch()[0], 1.0)
    assert isinstance(clt, TrainingSAE)
