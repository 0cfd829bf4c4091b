"""TopK training decodes only the k active latents: values and gradients must match the
dense `acts @ W_dec` computation."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from sae_lens.saes.topk import sparse_decode
from sae_lens.training.training_sae import TrainingSAE
from tests.sae_configs import perturbed_training_sae, training_sae_cfg_dict


def _random_topk_codes(
    batch_shape: tuple[int, ...], d_sae: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.rand(*batch_shape, d_sae)
    indices = scores.topk(k, dim=-1).indices  # distinct per row
    return torch.randn(*batch_shape, k), indices


@pytest.mark.parametrize("batch_shape", [(7,), (2, 3)])
def test_sparse_decode_matches_dense_values_and_gradients(batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    d_sae, d_in, k = 12, 5, 4
    values, indices = _random_topk_codes(batch_shape, d_sae, k)
    W_dec = torch.randn(d_sae, d_in)
    grad_out = torch.randn(*batch_shape, d_in)

    v_sparse = values.clone().requires_grad_()
    W_sparse = W_dec.clone().requires_grad_()
    out_sparse = sparse_decode(v_sparse, indices, W_sparse)
    (out_sparse * grad_out).sum().backward()

    v_dense = values.clone().requires_grad_()
    W_dense = W_dec.clone().requires_grad_()
    acts = torch.zeros(*batch_shape, d_sae).scatter(-1, indices, v_dense)
    out_dense = acts @ W_dense
    (out_dense * grad_out).sum().backward()

    assert_close(out_sparse, out_dense)
    assert_close(v_sparse.grad, v_dense.grad)
    assert_close(W_sparse.grad, W_dense.grad)
    untouched = torch.ones(d_sae, dtype=torch.bool)
    untouched[indices.flatten()] = False
    assert (W_sparse.grad[untouched] == 0).all()


def _topk_training_sae(**overrides: object) -> TrainingSAE:
    cfg = training_sae_cfg_dict("topk", d_in=6, d_sae=16, k=3, **overrides)
    return perturbed_training_sae(cfg)


@pytest.mark.parametrize("finetuning_scaling_factor", [False, True])
def test_topk_training_step_matches_a_dense_computation(finetuning_scaling_factor: bool) -> None:
    sae = _topk_training_sae(finetuning_scaling_factor=finetuning_scaling_factor)
    x = torch.randn(9, 6)
    out = sae.training_forward_pass(x, current_l1_coefficient=1.0)
    out.loss.backward()
    sparse_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()

    # The same loss with the dense decoder, written out from the weights.
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    top = pre.topk(3, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    if finetuning_scaling_factor:
        acts = acts * sae.finetuning_scaling_factor
    sae_out = acts @ sae.W_dec + sae.b_dec
    ((sae_out - x) ** 2).sum(-1).mean().backward()

    assert_close(out.sae_out, sae_out)
    for name, p in sae.named_parameters():
        assert_close(sparse_grads[name], p.grad, msg=name)
