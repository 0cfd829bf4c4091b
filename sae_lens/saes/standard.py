"""The standard SAE: ReLU (or another named activation) over an affine encoder, trained
with MSE plus an Lp sparsity penalty, optionally with ghost grads for dead latents."""

from __future__ import annotations

from typing import Any

import torch

from sae_lens.saes import cpu_kernels
from sae_lens.saes.activations import is_nonnegative, keep_where_positive_
from sae_lens.saes.base import (
    Architecture,
    SAEModule,
    TrainingForward,
    TrainingLossInputs,
    TrainingSAEModule,
    init_linear_params,
)
from sae_lens.saes.fused_ops import (
    add_into,
    affine,
    decoder_weight_grad,
    hooks_active,
    pre_activation_grads,
)


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
        # Bias, ReLU, decoder matmul and L1 penalty in one autograd function whose backward
        # builds the latents' gradient in a single [batch, d_sae] buffer.
        hidden_pre, acts, latent_sum, sparsity = _ReLUDecode.apply(
            x @ sae.W_enc, sae.b_enc, sae.W_dec, _penalty_weights(sae, x)
        )
        sae_out = sae.finish_decode(latent_sum)
        return TrainingForward(acts, hidden_pre, sae_out, {"sparsity": sparsity})

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
    """Whether `_ReLUDecode` computes exactly what the step-by-step path would: a ReLU, the
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


class _ReLUDecode(torch.autograd.Function):
    """From x_enc = x @ W_enc [batch, d_sae], which it overwrites with hidden_pre:
    (hidden_pre = x_enc + b_enc, acts = relu(hidden_pre), acts @ W_dec [batch, d_in], and
    acts @ weights [batch], the L1 penalty). On CPU each direction's elementwise work is one
    fused kernel (`cpu_kernels`); elsewhere the torch backward adds the gradients into one
    [batch, d_sae] buffer and masks it in place, where autograd would allocate three."""

    @staticmethod
    def forward(  # type: ignore[override]
        x_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if cpu_kernels.serves(x_enc, b_enc, weights):
            acts, penalty = cpu_kernels.relu_forward_(x_enc, b_enc, weights)
        else:
            acts = x_enc.add_(b_enc).relu()
            penalty = acts @ weights
        return x_enc, acts, acts @ W_dec, penalty

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        x_enc, _, W_dec, weights = inputs
        ctx.mark_dirty(x_enc)
        ctx.save_for_backward(output[1], W_dec, weights)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_hidden_pre: torch.Tensor | None,
        grad_acts: torch.Tensor | None,
        grad_sum: torch.Tensor | None,
        grad_penalty: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        acts, W_dec, weights = ctx.saved_tensors
        grad = None if grad_sum is None else grad_sum @ W_dec.t()  # [batch, d_sae], ours
        if grad_penalty is not None:
            grad_penalty = grad_penalty.contiguous()  # a loss's mean gives a broadcast
        grad_bias = None
        if (
            grad_acts is None
            and grad is not None
            and grad_penalty is not None
            and cpu_kernels.serves(grad, acts, grad_penalty, weights)
        ):
            grad_pre, grad_bias = cpu_kernels.relu_backward(grad, acts, grad_penalty, weights)
        else:
            if grad_penalty is not None:
                if grad is None:
                    grad = torch.outer(grad_penalty, weights)
                else:
                    grad.addr_(grad_penalty, weights)
            grad = add_into(grad, grad_acts)
            grad_pre = None if grad is None else keep_where_positive_(grad, acts)  # ReLU
        grad_pre, grad_bias = pre_activation_grads(grad_pre, grad_bias, grad_hidden_pre)
        need_W, need_weights = ctx.needs_input_grad[2:4]
        grad_W = decoder_weight_grad(acts, grad_sum) if need_W and grad_sum is not None else None
        grad_weights = None
        if need_weights and grad_penalty is not None:
            grad_weights = acts.t() @ grad_penalty
        return grad_pre, grad_bias, grad_W, grad_weights


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
