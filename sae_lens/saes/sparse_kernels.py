"""TopK training kernels that touch only each token's k active latents.

`topk_encode` computes the dense pre-activations `x @ W_enc + b_enc` once and keeps each
token's k largest (after a ReLU); `sparse_decode` sums the k selected rows of `W_dec`.
Their backward passes are sparse too: input gradients are k-row embedding bags, weight
gradients sparse [d_sae, batch] x [batch, d_in] products. A TopK step thus runs one dense
d_in x d_sae matmul instead of six. When the dense pre-activations themselves receive a
gradient (the AuxK loss of dead latents), the encoder's backward falls back to the dense
formula.

BatchTopK keeps the k x batch largest pre-activations of the whole batch instead, so a
token keeps a varying number of latents: `batchtopk_encode` and `sparse_decode_rows` work
on that selection as flat entries in row-major order (`RowSelection`), with the same sparse
backward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
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
    values = values.to(W_dec.dtype)  # under autocast the encoder's values are half precision
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
        grads = topk_encoder_backward(ctx, grad_values, grad_hidden_pre, _sparse_encoder_grads)
        return (*grads, None, None)


Grads = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def topk_encoder_backward(
    ctx: Any,
    grad_values: torch.Tensor | None,
    grad_hidden_pre: torch.Tensor | None,
    sparse_grads: Callable[..., Grads],
) -> Grads:
    """The gradients of (x, W_enc, b_enc) of a top-k encoder whose context saved (x, W_enc,
    values, indices): dense when hidden_pre received a gradient (any leading dimensions,
    batched matmuls), else `sparse_grads(x, W_enc, indices, grad_top, needs)` of the kept
    values' gradient through their ReLU."""
    x, W_enc, values, indices = ctx.saved_tensors
    need_x, need_W, need_b = needs = ctx.needs_input_grad[:3]
    grad_top = None if grad_values is None else grad_values.masked_fill(values <= 0, 0.0)
    if grad_hidden_pre is not None:  # dense: [..., batch, d_sae]
        grad_pre = grad_hidden_pre
        if grad_top is not None:
            grad_pre = grad_pre.scatter_add(-1, indices, grad_top)
        return (
            grad_pre @ W_enc.transpose(-1, -2) if need_x else None,
            x.transpose(-1, -2) @ grad_pre if need_W else None,
            grad_pre.sum(-2) if need_b else None,
        )
    if grad_top is None:
        return None, None, None
    return sparse_grads(x, W_enc, indices, grad_top, needs)


def _sparse_encoder_grads(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    indices: torch.Tensor,
    grad_top: torch.Tensor,
    needs: tuple[bool, ...],
) -> Grads:
    """One encoder's gradients from its kept entries: x [batch, d_in], W_enc [d_in, d_sae],
    indices and grad_top [batch, k]."""
    grad_x, grad_W_rows, grad_b = latent_rows_grads(x, W_enc.t(), indices, grad_top, needs)
    return grad_x, None if grad_W_rows is None else grad_W_rows.t(), grad_b


def latent_rows_grads(
    x: torch.Tensor,
    W_rows: torch.Tensor,
    indices: torch.Tensor,
    grad_top: torch.Tensor,
    needs: tuple[bool, ...],
) -> Grads:
    """(grad_x [batch, d_in], the gradient of W_rows [d_sae, d_in] (each latent's encoder
    column as a row), grad_b [d_sae]) for x [batch, d_in] and the kept entries' indices and
    gradients [batch, k]: k-row embedding bags and a sparse outer product."""
    need_x, need_W, need_b = needs
    d_sae = W_rows.shape[0]
    grad_x = grad_W_rows = grad_b = None
    if need_x:  # grad_x[n] = sum_j grad_top[n, j] * W_rows[indices[n, j]]
        grad_x = _embedding_bag(indices, W_rows.contiguous(), grad_top)
    if need_W:
        grad_W_rows = _scatter_outer(indices, grad_top, x, d_sae)
    if need_b:
        grad_b = torch.zeros(d_sae, dtype=grad_top.dtype, device=grad_top.device)
        grad_b.index_add_(0, indices.reshape(-1), grad_top.reshape(-1))
    return grad_x, grad_W_rows, grad_b


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
    return _scatter_outer_entries(indices.reshape(-1), token, weights.reshape(-1), rows, d_sae)


def _scatter_outer_entries(
    latents: torch.Tensor,
    tokens: torch.Tensor,
    weights: torch.Tensor,
    rows: torch.Tensor,
    d_sae: int,
) -> torch.Tensor:
    """[d_sae, d]: row m = sum over entries e with latents[e] == m of weights[e] *
    rows[tokens[e]], for entries latents, tokens, weights [nnz] and rows [n, d]."""
    selection = torch.sparse_coo_tensor(
        torch.stack([latents, tokens]),
        weights,
        (d_sae, rows.shape[0]),
        check_invariants=False,
    )  # [d_sae, n], one entry per selected (token, latent)
    return torch.sparse.mm(selection, rows)


# ------------------------------------------------------------------------------ BatchTopK


@dataclass(frozen=True)
class RowSelection:
    """Entries of a [n_rows, d_sae] matrix in row-major order: entry e sits at
    (tokens[e], latents[e]); `offsets` [n_rows] is where each row's entries start."""

    flat: torch.Tensor  # [nnz] tokens * d_sae + latents, ascending
    tokens: torch.Tensor  # [nnz]
    latents: torch.Tensor  # [nnz]
    offsets: torch.Tensor  # [n_rows]

    @classmethod
    def from_flat(cls, flat: torch.Tensor, n_rows: int, d_sae: int) -> RowSelection:
        tokens = torch.div(flat, d_sae, rounding_mode="floor")
        counts = torch.bincount(tokens, minlength=n_rows)
        return cls(flat, tokens, flat - tokens * d_sae, counts.cumsum(0) - counts)


def batch_topk_flat_indices(
    hidden_pre: torch.Tensor, n_keep: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Ascending flat indices into `hidden_pre` [n_rows, d_sae] of the `n_keep` entries with
    the largest positive scores hidden_pre[n, i] * weights[i] over the whole matrix
    (`weights` [d_sae] positive, default all 1). Every entry tied with the smallest kept
    score is kept too; all positive entries when fewer than `n_keep` are positive.

    Exact, without sorting the matrix: a strided sample gives a floor that about 2 x n_keep
    scores exceed, one pass collects those candidates (in row-major order), and the
    n_keep-th largest candidate score is the cut. A floor that proves too high falls back
    to the floor 0 (every positive entry a candidate)."""
    pre = hidden_pre.detach()
    d_sae = pre.shape[-1]
    if n_keep <= 0:
        return torch.zeros(0, dtype=torch.long, device=pre.device)
    floor = _candidate_floor(pre.reshape(-1), n_keep, d_sae, weights)
    candidates = _scores_above(pre, floor, weights)
    if candidates.numel() < n_keep and floor > 0:
        candidates = _scores_above(pre, 0.0, weights)
    if candidates.numel() <= n_keep:
        return candidates
    scores = _scores(pre.reshape(-1), candidates, d_sae, weights)
    cut = scores.kthvalue(scores.numel() - n_keep + 1).values  # the n_keep-th largest
    return candidates[scores >= cut]


def _scores(
    flat: torch.Tensor, indices: torch.Tensor, d_sae: int, weights: torch.Tensor | None
) -> torch.Tensor:
    """The scores flat[indices] * weights[latent] of flat entries `indices`."""
    values = flat[indices]
    return values if weights is None else values * weights[indices % d_sae]


def _scores_above(pre: torch.Tensor, floor: float, weights: torch.Tensor | None) -> torch.Tensor:
    """Ascending flat indices of the entries of `pre` [n_rows, d_sae] whose score exceeds
    `floor` >= 0 (pre > floor / weights: one comparison per entry, no score matrix)."""
    bound = floor if weights is None else floor / weights
    return (pre > bound).view(-1).nonzero().squeeze(1)


# Sample size for the candidate floor, and how many sample entries above the floor to aim
# for beyond the expected 2 x n_keep share (keeps the floor low enough when that share of
# the sample is small).
_FLOOR_SAMPLE = 65536
_FLOOR_MARGIN = 8


def _candidate_floor(
    flat: torch.Tensor, n_keep: int, d_sae: int, weights: torch.Tensor | None
) -> float:
    """A score (>= 0) that more than n_keep entries of `flat` very likely exceed, and not
    many more: the matching quantile of an evenly strided sample. The stride is coprime to
    d_sae, so the sample covers every latent (column) alike."""
    n = flat.numel()
    stride = max(n // _FLOOR_SAMPLE, 1)
    while math.gcd(stride, d_sae) != 1:
        stride += 1
    sample_indices = torch.arange(0, n, stride, device=flat.device)
    sample = _scores(flat, sample_indices, d_sae, weights)
    above = math.ceil(2 * n_keep * sample.numel() / n) + _FLOOR_MARGIN
    if above >= sample.numel():
        return 0.0
    floor = sample.kthvalue(sample.numel() - above + 1).values
    return max(float(floor), 0.0)


def batchtopk_encode(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    n_keep: int,
    add_noise: Callable[[torch.Tensor], torch.Tensor] = _no_noise,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, RowSelection, torch.Tensor]:
    """The pre-activations of the whole batch with the `n_keep` largest positive scores
    (pre-activation times `weights` [d_sae], see `batch_topk_flat_indices`): (values
    [nnz], their `RowSelection`, hidden_pre [batch, d_sae]) for x [batch, d_in], W_enc
    [d_in, d_sae], b_enc [d_sae]. Gradients as for `topk_encode`: sparse through values,
    dense through hidden_pre only when hidden_pre is used (none reaches `weights`)."""
    values, flat, hidden_pre = _BatchTopKEncode.apply(x, W_enc, b_enc, n_keep, add_noise, weights)
    return values, RowSelection.from_flat(flat, x.shape[0], W_enc.shape[1]), hidden_pre


def sparse_decode_rows(
    values: torch.Tensor, selection: RowSelection, W_dec: torch.Tensor
) -> torch.Tensor:
    """[n_rows, d_in]: row n = sum of values[e] * W_dec[latents[e]] over the entries e of row
    n, i.e. dense `acts @ W_dec` for acts that are zero outside `selection`; the forward and
    backward touch only the selected rows of W_dec [d_sae, d_in]."""
    out: torch.Tensor = _SparseDecodeRows.apply(
        values.to(W_dec.dtype), selection.latents, selection.tokens, selection.offsets, W_dec
    )
    return out


class _BatchTopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        x: torch.Tensor,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        n_keep: int,
        add_noise: Callable[[torch.Tensor], torch.Tensor],
        weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_pre = add_noise(torch.addmm(b_enc, x, W_enc))  # [batch, d_sae]
        flat = batch_topk_flat_indices(hidden_pre, n_keep, weights)  # [nnz]
        return hidden_pre.reshape(-1)[flat], flat, hidden_pre

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        x, W_enc = inputs[0], inputs[1]
        _, flat, _ = output
        ctx.mark_non_differentiable(flat)
        ctx.set_materialize_grads(False)  # an unused hidden_pre gets no dense zero gradient
        ctx.save_for_backward(x, W_enc, flat)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_values: torch.Tensor | None,
        grad_flat: None,
        grad_hidden_pre: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        x, W_enc, flat = ctx.saved_tensors
        need_x, need_W, need_b = ctx.needs_input_grad[:3]
        d_sae = W_enc.shape[1]
        if grad_hidden_pre is not None:  # dense: [batch, d_sae]
            grad_pre = grad_hidden_pre
            if grad_values is not None:
                grad_pre = grad_pre.reshape(-1).index_add(0, flat, grad_values).view_as(grad_pre)
            return (
                grad_pre @ W_enc.t() if need_x else None,
                x.t() @ grad_pre if need_W else None,
                grad_pre.sum(0) if need_b else None,
                None,
                None,
                None,
            )
        if grad_values is None:
            return None, None, None, None, None, None
        selection = RowSelection.from_flat(flat, x.shape[0], d_sae)
        grad_x = grad_W = grad_b = None
        if need_x:  # grad_x[n] = sum over row n's entries of grad_values * W_enc[:, latent]
            grad_x = _embedding_bag_rows(selection, W_enc.t().contiguous(), grad_values)
        if need_W:
            grad_W = _scatter_outer_entries(
                selection.latents, selection.tokens, grad_values, x, d_sae
            ).t()
        if need_b:
            grad_b = torch.zeros(d_sae, dtype=grad_values.dtype, device=grad_values.device)
            grad_b.index_add_(0, selection.latents, grad_values)
        return grad_x, grad_W, grad_b, None, None, None


class _SparseDecodeRows(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        values: torch.Tensor,
        latents: torch.Tensor,
        tokens: torch.Tensor,
        offsets: torch.Tensor,
        W_dec: torch.Tensor,
    ) -> torch.Tensor:
        return F.embedding_bag(latents, W_dec, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None, torch.Tensor | None]:
        values, latents, tokens, offsets, W_dec = ctx.saved_tensors
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:  # grad_values[e] = grad_out[token e] . W_dec[latent e]
            with torch.enable_grad():
                probe = values.detach().requires_grad_()
                out = F.embedding_bag(
                    latents, W_dec.detach(), offsets, mode="sum", per_sample_weights=probe
                )
            (grad_values,) = torch.autograd.grad(out, probe, grad_out)
        if ctx.needs_input_grad[4]:
            grad_W = _scatter_outer_entries(latents, tokens, values, grad_out, W_dec.shape[0])
        return grad_values, None, None, None, grad_W


def _embedding_bag_rows(
    selection: RowSelection, table: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """[n_rows, d]: row n = sum over row n's entries e of weights[e] * table[latents[e]]."""
    return F.embedding_bag(
        selection.latents, table, selection.offsets, mode="sum", per_sample_weights=weights
    )
