"""The TopK SAE (Gao et al., 2024): each token keeps exactly its k largest
pre-activations (k = `activation_fn_kwargs["k"]`). Trained with MSE plus the AuxK loss,
in which the top dead latents learn to reconstruct the residual. Training touches only the
k active latents of each token after the encoder's one dense matmul: the decoder
(`sparse_decode`) forward and backward, and the encoder's backward (`topk_encode`); see
`sae_lens.saes.sparse_kernels`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sae_lens.saes.activations import TopK
from sae_lens.saes.base import (
    FIRING_COUNTS,
    Architecture,
    TrainingConfig,
    TrainingForward,
    TrainingLossInputs,
    TrainingSAEModule,
    firing_counts,
)
from sae_lens.saes.fused_ops import affine, hooks_active
from sae_lens.saes.sparse_kernels import sparse_decode, topk_encode
from sae_lens.saes.stacked import stacked_topk_forward
from sae_lens.saes.standard import StandardArchitecture
from sae_lens.saes.topk_step import topk_sae_forward_with_kept

__all__ = ["TopKArchitecture", "sparse_decode", "topk_aux_acts", "topk_aux_loss"]


def _can_fuse(sae: TrainingSAEModule, x: torch.Tensor) -> bool:
    """Whether the fused encoder (`topk_encode`) computes exactly what the step-by-step
    path would: a [batch, d_in] input, a ReLU after the TopK, no autocast, and no hook on
    the pre- or post-activations (the fused path does not call them)."""
    activation = sae.activation_fn
    return (
        x.dim() == 2
        and isinstance(activation, TopK)
        and isinstance(activation.postact_fn, torch.nn.ReLU)
        and not torch.is_autocast_enabled(x.device.type)
        and not hooks_active(sae.hook_sae_acts_pre, sae.hook_sae_acts_post)
    )


def _no_noise_or_scale(sae: TrainingSAEModule) -> bool:
    """Whether `topk_sae_forward` applies: no training noise, no fine-tuning scale."""
    return not sae.cfg.finetuning_scaling_factor and not (sae.training and sae.cfg.noise_scale > 0)


def topk_aux_acts(
    hidden_pre: torch.Tensor, dead_neuron_mask: torch.Tensor, k_aux: int
) -> torch.Tensor:
    """hidden_pre [batch, d_sae] kept only at each token's k_aux largest dead latents."""
    dead_pre = torch.where(dead_neuron_mask[None], hidden_pre, -torch.inf)
    top = dead_pre.topk(k_aux, dim=-1, sorted=False)
    return torch.zeros_like(hidden_pre).scatter(-1, top.indices, top.values)


def topk_aux_loss(
    sae: TrainingSAEModule,
    sae_in: torch.Tensor,
    sae_out: torch.Tensor,
    hidden_pre: torch.Tensor,
    dead_neuron_mask: torch.Tensor | None,
) -> torch.Tensor:
    """AuxK loss (as 5.6.0, without variance normalisation): the top d_sae//2 dead latents
    reconstruct the residual `sae_in - sae_out`; scaled by min(n_dead / (d_sae//2), 1)."""
    n_dead = 0 if dead_neuron_mask is None else int(dead_neuron_mask.sum())
    if dead_neuron_mask is None or n_dead == 0:
        return sae_out.new_tensor(0.0)
    k_aux = hidden_pre.shape[-1] // 2
    scale = min(n_dead / k_aux, 1.0)
    aux_acts = topk_aux_acts(hidden_pre, dead_neuron_mask, min(k_aux, n_dead))
    residual = sae_in - sae_out
    return scale * (sae.decode(aux_acts) - residual).pow(2).sum(dim=-1).mean()


class TopKArchitecture(StandardArchitecture):
    """Standard's parameters and inference encode (the activation is `TopK`); its own
    training forward (sparse decode) and loss (AuxK instead of an Lp penalty)."""

    name = "topk"
    supports_ghost_grads = False
    default_activation_fn = "topk"
    default_activation_fn_kwargs = {"k": 100}
    required_activation_fn = "topk"

    def check_training_cfg(self, cfg: TrainingConfig, use_error_term: bool) -> None:
        super().check_training_cfg(cfg, use_error_term)
        if cfg.activation_fn_str != "topk":
            raise ValueError(
                f"topk SAEs need activation_fn_str='topk', got {cfg.activation_fn_str!r}"
            )

    def training_forward(self, sae: TrainingSAEModule, x: torch.Tensor) -> TrainingForward:
        if not self.encodes_like(TopKArchitecture):
            return Architecture.training_forward(self, sae, x)
        activation: TopK = sae.activation_fn  # type: ignore[assignment]
        if _can_fuse(sae, x) and _no_noise_or_scale(sae):
            # The whole step in one function: no dense backward, the top-k and the
            # weight gradients as single passes (see topk_step).
            latent_sum, feature_acts, hidden_pre, values, indices = topk_sae_forward_with_kept(
                x, sae.W_enc, sae.b_enc, sae.W_dec, activation.k
            )
            counts = {FIRING_COUNTS: firing_counts(values, indices, sae.cfg.d_sae)}
            return TrainingForward(feature_acts, hidden_pre, sae.finish_decode(latent_sum), counts)
        counts = {}
        if _can_fuse(sae, x):
            # One dense matmul; the backward touches only the k selected latents.
            values, indices, hidden_pre = topk_encode(
                x, sae.W_enc, sae.b_enc, activation.k, sae.add_training_noise
            )
            feature_acts = torch.zeros_like(hidden_pre).scatter_(-1, indices, values)
            counts[FIRING_COUNTS] = firing_counts(values, indices, sae.cfg.d_sae)
        else:
            hidden_pre = sae.add_training_noise(
                sae.hook_sae_acts_pre(affine(x, sae.W_enc, sae.b_enc))
            )
            values, indices = activation.select(hidden_pre)  # [batch, k] each
            feature_acts = sae.hook_sae_acts_post(
                torch.zeros_like(hidden_pre).scatter(-1, indices, values)
            )  # [batch, d_sae]
            values = feature_acts.gather(-1, indices)  # as a hook left them
        if sae.cfg.finetuning_scaling_factor:
            values = values * sae.finetuning_scaling_factor[indices]
        sae_out = sae.finish_decode(sparse_decode(values, indices, sae.W_dec))
        return TrainingForward(feature_acts, hidden_pre, sae_out, counts)

    def stack_key(self, sae: TrainingSAEModule, x: torch.Tensor) -> tuple[Any, ...] | None:
        if type(self) is not TopKArchitecture or not (
            _can_fuse(sae, x) and _no_noise_or_scale(sae)
        ):
            return None
        activation: TopK = sae.activation_fn  # type: ignore[assignment]
        return (self.name, sae.cfg.d_in, sae.cfg.d_sae, activation.k)

    def stacked_training_forward(
        self, saes: Sequence[TrainingSAEModule], x: torch.Tensor
    ) -> list[TrainingForward]:
        activation: TopK = saes[0].activation_fn  # type: ignore[assignment]
        return stacked_topk_forward(saes, x, activation.k)

    def set_k(self, sae: TrainingSAEModule, k: int) -> None:
        activation: TopK = sae.activation_fn  # type: ignore[assignment]
        activation.k = int(k)

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        aux = topk_aux_loss(
            sae, inputs.sae_in, inputs.sae_out, inputs.hidden_pre, inputs.dead_neuron_mask
        )
        return {"auxiliary_reconstruction_loss": aux}
