"""The JumpReLU SAE (Rajamanoharan et al., 2024): a latent fires only when its
pre-activation exceeds a learned per-latent threshold. Trained with MSE plus an L0
penalty; the threshold (stored as `log_threshold` while training, saved as `threshold`)
learns through a straight-through estimator with a rectangle kernel of width
`jumprelu_bandwidth`.

`jumprelu_sparsity_loss_mode="tanh"` replaces the L0 count by the smooth tanh penalty of
SAELens 6 (`tanh_sparsity`, scale `jumprelu_tanh_scale`), and `pre_act_loss_coefficient`
adds its pre-activation loss on dead latents (`pre_act_loss`); both keep
`l1_coefficient` as the sparsity coefficient."""

from __future__ import annotations

import math
from typing import Any

import torch

from sae_lens.saes import cpu_kernels
from sae_lens.saes.activations import keep_where_positive_
from sae_lens.saes.base import (
    Architecture,
    SAEModule,
    TrainingForward,
    TrainingLossInputs,
    TrainingSAEModule,
    init_linear_params,
    new_param,
)
from sae_lens.saes.fused_ops import (
    add_into,
    affine,
    decoder_weight_grad,
    hooks_active,
    pre_activation_grads,
)


def rectangle(x: torch.Tensor) -> torch.Tensor:
    """1 where -0.5 < x < 0.5, else 0 (the kernel of the pseudo-derivative)."""
    return ((x > -0.5) & (x < 0.5)).to(x)


def _window(x: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """rectangle((x - threshold) / bandwidth) as a new float tensor, computed in place
    (|u| < 0.5 is exactly -0.5 < u < 0.5)."""
    return (x - threshold).div_(bandwidth).abs_().lt_(0.5)


def _sum_to(t: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """`t` [x's shape] summed over the dimensions along which `threshold` was broadcast
    against x, giving threshold's shape (a scalar, [d_sae], [1, d_sae], ...)."""
    return t.sum_to_size(threshold.shape)


class ThresholdFunction(torch.autograd.Function):
    """An elementwise function of (x, threshold, bandwidth) whose backward needs x and the
    threshold."""

    @staticmethod
    def setup_context(
        ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor, float], output: torch.Tensor
    ) -> None:
        x, threshold, bandwidth = inputs
        ctx.save_for_backward(x, threshold)
        ctx.bandwidth = bandwidth


class Step(ThresholdFunction):
    """Heaviside step `x > threshold`; gradient flows to `threshold` only, as
    -(1/bandwidth) * rectangle((x - threshold) / bandwidth)."""

    @staticmethod
    def forward(x: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:  # type: ignore[override]
        return (x > threshold).to(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        x, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        kernel = _window(x, threshold, bandwidth).mul_(grad_output)
        return None, -(1.0 / bandwidth) * _sum_to(kernel, threshold), None


class JumpReLU(ThresholdFunction):
    """`x * (x > threshold)`; `x` gets the plain gradient where the latent fires,
    `threshold` the pseudo-derivative -(threshold/bandwidth) * rectangle((x - threshold)/bandwidth)."""

    @staticmethod
    def forward(x: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:  # type: ignore[override]
        return x * (x > threshold)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        x_grad = grad_output * (x > threshold)
        kernel = _window(x, threshold, bandwidth).mul_(grad_output)
        return x_grad, -(threshold / bandwidth) * _sum_to(kernel, threshold), None


class JumpReLUDecode(torch.autograd.Function):
    """The encoder's bias, `JumpReLU`, the decoder matmul and the per-token count of firing
    latents (`Step` summed over d_sae), for a non-negative threshold. From x_enc = x @ W_enc,
    which it overwrites: (hidden_pre = x_enc + b_enc, in x_enc's memory, feature_acts
    [batch, d_sae], feature_acts @ W_dec [batch, d_in], l0 [batch]). The gradients are
    those of the separate functions, with the rectangle kernel computed once and the
    latents' gradient built in one buffer of its own. On CPU the elementwise work of each
    direction is one fused kernel (`cpu_kernels`); elsewhere torch ops that avoid boolean
    [batch, d_sae] temporaries (each costs slow extra passes)."""

    @staticmethod
    def forward(  # type: ignore[override]
        x_enc: torch.Tensor,
        b_enc: torch.Tensor,
        threshold: torch.Tensor,
        W_dec: torch.Tensor,
        bandwidth: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if cpu_kernels.serves(x_enc, b_enc, threshold):
            feature_acts, l0 = cpu_kernels.jumprelu_forward_(x_enc, b_enc, threshold)
        else:
            hidden_pre = x_enc.add_(b_enc)
            shifted = hidden_pre - threshold  # > 0 exactly where hidden_pre > threshold
            feature_acts = torch.ops.aten.threshold_backward(hidden_pre, shifted, 0.0)
            l0 = shifted.gt_(0.0).sum(dim=-1)
        return x_enc, feature_acts, feature_acts @ W_dec, l0

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        x_enc, _, threshold, W_dec, bandwidth = inputs
        hidden_pre, feature_acts, _, _ = output
        ctx.mark_dirty(x_enc)
        ctx.save_for_backward(hidden_pre, threshold, feature_acts, W_dec)
        ctx.bandwidth = bandwidth
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_hidden_pre: torch.Tensor | None,
        grad_acts: torch.Tensor | None,
        grad_latent_sum: torch.Tensor | None,
        grad_l0: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        hidden_pre, threshold, feature_acts, W_dec = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        # d loss / d feature_acts, in a buffer of our own
        grad = None if grad_latent_sum is None else grad_latent_sum @ W_dec.t()
        grad = add_into(grad, grad_acts)
        if grad_l0 is not None:
            grad_l0 = grad_l0.contiguous()  # a loss's mean gives a broadcast
        elif grad is not None and cpu_kernels.serves(grad):
            grad_l0 = grad.new_zeros(grad.shape[0])  # l0 unused (tanh loss): the CPU kernel
        grad_bias = None
        if (
            grad is not None
            and grad_l0 is not None
            and cpu_kernels.serves(grad, grad_l0, hidden_pre, threshold)
        ):
            grad_pre, grad_threshold, grad_bias = cpu_kernels.jumprelu_backward_(
                grad, grad_l0, hidden_pre, threshold, bandwidth
            )
        else:
            grad_pre, grad_threshold = _jumprelu_grads(
                grad, grad_l0, hidden_pre, threshold, feature_acts, bandwidth
            )
        grad_pre, grad_bias = pre_activation_grads(grad_pre, grad_bias, grad_hidden_pre)
        grad_W_dec = None
        if ctx.needs_input_grad[3] and grad_latent_sum is not None:
            grad_W_dec = decoder_weight_grad(feature_acts, grad_latent_sum)
        return grad_pre, grad_bias, grad_threshold, grad_W_dec, None


def _jumprelu_grads(
    grad: torch.Tensor | None,
    grad_l0: torch.Tensor | None,
    hidden_pre: torch.Tensor,
    threshold: torch.Tensor,
    feature_acts: torch.Tensor,
    bandwidth: float,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(d hidden_pre, d threshold) of `JumpReLUDecode` with torch ops, from grad = d loss /
    d feature_acts (a buffer of the caller's, overwritten) and d loss / d l0."""
    kernel = _window(hidden_pre, threshold, bandwidth)  # [batch, d_sae]
    # threshold grad = -(1/bandwidth) * sum over the batch of kernel * (threshold * grad +
    # grad_l0): the Step term is a matrix-vector product.
    grad_threshold = torch.zeros_like(threshold)
    if grad_l0 is not None:
        grad_threshold += grad_l0 @ kernel
    if grad is not None:
        grad_threshold += threshold * kernel.mul_(grad).sum(0)
        # feature_acts > 0 exactly where hidden_pre > threshold (threshold >= 0)
        keep_where_positive_(grad, feature_acts)
    return grad, grad_threshold.mul_(-1.0 / bandwidth)


def tanh_sparsity(feature_acts: torch.Tensor, W_dec: torch.Tensor, scale: float) -> torch.Tensor:
    """The tanh sparsity penalty per token [batch] (Anthropic, 2025; SAELens 6's "tanh"
    mode): sum_i tanh(scale * f_i * ||W_dec[i]||), a smooth stand-in for the L0 count."""
    return torch.tanh(scale * feature_acts * W_dec.norm(dim=1)).sum(dim=-1)


def pre_act_loss(
    hidden_pre: torch.Tensor,
    threshold: torch.Tensor,
    W_dec: torch.Tensor,
    dead_neuron_mask: torch.Tensor | None,
) -> torch.Tensor:
    """The pre-activation loss (Anthropic, 2025, as SAELens 6 computes it): for dead
    latents only, mean over the batch of sum_i relu(threshold_i - hidden_pre_i) *
    ||W_dec[i]||, which pulls a dead latent's pre-activation up towards its threshold.
    0 when no latent is dead."""
    if dead_neuron_mask is None or not bool(dead_neuron_mask.any()):
        return hidden_pre.new_tensor(0.0)
    dead = dead_neuron_mask.nonzero().squeeze(1)  # [n_dead]
    gap = (threshold[dead] - hidden_pre.index_select(-1, dead)).relu()  # [batch, n_dead]
    return (gap @ W_dec[dead].norm(dim=1)).mean()


def _can_fuse(sae: TrainingSAEModule, x: torch.Tensor) -> bool:
    """Whether `JumpReLUDecode` computes exactly what the step-by-step path would: a
    [batch, d_in] input, no fine-tuning scale, no training noise, no autocast, and no hook
    on the pre- or post-activations (the fused path does not call them)."""
    return (
        x.dim() == 2
        and not sae.cfg.finetuning_scaling_factor
        and not (sae.training and sae.cfg.noise_scale > 0)
        and not torch.is_autocast_enabled(x.device.type)
        and not hooks_active(sae.hook_sae_acts_pre, sae.hook_sae_acts_post)
    )


# jumprelu_sparsity_loss_mode: "step" is the L0 count (Rajamanoharan et al., 5.6.0's
# loss), "tanh" the smooth penalty of `tanh_sparsity`.
SPARSITY_LOSS_MODES = ("step", "tanh")


class JumpReLUArchitecture(Architecture):
    name = "jumprelu"

    def init_params(self, sae: SAEModule) -> None:
        sae.threshold = new_param(sae, sae.cfg.d_sae)
        init_linear_params(sae)

    def encode(self, sae: SAEModule, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.hook_sae_acts_pre(x @ sae.W_enc + sae.b_enc)  # [..., d_sae]
        feature_acts = sae.activation_fn(hidden_pre) * (hidden_pre > sae.threshold)
        return sae.hook_sae_acts_post(feature_acts), hidden_pre

    def fold_W_dec_norm(self, sae: SAEModule, norms: torch.Tensor) -> None:
        sae.threshold.data *= norms
        sae.b_enc.data *= norms

    def init_training_params(self, sae: TrainingSAEModule) -> None:
        # log_threshold first: parameters (and state dict keys) in 5.6.0's order
        sae.log_threshold = new_param(
            sae, sae.cfg.d_sae, fill=math.log(sae.cfg.jumprelu_init_threshold)
        )
        init_linear_params(sae)

    def training_encode(
        self, sae: TrainingSAEModule, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_pre = sae.add_training_noise(sae.hook_sae_acts_pre(affine(x, sae.W_enc, sae.b_enc)))
        feature_acts = JumpReLU.apply(hidden_pre, sae.threshold, sae.cfg.jumprelu_bandwidth)
        return sae.hook_sae_acts_post(feature_acts), hidden_pre

    def training_forward(self, sae: TrainingSAEModule, x: torch.Tensor) -> TrainingForward:
        if not (self.encodes_like(JumpReLUArchitecture) and _can_fuse(sae, x)):
            return Architecture.training_forward(self, sae, x)
        # The bias, the step function of the L0 penalty, the JumpReLU and the decoder matmul
        # in one autograd function.
        hidden_pre, feature_acts, latent_sum, l0 = JumpReLUDecode.apply(
            x @ sae.W_enc, sae.b_enc, sae.threshold, sae.W_dec, sae.cfg.jumprelu_bandwidth
        )
        return TrainingForward(feature_acts, hidden_pre, sae.finish_decode(latent_sum), {"l0": l0})

    def check_cfg(self, cfg: Any) -> None:
        mode = cfg.jumprelu_sparsity_loss_mode
        if mode not in SPARSITY_LOSS_MODES:
            raise ValueError(
                f"jumprelu_sparsity_loss_mode must be one of {list(SPARSITY_LOSS_MODES)}, got {mode!r}"
            )
        if not cfg.jumprelu_tanh_scale > 0:
            raise ValueError(f"jumprelu_tanh_scale must be > 0, got {cfg.jumprelu_tanh_scale!r}")
        coefficient = cfg.pre_act_loss_coefficient
        if coefficient is not None and not coefficient >= 0:
            raise ValueError(
                f"pre_act_loss_coefficient must be >= 0 or None (off), got {coefficient!r}"
            )

    def training_losses(
        self, sae: TrainingSAEModule, inputs: TrainingLossInputs
    ) -> dict[str, torch.Tensor]:
        if sae.cfg.jumprelu_sparsity_loss_mode == "tanh":
            penalty = tanh_sparsity(inputs.feature_acts, sae.W_dec, sae.cfg.jumprelu_tanh_scale)
        else:
            penalty = inputs.intermediates.get("l0")  # [batch]
            if penalty is None:
                fired = Step.apply(inputs.hidden_pre, sae.threshold, sae.cfg.jumprelu_bandwidth)
                penalty = fired.sum(dim=-1)
        losses = {"l0_loss": (inputs.l1_coefficient * penalty).mean()}
        coefficient = sae.cfg.pre_act_loss_coefficient
        if coefficient is not None:
            losses["pre_act_loss"] = coefficient * pre_act_loss(
                inputs.hidden_pre, sae.threshold, sae.W_dec, inputs.dead_neuron_mask
            )
        return losses

    def fold_training_W_dec_norm(self, sae: TrainingSAEModule, norms: torch.Tensor) -> None:
        sae.log_threshold.data += norms.log()
        sae.b_enc.data *= norms

    def training_state_dict_for_saving(self, state_dict: dict[str, Any]) -> None:
        if "log_threshold" in state_dict:
            state_dict["threshold"] = state_dict.pop("log_threshold").exp().detach().contiguous()

    def training_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        if "threshold" in state_dict:
            state_dict["log_threshold"] = state_dict.pop("threshold").log().detach().contiguous()
