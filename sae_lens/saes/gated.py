"""The gated SAE (Rajamanoharan et al., 2024): a binary gate (`x @ W_enc + b_gate > 0`)
decides which latents fire, a magnitude path sharing `W_enc` rescaled by `exp(r_mag)` sets
their size. Trained with MSE, an L1 penalty on the gate's ReLU weighted by decoder norms,
and an auxiliary loss reconstructing the input from the gate path alone."""

from __future__ import annotations

from typing import Any

import torch

from sae_lens.saes import cpu_kernels
from sae_lens.saes.activations import keep_where_positive_
from sae_lens.saes.base import (
    Architecture,
    SAEModule,
    TrainingConfig,
    TrainingForward,
    TrainingLossInputs,
    TrainingSAEModule,
    new_param,
)
from sae_lens.saes.fused_ops import add_into, affine, decoder_weight_grad, hooks_active


class GatedArchitecture(Architecture):
    name = "gated"

    def init_params(self, sae: SAEModule) -> None:
        d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
        sae.W_enc = new_param(sae, d_in, d_sae, fill=None)
        sae.b_gate = new_param(sae, d_sae)
        sae.r_mag = new_param(sae, d_sae)
        sae.b_mag = new_param(sae, d_sae)
        sae.W_dec = new_param(sae, d_sae, d_in, fill=None)
        sae.b_dec = new_param(sae, d_in)

    def encode(self, sae: SAEModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Noise is never added here (as in 5.6.0): the gate is a hard threshold.
        gate_pre = x @ sae.W_enc + sae.b_gate  # [..., d_sae]
        active = (gate_pre > 0).to(sae.dtype)
        magnitude_pre = sae.hook_sae_acts_pre(x @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
        feature_acts = sae.hook_sae_acts_post(active * sae.activation_fn(magnitude_pre))
        return feature_acts, magnitude_pre

    def encoder_bias(self, sae: SAEModule) -> torch.Tensor:
        return sae.b_gate  # the gate decides firing; gated SAEs have no b_enc

    def fold_W_dec_norm(self, sae: SAEModule, norms: torch.Tensor) -> None:
        # W_enc already carries the norms, so r_mag stays; both biases scale with them.
        sae.b_gate.data *= norms
        sae.b_mag.data *= norms

    def check_training_cfg(self, cfg: TrainingConfig, use_error_term: bool) -> None:
        super().check_training_cfg(cfg, use_error_term)
        if use_error_term:
            raise ValueError("use_error_term=True is not supported by gated TrainingSAEs")

    def training_forward(self, sae: TrainingSAEModule, x: torch.Tensor) -> TrainingForward:
        if not self.encodes_like(GatedArchitecture):
            return Architecture.training_forward(self, sae, x)
        # The gate and magnitude paths share one matmul: x @ (W_enc * exp(r_mag)) equals
        # (x @ W_enc) * exp(r_mag).
        x_enc = x @ sae.W_enc  # [batch, d_sae]
        if _can_fuse(sae, x):
            decoder_norms = sae.W_dec.norm(dim=1)
            acts, magnitude_pre, latent_sum, gate_sum, gate_penalty, _ = _GatedLatents.apply(
                x_enc, sae.b_gate, sae.r_mag, sae.b_mag, sae.W_dec, decoder_norms
            )
            intermediates = {"gate_penalty": gate_penalty, "via_gate": gate_sum + sae.b_dec}
            return TrainingForward(
                acts, magnitude_pre, sae.finish_decode(latent_sum), intermediates
            )
        gate_pre = x_enc + sae.b_gate
        magnitude_pre = sae.hook_sae_acts_pre(torch.addcmul(sae.b_mag, x_enc, sae.r_mag.exp()))
        feature_acts = sae.hook_sae_acts_post(sae.activation_fn(magnitude_pre) * (gate_pre > 0))
        return TrainingForward(
            feature_acts, magnitude_pre, sae.decode(feature_acts), {"gate_pre": gate_pre}
        )

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        gate_penalty = inputs.intermediates.get("gate_penalty")  # [batch]
        via_gate = inputs.intermediates.get("via_gate")  # [batch, d_in]
        if gate_penalty is None or via_gate is None:
            gate_pre = inputs.intermediates.get("gate_pre")
            if gate_pre is None:
                gate_pre = affine(inputs.x, sae.W_enc, sae.b_gate)
            gate_acts = torch.relu(gate_pre)  # [batch, d_sae]
            gate_penalty = gate_acts @ sae.W_dec.norm(dim=1)
            via_gate = affine(gate_acts, sae.W_dec, sae.b_dec)
        l1_loss = inputs.l1_coefficient * gate_penalty.mean()
        aux_loss = (via_gate - inputs.sae_in).pow(2).sum(dim=-1).mean()
        return {"auxiliary_reconstruction_loss": aux_loss, "l1_loss": l1_loss}


def _can_fuse(sae: TrainingSAEModule, x: torch.Tensor) -> bool:
    """Whether `_GatedLatents` computes exactly what the step-by-step path would: a ReLU
    magnitude, a [batch, d_in] input, no fine-tuning scale, no autocast, and no hook on the
    pre- or post-activations (the fused path does not call them)."""
    return (
        isinstance(sae.activation_fn, torch.nn.ReLU)
        and x.dim() == 2
        and not sae.cfg.finetuning_scaling_factor
        and not torch.is_autocast_enabled(x.device.type)
        and not hooks_active(sae.hook_sae_acts_pre, sae.hook_sae_acts_post)
    )


class _GatedLatents(torch.autograd.Function):
    """Everything a gated training step computes from x_enc = x @ W_enc [batch, d_sae],
    which it overwrites with magnitude_pre:
    (feature_acts, magnitude_pre, feature_acts @ W_dec, gate_acts @ W_dec,
    gate_acts @ decoder_norms, gate_acts) with gate_acts = relu(x_enc + b_gate),
    magnitude_pre = x_enc * exp(r_mag) + b_mag and feature_acts = (gate_acts > 0) *
    relu(magnitude_pre); gate_acts is not differentiable.
    On CPU the elementwise work of each direction is one fused kernel (`cpu_kernels`);
    elsewhere the torch backward builds the gradients of both paths in two [batch, d_sae]
    buffers, in place, where autograd would allocate about ten."""

    @staticmethod
    def forward(  # type: ignore[override]
        x_enc: torch.Tensor,
        b_gate: torch.Tensor,
        r_mag: torch.Tensor,
        b_mag: torch.Tensor,
        W_dec: torch.Tensor,
        decoder_norms: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        scale = r_mag.exp()
        # magnitude_pre is built in x_enc's memory (x_enc is the caller's matmul output).
        if cpu_kernels.serves(x_enc, b_gate, scale, b_mag, decoder_norms):
            gate_acts, feature_acts, penalty = cpu_kernels.gated_forward_(
                x_enc, b_gate, b_mag, scale, decoder_norms
            )
            magnitude_pre = x_enc
        else:
            gate_acts = (x_enc + b_gate).relu_()
            magnitude_pre = x_enc.mul_(scale).add_(b_mag)
            # relu(gate_pre) > 0 iff gate_pre > 0; a fused mask (a boolean one costs 3 passes)
            feature_acts = keep_where_positive_(magnitude_pre.relu(), gate_acts)
            penalty = gate_acts @ decoder_norms
        return (
            feature_acts,
            magnitude_pre,
            feature_acts @ W_dec,
            gate_acts @ W_dec,
            penalty,
            gate_acts,
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        x_enc, _, r_mag, b_mag, W_dec, decoder_norms = inputs
        feature_acts, magnitude_pre, _, _, _, gate_acts = output
        ctx.mark_dirty(x_enc)
        ctx.mark_non_differentiable(gate_acts)
        saved = (magnitude_pre, r_mag, b_mag, W_dec, decoder_norms, feature_acts, gate_acts)
        ctx.save_for_backward(*saved)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_acts: torch.Tensor | None,
        grad_magnitude_pre: torch.Tensor | None,
        grad_latent_sum: torch.Tensor | None,
        grad_gate_sum: torch.Tensor | None,
        grad_penalty: torch.Tensor | None,
        *_: None,
    ) -> tuple[torch.Tensor | None, ...]:
        magnitude_pre, r_mag, b_mag, W_dec, decoder_norms, feature_acts, gate_acts = (
            ctx.saved_tensors
        )
        scale = r_mag.exp()
        # d loss / d feature_acts and d loss / d gate_acts through the decoder
        from_latents = None if grad_latent_sum is None else grad_latent_sum @ W_dec.t()
        from_gate = None if grad_gate_sum is None else grad_gate_sum @ W_dec.t()
        if grad_penalty is not None:
            grad_penalty = grad_penalty.contiguous()  # a loss's mean gives a broadcast
        if (
            grad_acts is None
            and grad_magnitude_pre is None
            and from_latents is not None
            and from_gate is not None
            and grad_penalty is not None
            and cpu_kernels.serves(from_latents, from_gate, feature_acts, grad_penalty, scale)
        ):
            grads = cpu_kernels.gated_backward(
                from_latents, from_gate, feature_acts, gate_acts, grad_penalty,
                decoder_norms, scale, b_mag,
            )  # fmt: skip
        else:
            grads = _latent_grads(
                from_latents, from_gate, grad_acts, grad_magnitude_pre, grad_penalty,
                magnitude_pre, b_mag, scale, decoder_norms, feature_acts, gate_acts,
            )  # fmt: skip
        grad_x_enc, grad_b_gate, grad_b_mag, grad_r_mag = grads
        grad_W_dec = None
        if ctx.needs_input_grad[4]:
            if grad_latent_sum is not None:
                grad_W_dec = decoder_weight_grad(feature_acts, grad_latent_sum)
            if grad_gate_sum is not None:
                gate_part = decoder_weight_grad(gate_acts, grad_gate_sum)
                grad_W_dec = gate_part if grad_W_dec is None else grad_W_dec.add_(gate_part)
        grad_norms = None
        if ctx.needs_input_grad[5] and grad_penalty is not None:
            grad_norms = gate_acts.t() @ grad_penalty
        return grad_x_enc, grad_b_gate, grad_r_mag, grad_b_mag, grad_W_dec, grad_norms


def _latent_grads(
    from_latents: torch.Tensor | None,
    from_gate: torch.Tensor | None,
    grad_acts: torch.Tensor | None,
    grad_magnitude_pre: torch.Tensor | None,
    grad_penalty: torch.Tensor | None,
    magnitude_pre: torch.Tensor,
    b_mag: torch.Tensor,
    scale: torch.Tensor,
    decoder_norms: torch.Tensor,
    feature_acts: torch.Tensor,
    gate_acts: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """(d x_enc, d b_gate, d b_mag, d r_mag) with torch ops, any incoming gradient possibly
    None; `from_latents` and `from_gate` are the caller's buffers and are overwritten."""
    # Magnitude path: d loss / d magnitude_pre, in one buffer.
    grad_mag = add_into(from_latents, grad_acts)
    if grad_mag is not None:
        # feature_acts > 0 exactly where both the gate and relu(magnitude_pre) pass
        keep_where_positive_(grad_mag, feature_acts)
    grad_mag = add_into(grad_mag, grad_magnitude_pre)
    # Gate path: d loss / d gate_pre, in a second buffer.
    grad_gate = from_gate
    if grad_penalty is not None:
        if grad_gate is None:
            grad_gate = torch.outer(grad_penalty, decoder_norms)
        else:
            grad_gate.addr_(grad_penalty, decoder_norms)
    if grad_gate is not None:
        keep_where_positive_(grad_gate, gate_acts)
    grad_b_gate = None if grad_gate is None else grad_gate.sum(0)
    if grad_mag is None:
        return grad_gate, grad_b_gate, None, None
    grad_b_mag = grad_mag.sum(0)
    # x_enc's gradient collects in the gate buffer; grad_mag is then free for r_mag's.
    if grad_gate is None:
        grad_x_enc = grad_mag * scale
    else:
        grad_x_enc = grad_gate.addcmul_(grad_mag, scale)
    # d magnitude_pre / d r_mag = x_enc * scale = magnitude_pre - b_mag
    grad_r_mag = grad_mag.mul_(magnitude_pre - b_mag).sum(0)
    return grad_x_enc, grad_b_gate, grad_b_mag, grad_r_mag
