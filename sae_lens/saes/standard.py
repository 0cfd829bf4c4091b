"""The standard SAE: ReLU (or another named activation) over an affine encoder, trained
with MSE plus an Lp sparsity penalty, optionally with ghost grads for dead latents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sae_lens.saes.base import Architecture, TrainingLossInputs, init_linear_params

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
        hidden_pre = sae.add_training_noise(sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc))
        return sae.hook_sae_acts_post(sae.activation_fn(hidden_pre)), hidden_pre

    def training_losses(
        self, sae: TrainingSAE, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        weighted_acts = inputs.feature_acts
        if sae.cfg.scale_sparsity_penalty_by_decoder_norm:
            weighted_acts = weighted_acts * sae.W_dec.norm(dim=1)
        sparsity = weighted_acts.norm(p=sae.cfg.lp_norm, dim=-1)  # [batch]
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
