"""Training forwards of several SAEs of one shape at once (a multi-SAE run's stacked step).

The SAEs' weights are stacked along a new first dimension (`torch.stack`, so gradients flow
back to each SAE's own parameters) and their inputs likewise, x [n, batch, d_in]; each
matmul of the step is then one batched matmul for all n SAEs instead of n small ones, which
keeps a GPU busy when the SAEs are small. The result is each SAE's `TrainingForward`, as its
own `training_forward` would compute it up to float rounding (a batched matmul may sum in
another order).

TopK keeps the sparse backward of `sparse_kernels`: the n SAEs' latents are numbered as one
block-diagonal dictionary of n * d_sae latents (SAE i's latent m is i * d_sae + m), so the
embedding bags and sparse outer products of one SAE serve all of them in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sae_lens.saes.base import FIRING_COUNTS, TrainingForward, TrainingSAEModule, firing_counts
from sae_lens.saes.sparse_kernels import (
    Grads,
    _TopKEncode,
    latent_rows_grads,
    sparse_decode,
    topk_encoder_backward,
)


def stacked(saes: Sequence[TrainingSAEModule], name: str) -> torch.Tensor:
    """The SAEs' parameter `name` stacked along a new first dimension."""
    return torch.stack([getattr(sae, name) for sae in saes])


def stacked_relu_forward(
    saes: Sequence[TrainingSAEModule], x: torch.Tensor
) -> list[TrainingForward]:
    """Each SAE's ReLU training forward (encoder, ReLU, dense decoder) on its input x[i],
    x [n, batch, d_in]."""
    hidden_pre = torch.baddbmm(stacked(saes, "b_enc").unsqueeze(1), x, stacked(saes, "W_enc"))
    feature_acts = hidden_pre.relu()
    latent_sum = torch.bmm(feature_acts, stacked(saes, "W_dec"))  # [n, batch, d_in]
    return _per_sae(saes, feature_acts, hidden_pre, latent_sum)


def stacked_topk_forward(
    saes: Sequence[TrainingSAEModule], x: torch.Tensor, k: int
) -> list[TrainingForward]:
    """Each SAE's TopK training forward (its k largest pre-activations per token, ReLU'd,
    decoded sparsely) on its input x[i], x [n, batch, d_in]."""
    n, batch, _ = x.shape
    values, indices, hidden_pre = stacked_topk_encode(
        x, stacked(saes, "W_enc"), stacked(saes, "b_enc"), k
    )
    feature_acts = torch.zeros_like(hidden_pre).scatter_(-1, indices, values)
    W_dec = stacked(saes, "W_dec")  # [n, d_sae, d_in]
    d_sae = W_dec.shape[1]
    flat = _block_diagonal(indices, d_sae).reshape(n * batch, k)
    latent_sum = sparse_decode(
        values.reshape(n * batch, k), flat, W_dec.reshape(n * d_sae, -1)
    ).reshape(n, batch, -1)
    counts = firing_counts(values.reshape(n * batch, k), flat, n * d_sae).view(n, d_sae)
    return _per_sae(saes, feature_acts, hidden_pre, latent_sum, counts)


def _per_sae(
    saes: Sequence[TrainingSAEModule],
    feature_acts: torch.Tensor,
    hidden_pre: torch.Tensor,
    latent_sum: torch.Tensor,
    counts: torch.Tensor | None = None,
) -> list[TrainingForward]:
    return [
        TrainingForward(
            feature_acts[i],
            hidden_pre[i],
            sae.finish_decode(latent_sum[i]),
            {} if counts is None else {FIRING_COUNTS: counts[i]},
        )
        for i, sae in enumerate(saes)
    ]


def _block_diagonal(indices: torch.Tensor, d_sae: int) -> torch.Tensor:
    """indices [n, ...] of each SAE's latents as latents of the stacked dictionary."""
    offsets = torch.arange(indices.shape[0], device=indices.device) * d_sae
    return indices + offsets.view(-1, *([1] * (indices.dim() - 1)))


def stacked_topk_encode(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sparse_kernels.topk_encode` of n SAEs at once: (values [n, batch, k], indices
    [n, batch, k] (each SAE's own latent numbers), hidden_pre [n, batch, d_sae]) for
    x [n, batch, d_in], W_enc [n, d_in, d_sae], b_enc [n, d_sae]; the same sparse backward
    unless hidden_pre itself receives a gradient."""
    return _StackedTopKEncode.apply(x, W_enc, b_enc, k)  # type: ignore[no-any-return]


class _StackedTopKEncode(_TopKEncode):
    """`_TopKEncode` (whose `setup_context` it keeps) with a leading dimension of SAEs."""

    @staticmethod
    def forward(  # type: ignore[override]
        x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_pre = torch.baddbmm(b_enc.unsqueeze(1), x, W_enc)  # [n, batch, d_sae]
        top = hidden_pre.topk(k, dim=-1, sorted=False)
        return top.values.relu_(), top.indices, hidden_pre

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_values: torch.Tensor | None,
        grad_indices: None,
        grad_hidden_pre: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        grads = topk_encoder_backward(ctx, grad_values, grad_hidden_pre, _stacked_sparse_grads)
        return (*grads, None)


def _stacked_sparse_grads(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    indices: torch.Tensor,
    grad_top: torch.Tensor,
    needs: tuple[bool, ...],
) -> Grads:
    """The n encoders' gradients from their kept entries as those of one block-diagonal
    encoder of n * d_sae latents: x [n, batch, d_in], W_enc [n, d_in, d_sae]."""
    n, batch, d_in = x.shape
    d_sae, k = W_enc.shape[2], indices.shape[-1]
    grad_x, grad_W_rows, grad_b = latent_rows_grads(
        x.reshape(n * batch, d_in),
        W_enc.transpose(1, 2).reshape(n * d_sae, d_in),
        _block_diagonal(indices, d_sae).reshape(n * batch, k),
        grad_top.reshape(n * batch, k),
        needs,
    )
    return (
        None if grad_x is None else grad_x.view(n, batch, d_in),
        None if grad_W_rows is None else grad_W_rows.view(n, d_sae, d_in).transpose(1, 2),
        None if grad_b is None else grad_b.view(n, d_sae),
    )
