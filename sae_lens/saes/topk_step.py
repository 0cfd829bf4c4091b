"""A TopK SAE's training step as one autograd function: encoder matmul, per-token top-k
(ReLU'd), the dense latents, and the sparse decode; its backward touches only the k kept
latents of each token (no [batch, d_sae] work unless the pre-activations themselves get a
gradient, as from the AuxK loss).

On CPU (float32/float64) the selection and the whole sparse backward are numba kernels
(`cpu_kernels.topk_relu_`, `cpu_kernels.topk_backward`): one pass over each row adds the
bias, bounds the k-th largest entry from below with group maxima and heap-selects the few
entries above the bound, writing the dense latents as it goes; the backward computes the
input gradient per token and the gradients of W_enc, b_enc and W_dec in one pass over the
entries sorted by latent. Other devices and dtypes run the same structure with torch ops
(`torch.topk`, embedding bags and sparse x dense products from
`sae_lens.saes.sparse_kernels`).
"""

from __future__ import annotations

from typing import Any

import torch

from sae_lens.saes import cpu_kernels
from sae_lens.saes.sparse_kernels import _embedding_bag, _scatter_outer


def topk_sae_forward(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latent_sum [batch, d_out] = feature_acts @ W_dec, feature_acts [batch, d_sae],
    hidden_pre [batch, d_sae]) for x [batch, d_in], W_enc [d_in, d_sae], b_enc [d_sae],
    W_dec [d_sae, d_out]: hidden_pre = x @ W_enc + b_enc, feature_acts its k largest per
    row, ReLU'd, zero elsewhere. Gradients reach x, W_enc, b_enc and W_dec through all
    three outputs."""
    latent_sum, acts, hidden_pre, _, _ = topk_sae_forward_with_kept(x, W_enc, b_enc, W_dec, k)
    return latent_sum, acts, hidden_pre


def topk_sae_forward_with_kept(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, k: int
) -> tuple[torch.Tensor, ...]:
    """`topk_sae_forward`'s three outputs, then the kept values and their indices
    ([batch, k] each)."""
    return _TopKStep.apply(x, W_enc, b_enc, W_dec, k)  # type: ignore[no-any-return]


def _encode_select(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int
) -> tuple[torch.Tensor, ...]:
    """(hidden_pre [batch, d_sae], values [batch, k] ReLU'd, indices [batch, k], acts
    [batch, d_sae]). On CPU, for finite inputs, the numba kernel (which also adds the
    bias, sparing addmm's broadcast copy of it); torch.topk otherwise, which ranks NaN
    first, so that a NaN reaches the loss."""
    if (
        0 < k <= W_enc.shape[1]
        and cpu_kernels.serves(x, W_enc, b_enc)
        and bool(torch.isfinite(x.sum() + W_enc.sum() + b_enc.sum()))  # a CPU-only sync
    ):
        hidden_pre = x @ W_enc
        return (hidden_pre, *cpu_kernels.topk_relu_(hidden_pre, b_enc, k))
    hidden_pre = torch.addmm(b_enc, x, W_enc)
    return (hidden_pre, *_torch_select(hidden_pre, k))


def _torch_select(hidden_pre: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    top = hidden_pre.topk(k, dim=-1, sorted=False)
    values = top.values.relu_()
    return values, top.indices, torch.zeros_like(hidden_pre).scatter_(-1, top.indices, values)


class _TopKStep(torch.autograd.Function):
    """Outputs (latent_sum, acts, hidden_pre, values, indices); the caller uses the first
    three, the last two are what the backward needs of the selection."""

    @staticmethod
    def forward(  # type: ignore[override]
        x: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        k: int,
    ) -> tuple[torch.Tensor, ...]:
        # [batch, d_sae], [batch, k] x 2, [batch, d_sae]
        hidden_pre, values, indices, acts = _encode_select(x, W_enc, b_enc, k)
        latent_sum = _embedding_bag(indices, W_dec, values)  # [batch, d_out]
        return latent_sum, acts, hidden_pre, values, indices

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        x, W_enc, _, W_dec, _ = inputs
        values, indices = output[3:]
        ctx.mark_non_differentiable(indices)
        ctx.set_materialize_grads(False)  # unused outputs get no dense zero gradient
        ctx.save_for_backward(x, W_enc, W_dec, values, indices)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_sum: torch.Tensor | None,
        grad_acts: torch.Tensor | None,
        grad_hidden_pre: torch.Tensor | None,
        grad_kept: torch.Tensor | None,
        grad_indices: None,
    ) -> tuple[torch.Tensor | None, ...]:
        x, W_enc, W_dec, values, indices = ctx.saved_tensors
        grad_values = values.new_zeros(values.shape)  # [batch, k], ours to overwrite
        if grad_acts is not None:
            grad_values += grad_acts.gather(-1, indices)
        if grad_kept is not None:
            grad_values += grad_kept
        if grad_sum is None:
            grad_sum = x.new_zeros(x.shape[0], W_dec.shape[1])
        grad_sum = grad_sum.contiguous()  # [batch, d_out]
        if cpu_kernels.serves(grad_sum, x, W_enc, W_dec, values):
            grads = cpu_kernels.topk_backward(
                grad_sum, x, W_enc, W_dec, values, indices, grad_values
            )
        else:
            grads = _torch_backward(grad_sum, x, W_enc, W_dec, values, indices, grad_values)
        grad_x, grad_W_enc, grad_b_enc, grad_W_dec = grads
        if grad_hidden_pre is not None:  # dense: [batch, d_sae]
            grad_x = grad_x.addmm_(grad_hidden_pre, W_enc.t())
            grad_W_enc = grad_W_enc.addmm_(x.t(), grad_hidden_pre)
            grad_b_enc = grad_b_enc.add_(grad_hidden_pre.sum(0))
        need = ctx.needs_input_grad
        return (
            grad_x if need[0] else None,
            grad_W_enc if need[1] else None,
            grad_b_enc if need[2] else None,
            grad_W_dec if need[3] else None,
            None,
        )


def _torch_backward(
    grad_sum: torch.Tensor,
    x: torch.Tensor,
    W_enc: torch.Tensor,
    W_dec: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    grad_values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`cpu_kernels.topk_backward` with torch ops (any device and dtype)."""
    d_sae = W_dec.shape[0]
    with torch.enable_grad():  # grad_values[n, j] += grad_sum[n] . W_dec[indices[n, j]]
        probe = values.detach().requires_grad_()
        out = _embedding_bag(indices, W_dec.detach(), probe)
    (from_decoder,) = torch.autograd.grad(out, probe, grad_sum)
    grad_top = (grad_values + from_decoder).masked_fill_(values <= 0, 0.0)  # through the ReLU
    grad_x = _embedding_bag(indices, W_enc.t().contiguous(), grad_top)
    grad_W_enc = _scatter_outer(indices, grad_top, x, d_sae).t().contiguous()
    grad_b_enc = grad_top.new_zeros(d_sae).index_add_(0, indices.reshape(-1), grad_top.reshape(-1))
    grad_W_dec = _scatter_outer(indices, values, grad_sum, d_sae)
    return grad_x, grad_W_enc, grad_b_enc, grad_W_dec
