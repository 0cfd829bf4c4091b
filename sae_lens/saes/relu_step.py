"""The standard (ReLU + L1) SAE's training step as one autograd function: encoder matmul,
bias, ReLU, L1 penalty and decoder matmul, forward and backward.

A trained ReLU SAE fires few latents per token (an L0 of tens out of thousands), and every
matmul but the encoder's forward only needs the nonzero latents: the ReLU's derivative is
zero elsewhere. So when at most `SPARSE_DENSITY` of the latents are nonzero (on CPU, where
the kernels run), the step keeps them as entries in row order and runs the decoder forward
as an embedding bag and the whole backward as the sparse kernels of TopK
(`cpu_kernels.entries_backward`): one dense matmul instead of six. Denser batches (the
first steps of a run, when half the latents fire) take the dense path: one elementwise
kernel each way (`cpu_kernels.relu_forward_`, `relu_backward`) around the matmuls, or torch
ops on other devices and dtypes. Both paths compute the same values up to summation order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sae_lens.saes import cpu_kernels
from sae_lens.saes.activations import keep_where_positive_
from sae_lens.saes.fused_ops import add_into, decoder_weight_grad, pre_activation_grads

# The largest fraction of nonzero latents for which the sparse path is used: there the
# scattered products of the sparse backward (less efficient per operation than a dense
# matmul) cost less than the five dense matmuls they replace (break-even measured near
# 1/20 at d_in 128 and 256, d_sae 16 x d_in, on CPU).
SPARSE_DENSITY = 1 / 24


def relu_step(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden_pre = x @ W_enc + b_enc, acts = relu(hidden_pre) [batch, d_sae],
    acts @ W_dec [batch, d_out], the penalty acts @ weights [batch]) for x [batch, d_in],
    W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_out], weights [d_sae]; gradients
    reach every input through every output."""
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] = _ReLUStep.apply(
        x, W_enc, b_enc, W_dec, weights
    )
    return out


class _ReLUStep(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_pre = x @ W_enc  # [batch, d_sae], turned into hidden_pre in place
        entries = None
        if cpu_kernels.serves(hidden_pre, b_enc, weights):
            acts, penalty, counts = cpu_kernels.relu_forward_(hidden_pre, b_enc, weights)
            sparse = int(counts.sum()) <= SPARSE_DENSITY * acts.numel()
            if sparse and cpu_kernels.serves(x, W_enc, W_dec, acts):
                entries = cpu_kernels.nonzero_entries(acts, counts)
        else:
            acts = hidden_pre.add_(b_enc).relu()
            penalty = acts @ weights
        if entries is None:
            latent_sum = acts @ W_dec
        else:  # [batch, d_out] from the nonzero latents only
            row_offsets, _, latents, values = entries
            latent_sum = F.embedding_bag(
                latents, W_dec, row_offsets[:-1], mode="sum", per_sample_weights=values
            )
        ctx.entries = entries
        ctx.save_for_backward(x, W_enc, W_dec, weights, acts)
        ctx.set_materialize_grads(False)  # unused outputs get no dense zero gradient
        return hidden_pre, acts, latent_sum, penalty

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_hidden_pre: torch.Tensor | None,
        grad_acts: torch.Tensor | None,
        grad_sum: torch.Tensor | None,
        grad_penalty: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        x, W_enc, W_dec, weights, acts = ctx.saved_tensors
        from_outputs = (grad_acts, grad_sum, grad_penalty)
        if ctx.entries is None:
            need_weights = ctx.needs_input_grad[4]
            grads = _dense_backward(
                x, W_enc, W_dec, weights, acts, *from_outputs, grad_hidden_pre, need_weights
            )
        else:
            grads = _sparse_backward(ctx.entries, x, W_enc, W_dec, weights, *from_outputs)
            if grad_hidden_pre is not None:  # dense: [batch, d_sae]
                grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_weights = grads
                grads = (
                    _add_product(grad_x, grad_hidden_pre, W_enc.t()),
                    _add_product(grad_W_enc, x.t(), grad_hidden_pre),
                    add_into(grad_b_enc, grad_hidden_pre.sum(0)),
                    grad_W_dec,
                    grad_weights,
                )
        return tuple(g if n else None for g, n in zip(grads, ctx.needs_input_grad, strict=True))


def _add_product(owned: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """owned + a @ b, adding into `owned` (a buffer of the caller's) when it exists."""
    return a @ b if owned is None else owned.addmm_(a, b)


def _sparse_backward(
    entries: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    x: torch.Tensor,
    W_enc: torch.Tensor,
    W_dec: torch.Tensor,
    weights: torch.Tensor,
    grad_acts: torch.Tensor | None,
    grad_sum: torch.Tensor | None,
    grad_penalty: torch.Tensor | None,
) -> tuple[torch.Tensor | None, ...]:
    _, tokens, latents, values = entries
    grad_values = values.new_zeros(values.shape)  # [nnz], overwritten by the kernel
    if grad_acts is not None:
        grad_values += grad_acts[tokens, latents]
    n = x.shape[0]
    grad_sum = x.new_zeros(n, W_dec.shape[1]) if grad_sum is None else grad_sum.contiguous()
    grad_penalty = x.new_zeros(n) if grad_penalty is None else grad_penalty.contiguous()
    return cpu_kernels.entries_backward(
        grad_sum, x, W_enc, W_dec, entries, grad_values, grad_penalty, weights.contiguous()
    )


def _dense_backward(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    W_dec: torch.Tensor,
    weights: torch.Tensor,
    acts: torch.Tensor,
    grad_acts: torch.Tensor | None,
    grad_sum: torch.Tensor | None,
    grad_penalty: torch.Tensor | None,
    grad_hidden_pre: torch.Tensor | None,
    need_weights: bool,
) -> tuple[torch.Tensor | None, ...]:
    """The gradient of the latents built in one [batch, d_sae] buffer of ours, masked by
    the ReLU in place (one CPU kernel with the penalty, the bias sum and, when
    `need_weights`, the penalty weights' gradient), plus any gradient of hidden_pre, then
    the two encoder matmuls."""
    grad = None if grad_sum is None else grad_sum @ W_dec.t()  # [batch, d_sae], ours
    if grad_penalty is not None:
        grad_penalty = grad_penalty.contiguous()  # a loss's mean gives a broadcast
    grad_bias = grad_weights = None
    if (
        grad_acts is None
        and grad is not None
        and grad_penalty is not None
        and cpu_kernels.serves(grad, acts, grad_penalty, weights)
    ):
        grad_pre, grad_bias, grad_weights = cpu_kernels.relu_backward(
            grad, acts, grad_penalty, weights, want_weights_grad=need_weights
        )
    else:
        if grad_penalty is not None:
            if grad is None:
                grad = torch.outer(grad_penalty, weights)
            else:
                grad.addr_(grad_penalty, weights)
        grad = add_into(grad, grad_acts)
        grad_pre = None if grad is None else keep_where_positive_(grad, acts)  # ReLU
        if need_weights and grad_penalty is not None:
            grad_weights = acts.t() @ grad_penalty
    grad_pre, grad_bias = pre_activation_grads(grad_pre, grad_bias, grad_hidden_pre)
    grad_W_dec = None if grad_sum is None else decoder_weight_grad(acts, grad_sum)
    if grad_pre is None:
        return None, None, None, grad_W_dec, grad_weights
    return grad_pre @ W_enc.t(), x.t() @ grad_pre, grad_bias, grad_W_dec, grad_weights
