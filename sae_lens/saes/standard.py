"""The standard SAE: ReLU (or another named activation) over an affine encoder, trained
with MSE plus an Lp sparsity penalty, optionally with ghost grads for dead latents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sae_lens.saes.activations import is_nonnegative
from sae_lens.saes.base import (
    Architecture,
    SAEModule,
    TrainingForward,
    TrainingLossInputs,
    TrainingSAEModule,
    init_linear_params,
)
from sae_lens.saes.fused_ops import affine, hooks_active
from sae_lens.saes.relu_step import relu_step
from sae_lens.saes.stacked import stacked_relu_forward


class StandardArchitecture(Architecture):
    name = "standard"
    supports_ghost_grads = True

    def init_params(self, sae: SAEModule) -> None:
        init_linear_params(sae)

    def encode(self, sae: SAEModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc)  # [..., d_sae]
        return sae.hook_sae_acts_post(sae.activation_fn(hidden_pre)), hidden_pre

    def fold_W_dec_norm(self, sae: SAEModule, norms: torch.Tensor) -> None:
        sae.b_enc.data *= norms

    def training_encode(
        self, sae: TrainingSAEModule, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.add_training_noise(sae.hook_sae_acts_pre(affine(x, sae.W_enc, sae.b_enc)))
        return sae.hook_sae_acts_post(sae.activation_fn(hidden_pre)), hidden_pre

    def training_forward(self, sae: TrainingSAEModule, x: torch.Tensor) -> TrainingForward:
        if not (self.encodes_like(StandardArchitecture) and _can_fuse(sae, x)):
            return Architecture.training_forward(self, sae, x)
        # Encoder, bias, ReLU, L1 penalty and decoder in one autograd function: sparse
        # matmuls once few latents fire, else one [batch, d_sae] gradient buffer.
        hidden_pre, acts, latent_sum, sparsity = relu_step(
            x, sae.W_enc, sae.b_enc, sae.W_dec, _penalty_weights(sae, x)
        )
        sae_out = sae.finish_decode(latent_sum)
        return TrainingForward(acts, hidden_pre, sae_out, {"sparsity": sparsity})

    def stack_key(self, sae: TrainingSAEModule, x: torch.Tensor) -> tuple[Any, ...] | None:
        if type(self) is not StandardArchitecture or not _can_fuse(sae, x):
            return None
        return (self.name, sae.cfg.d_in, sae.cfg.d_sae)

    def stacked_training_forward(
        self, saes: Sequence[TrainingSAEModule], x: torch.Tensor
    ) -> list[TrainingForward]:
        return stacked_relu_forward(saes, x)

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        sparsity = inputs.intermediates.get("sparsity")  # [batch]
        if sparsity is None:
            sparsity = sparsity_penalty(sae, inputs.feature_acts)
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


def sparsity_penalty(sae: TrainingSAEModule, feature_acts: torch.Tensor) -> torch.Tensor:
    """Per token: the Lp norm (p = `lp_norm`) of the latents [batch, d_sae], each weighted by
    its decoder row's norm when `scale_sparsity_penalty_by_decoder_norm`. For p = 1 and
    latents that cannot be negative this is one matrix-vector product, whose backward adds
    to the latents' gradient without the two extra [batch, d_sae] passes of a norm."""
    if sae.cfg.lp_norm == 1 and _latents_nonnegative(sae):
        return feature_acts @ _penalty_weights(sae, feature_acts)
    weighted_acts = feature_acts
    if sae.cfg.scale_sparsity_penalty_by_decoder_norm:
        weighted_acts = feature_acts * sae.W_dec.norm(dim=1)
    return weighted_acts.norm(p=sae.cfg.lp_norm, dim=-1)


def _penalty_weights(sae: TrainingSAEModule, like: torch.Tensor) -> torch.Tensor:
    """[d_sae]: each latent's weight in the L1 penalty."""
    if sae.cfg.scale_sparsity_penalty_by_decoder_norm:
        return sae.W_dec.norm(dim=1)
    return like.new_ones(sae.cfg.d_sae)


def _latents_nonnegative(sae: TrainingSAEModule) -> bool:
    return is_nonnegative(sae.activation_fn) and not hooks_active(sae.hook_sae_acts_post)


def _can_fuse(sae: TrainingSAEModule, x: torch.Tensor) -> bool:
    """Whether `relu_step` computes exactly what the step-by-step path would: a ReLU, the
    L1 penalty, a [batch, d_in] input, no fine-tuning scale, no training noise, no autocast,
    and no hook on the pre- or post-activations (the fused path does not call them)."""
    return (
        isinstance(sae.activation_fn, torch.nn.ReLU)
        and sae.cfg.lp_norm == 1
        and x.dim() == 2
        and not sae.cfg.finetuning_scaling_factor
        and not (sae.training and sae.cfg.noise_scale > 0)
        and not torch.is_autocast_enabled(x.device.type)
        and not hooks_active(sae.hook_sae_acts_pre, sae.hook_sae_acts_post)
    )


def ghost_grad_loss(
    sae: TrainingSAEModule,
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
