"""The standard SAE: ReLU (or another named activation) over an affine encoder, trained
with MSE plus an Lp sparsity penalty, optionally with ghost grads for dead latents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sae_lens.saes.activations import is_nonnegative
from sae_lens.saes.base import (
    Architecture,
    TrainingLossInputs,
    affine,
    hooks_active,
    init_linear_params,
)

if TYPE_CHECKING:
    from sae_lens.sae import SAE
    from sae_lens.training.training_sae import TrainingSAE


class StandardArchitecture(Architecture):
    name = "standard"
    supports_ghost_grads = True

    def init_params(self, sae: SAE) -> None:
        init_linear_params(sae)

    def encode(self, sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc)  # [..., d_sae]
        return sae.hook_sae_acts_post(sae.activation_fn(hidden_pre)), hidden_pre

    def fold_W_dec_norm(self, sae: SAE, norms: torch.Tensor) -> None:
        sae.b_enc.data *= norms

    def training_encode(
        self, sae: TrainingSAE, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.add_training_noise(sae.hook_sae_acts_pre(affine(x, sae.W_enc, sae.b_enc)))
        return sae.hook_sae_acts_post(sae.activation_fn(hidden_pre)), hidden_pre

    def training_losses(
        self, sae: TrainingSAE, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        sparsity = sparsity_penalty(sae, inputs.feature_acts)  # [batch]
        losses["l1_loss"] = (inputs.l1_coefficient * sparsity).mean()
        if sae.cfg.use_ghost_grads and sae.training and inputs.dead_neuron_mask is not None:
            losses["ghost_grad_loss"] = ghost_grad_loss(
                sae,
                inputs.sae_in,
                inputs.sae_out,
                inputs.per_item_mse_loss,
                inputs.hidden_pre,
                inputs.dead_neuron_mask,
            )
        return losses


def sparsity_penalty(sae: TrainingSAE, feature_acts: torch.Tensor) -> torch.Tensor:
    """Per token: the Lp norm (p = `lp_norm`) of the latents [batch, d_sae], each weighted by
    its decoder row's norm when `scale_sparsity_penalty_by_decoder_norm`. For p = 1 and
    latents that cannot be negative this is one matrix-vector product, whose backward adds
    to the latents' gradient without the two extra [batch, d_sae] passes of a norm."""
    weights = sae.W_dec.norm(dim=1) if sae.cfg.scale_sparsity_penalty_by_decoder_norm else None
    if sae.cfg.lp_norm == 1 and _latents_nonnegative(sae):
        if weights is None:
            weights = feature_acts.new_ones(feature_acts.shape[-1])
        return feature_acts @ weights
    weighted_acts = feature_acts if weights is None else feature_acts * weights
    return weighted_acts.norm(p=sae.cfg.lp_norm, dim=-1)


def _latents_nonnegative(sae: TrainingSAE) -> bool:
    return is_nonnegative(sae.activation_fn) and not hooks_active(sae.hook_sae_acts_post)


def ghost_grad_loss(
    sae: TrainingSAE,
    sae_in: torch.Tensor,
    sae_out: torch.Tensor,
    per_item_mse_loss: torch.Tensor,
    hidden_pre: torch.Tensor,
    dead_neuron_mask: torch.Tensor,
) -> torch.Tensor:
    """Ghost grads (Anthropic, Jan 2024): dead latents, with an exp activation, are trained to
    reconstruct half the residual norm, the loss rescaled to the size of the MSE loss.
    Tensors are [batch, d_in] except hidden_pre [batch, d_sae] and the mask [d_sae]."""
    residual = sae_in - sae_out
    ghost_acts = torch.exp(hidden_pre[:, dead_neuron_mask])  # [batch, n_dead]
    ghost_out = ghost_acts @ sae.W_dec[dead_neuron_mask, :]  # [batch, d_in]
    scale = residual.norm(dim=-1) / (1e-6 + ghost_out.norm(dim=-1) * 2)  # [batch]
    ghost_out = ghost_out * scale[:, None].detach()
    ghost_mse = sae.mse_loss_fn(ghost_out, residual.detach())  # [batch, d_in]
    rescale = (per_item_mse_loss / (ghost_mse + 1e-6)).detach()
    return (rescale * ghost_mse).mean()
