"""TopK training kernels that touch only each token's k active latents.

`topk_encode` computes the dense pre-activations `x @ W_enc + b_enc` once and keeps each
token's k largest (after a ReLU); `sparse_decode` sums the k selected rows of `W_dec`.
Their backward passes are sparse too: input gradients are k-row embedding bags, weight
gradients sparse [d_sae, batch] x [batch, d_in] products. A TopK step thus runs one dense
d_in x d_sae matmul instead of six. When the dense pre-activations themselves receive a
gradient (the AuxK loss of dead latents), the encoder's backward falls back to the dense
formula.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def _no_noise(hidden_pre: torch.Tensor) -> torch.Tensor:
    return hidden_pre


def topk_encode(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    k: int,
    add_noise: Callable[[torch.Tensor], torch.Tensor] = _no_noise,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each token's k largest pre-activations, ReLU'd: (values [batch, k], indices
    [batch, k], hidden_pre [batch, d_sae]) for x [batch, d_in], W_enc [d_in, d_sae] and
    b_enc [d_sae]. `add_noise` is applied to the pre-activations before the selection (and
    is part of the returned hidden_pre). Gradients reach x, W_enc and b_enc through values
    (sparsely) and through hidden_pre (densely, only when hidden_pre is used)."""
    return _TopKEncode.apply(x, W_enc, b_enc, k, add_noise)  # type: ignore[no-any-return]


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """`sum_j values[..., j] * W_dec[indices[..., j]]`, i.e. dense `acts @ W_dec` for acts that
    are zero outside `indices`, touching only the k used rows of W_dec [d_sae, d_in] in the
    forward and the backward pass. values, indices: [..., k] -> [..., d_in]."""
    k = indices.shape[-1]
    out = _SparseDecode.apply(values.reshape(-1, k), indices.reshape(-1, k), W_dec)  # [n, d_in]
    return out.reshape(*indices.shape[:-1], W_dec.shape[-1])


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        x: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        k: int,
        add_noise: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_pre = add_noise(torch.addmm(b_enc, x, W_enc))  # [batch, d_sae]
        top = hidden_pre.topk(k, dim=-1, sorted=False)
        return top.values.relu_(), top.indices, hidden_pre

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        x, W_enc = inputs[0], inputs[1]
        values, indices, _ = output
        ctx.mark_non_differentiable(indices)
        ctx.set_materialize_grads(False)  # an unused hidden_pre gets no dense zero gradient
        ctx.save_for_backward(x, W_enc, values, indices)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_values: torch.Tensor | None,
        grad_indices: None,
        grad_hidden_pre: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        x, W_enc, values, indices = ctx.saved_tensors
        need_x, need_W, need_b = ctx.needs_input_grad[:3]
        # Through the ReLU of the kept values: [batch, k]
        grad_top = None if grad_values is None else grad_values.masked_fill(values <= 0, 0.0)
        if grad_hidden_pre is not None:  # dense: [batch, d_sae]
            grad_pre = grad_hidden_pre
            if grad_top is not None:
                grad_pre = grad_pre.scatter_add(-1, indices, grad_top)
            return (
                grad_pre @ W_enc.t() if need_x else None,
                x.t() @ grad_pre if need_W else None,
                grad_pre.sum(0) if need_b else None,
                None,
                None,
            )
        if grad_top is None:
            return None, None, None, None, None
        d_sae = W_enc.shape[1]
        grad_x = grad_W = grad_b = None
        if need_x:  # grad_x[n] = sum_j grad_top[n, j] * W_enc[:, indices[n, j]]
            grad_x = _embedding_bag(indices, W_enc.t().contiguous(), grad_top)
        if need_W:
            grad_W = _scatter_outer(indices, grad_top, x, d_sae).t()
        if need_b:
            grad_b = torch.zeros(d_sae, dtype=grad_top.dtype, device=grad_top.device)
            grad_b.index_add_(0, indices.reshape(-1), grad_top.reshape(-1))
        return grad_x, grad_W, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor
    ) -> torch.Tensor:
        return _embedding_bag(indices, W_dec, values)  # [n, d_in]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, torch.Tensor | None]:
        values, indices, W_dec = ctx.saved_tensors
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:  # grad_values[n, j] = grad_out[n] . W_dec[indices[n, j]]
            with torch.enable_grad():
                probe = values.detach().requires_grad_()
                out = _embedding_bag(indices, W_dec.detach(), probe)
            (grad_values,) = torch.autograd.grad(out, probe, grad_out)
        if ctx.needs_input_grad[2]:
            grad_W = _scatter_outer(indices, values, grad_out, W_dec.shape[0])
        return grad_values, None, grad_W


def _embedding_bag(
    indices: torch.Tensor, table: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """[n, d]: row i = sum_j weights[i, j] * table[indices[i, j]]."""
    return F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")


def _scatter_outer(
    indices: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, d_sae: int
) -> torch.Tensor:
    """[d_sae, d]: row m = sum over (n, j) with indices[n, j] == m of weights[n, j] * rows[n],
    for indices, weights [n, k] and rows [n, d]: a sparse-dense matmul, so the cost
    follows n * k, not n * d_sae."""
    n, k = indices.shape
    token = torch.arange(n, device=rows.device).repeat_interleave(k)
    selection = torch.sparse_coo_tensor(
        torch.stack([indices.reshape(-1), token]),
        weights.reshape(-1),
        (d_sae, n),
        check_invariants=False,
    )  # [d_sae, n], k entries per column
    return torch.sparse.mm(selection, rows)
