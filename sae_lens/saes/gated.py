"""The gated SAE (Rajamanoharan et al., 2024): a binary gate (`x @ W_enc + b_gate > 0`)
decides which latents fire, a magnitude path sharing `W_enc` rescaled by `exp(r_mag)` sets
their size. Trained with MSE, an L1 penalty on the gate's ReLU weighted by decoder norms,
and an auxiliary loss reconstructing the input from the gate path alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sae_lens.saes.base import (
    Architecture,
    TrainingForward,
    TrainingLossInputs,
    affine,
    new_param,
)

if TYPE_CHECKING:
    from sae_lens.sae import SAE
    from sae_lens.training.training_sae import TrainingSAE, TrainingSAEConfig


class GatedArchitecture(Architecture):
    name = "gated"

    def init_params(self, sae: SAE) -> None:
        d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
        sae.W_enc = new_param(sae, d_in, d_sae, fill=None)
        sae.b_gate = new_param(sae, d_sae)
        sae.r_mag = new_param(sae, d_sae)
        sae.b_mag = new_param(sae, d_sae)
        sae.W_dec = new_param(sae, d_sae, d_in, fill=None)
        sae.b_dec = new_param(sae, d_in)

    def encode(self, sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Noise is never added here (as in 5.6.0): the gate is a hard threshold.
        gate_pre = x @ sae.W_enc + sae.b_gate  # [..., d_sae]
        active = (gate_pre > 0).to(sae.dtype)
        magnitude_pre = sae.hook_sae_acts_pre(x @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
        feature_acts = sae.hook_sae_acts_post(active * sae.activation_fn(magnitude_pre))
        return feature_acts, magnitude_pre

    def fold_W_dec_norm(self, sae: SAE, norms: torch.Tensor) -> None:
        # W_enc already carries the norms, so r_mag stays; both biases scale with them.
        sae.b_gate.data *= norms
        sae.b_mag.data *= norms

    def check_training_cfg(self, cfg: TrainingSAEConfig, use_error_term: bool) -> None:
        super().check_training_cfg(cfg, use_error_term)
        if use_error_term:
            raise ValueError("use_error_term=True is not supported by gated TrainingSAEs")

    def training_forward(self, sae: TrainingSAE, x: torch.Tensor) -> TrainingForward:
        # The gate and magnitude paths share one matmul (x @ (W_enc * exp(r_mag)) equals
        # (x @ W_enc) * exp(r_mag)), and the losses reuse the gate pre-activations.
        x_enc = x @ sae.W_enc  # [batch, d_sae]
        gate_pre = x_enc + sae.b_gate
        magnitude_pre = sae.hook_sae_acts_pre(torch.addcmul(sae.b_mag, x_enc, sae.r_mag.exp()))
        feature_acts = sae.hook_sae_acts_post(sae.activation_fn(magnitude_pre) * (gate_pre > 0))
        return TrainingForward(
            feature_acts, magnitude_pre, sae.decode(feature_acts), {"gate_pre": gate_pre}
        )

    def training_losses(
        self, sae: TrainingSAE, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        gate_pre = inputs.intermediates.get("gate_pre")
        if gate_pre is None:
            gate_pre = affine(inputs.x, sae.W_enc, sae.b_gate)
        gate_acts = torch.relu(gate_pre)  # [batch, d_sae]
        decoder_norms = sae.W_dec.norm(dim=1)  # [d_sae]
        l1_loss = inputs.l1_coefficient * (gate_acts @ decoder_norms).mean()
        via_gate = affine(gate_acts, sae.W_dec, sae.b_dec)  # [batch, d_in]
        aux_loss = (via_gate - inputs.sae_in).pow(2).sum(dim=-1).mean()
        return {"auxiliary_reconstruction_loss": aux_loss, "l1_loss": l1_loss}
