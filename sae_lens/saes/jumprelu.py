"""The JumpReLU SAE (Rajamanoharan et al., 2024): a latent fires only when its
pre-activation exceeds a learned per-latent threshold. Trained with MSE plus an L0
penalty; the threshold (stored as `log_threshold` while training, saved as `threshold`)
learns through a straight-through estimator with a rectangle kernel of width
`jumprelu_bandwidth`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from sae_lens.saes.base import Architecture, TrainingLossInputs, init_linear_params, new_param

if TYPE_CHECKING:
    from sae_lens.sae import SAE
    from sae_lens.training.training_sae import TrainingSAE


def rectangle(x: torch.Tensor) -> torch.Tensor:
    """1 where -0.5 < x < 0.5, else 0 (the kernel of the pseudo-derivative)."""
    return ((x > -0.5) & (x < 0.5)).to(x)


def _threshold_grad(summand: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Sum a per-element threshold gradient [..., d_sae] down to threshold's shape [d_sae]."""
    return summand.reshape(-1, threshold.shape[-1]).sum(dim=0)


class Step(torch.autograd.Function):
    """Heaviside step `x > threshold`; gradient flows to `threshold` only, as
    -(1/bandwidth) * rectangle((x - threshold) / bandwidth)."""

    @staticmethod
    def forward(x: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:  # type: ignore[override]
        return (x > threshold).to(x)

    @staticmethod
    def setup_context(
        ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor, float], output: torch.Tensor
    ) -> None:
        x, threshold, bandwidth = inputs
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        x, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        kernel = rectangle((x - threshold) / bandwidth)
        return None, _threshold_grad(-(1.0 / bandwidth) * kernel * grad_output, threshold), None


class JumpReLU(torch.autograd.Function):
    """`x * (x > threshold)`; `x` gets the plain gradient where the latent fires,
    `threshold` the pseudo-derivative -(threshold/bandwidth) * rectangle((x - threshold)/bandwidth)."""

    @staticmethod
    def forward(x: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:  # type: ignore[override]
        return (x * (x > threshold)).to(x)

    @staticmethod
    def setup_context(
        ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor, float], output: torch.Tensor
    ) -> None:
        x, threshold, bandwidth = inputs
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        x_grad = (x > threshold) * grad_output
        kernel = rectangle((x - threshold) / bandwidth)
        threshold_grad = _threshold_grad(-(threshold / bandwidth) * kernel * grad_output, threshold)
        return x_grad, threshold_grad, None


class JumpReLUArchitecture(Architecture):
    name = "jumprelu"

    def init_params(self, sae: SAE) -> None:
        sae.threshold = new_param(sae, sae.cfg.d_sae)
        init_linear_params(sae)

    def encode(self, sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc)  # [..., d_sae]
        feature_acts = sae.activation_fn(hidden_pre) * (hidden_pre > sae.threshold)
        return sae.hook_sae_acts_post(feature_acts), hidden_pre

    def fold_W_dec_norm(self, sae: SAE, norms: torch.Tensor) -> None:
        sae.threshold.data *= norms
        sae.b_enc.data *= norms

    def init_training_params(self, sae: TrainingSAE) -> None:
        init_linear_params(sae)
        sae.log_threshold = new_param(
            sae, sae.cfg.d_sae, fill=math.log(sae.cfg.jumprelu_init_threshold)
        )

    def training_encode(
        self, sae: TrainingSAE, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.add_training_noise(sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc))
        feature_acts = JumpReLU.apply(hidden_pre, sae.threshold, sae.cfg.jumprelu_bandwidth)
        return sae.hook_sae_acts_post(feature_acts), hidden_pre

    def training_losses(
        self, sae: TrainingSAE, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        fired = Step.apply(inputs.hidden_pre, sae.threshold, sae.cfg.jumprelu_bandwidth)
        l0 = fired.sum(dim=-1)  # [batch]
        return {"l0_loss": (inputs.l1_coefficient * l0).mean()}

    def fold_training_W_dec_norm(self, sae: TrainingSAE, norms: torch.Tensor) -> None:
        sae.log_threshold.data += norms.log()
        sae.b_enc.data *= norms

    def training_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        if "log_threshold" in state_dict:
            state_dict["threshold"] = state_dict.pop("log_threshold").exp().detach().contiguous()

    def training_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        if "threshold" in state_dict:
            state_dict["log_threshold"] = state_dict.pop("threshold").log().detach().contiguous()
