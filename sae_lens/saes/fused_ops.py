"""Tensor helpers shared by the architectures' fused training steps: when a fused path
may stand in for the step-by-step one (no hooks would run: `hooks_active`, from
sae_lens.module_hooks), the affine map, and gradient buffers that are added into in
place."""

from __future__ import annotations

import torch

from sae_lens.module_hooks import hooks_active as hooks_active


def affine(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`x @ W + b` for x [..., d_in], W [d_in, d_out], b [d_out]; one fused addmm (no
    separate pass to add the bias) when x is a matrix."""
    if x.dim() == 2:
        return torch.addmm(b, x, W)
    return x @ W + b


def add_into(owned: torch.Tensor | None, other: torch.Tensor | None) -> torch.Tensor | None:
    """owned + other for gradient buffers that may be None, adding into `owned` (a buffer
    the caller made and may overwrite) when it exists."""
    if other is None:
        return owned
    return other.clone() if owned is None else owned.add_(other)


def pre_activation_grads(
    grad_pre: torch.Tensor | None,
    grad_bias: torch.Tensor | None,
    grad_hidden_pre: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d hidden_pre, d b_enc) of a fused step whose hidden_pre = x_enc + b_enc is also an
    output: adds the gradient a caller's loss sent to hidden_pre into `grad_pre` (the
    step's own buffer), and sums the bias gradient over the batch unless a kernel already
    did (`grad_bias`) and nothing was added since."""
    if grad_hidden_pre is not None:
        grad_pre, grad_bias = add_into(grad_pre, grad_hidden_pre), None
    if grad_bias is None and grad_pre is not None:
        grad_bias = grad_pre.sum(0)
    return grad_pre, grad_bias


def decoder_weight_grad(latents: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """latents.T @ grad_out ([d_sae, d_in], the gradient of W_dec in latents @ W_dec) for
    latents [batch, d_sae], computed as (grad_out.T @ latents).T: the same products, about
    15% faster on CPU, where a matmul whose first operand is a transposed [batch, d_sae]
    matrix is the slowest layout of a training step."""
    return (grad_out.t() @ latents).t().contiguous()
