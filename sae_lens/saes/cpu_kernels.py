"""One-pass elementwise kernels for the standard, gated and JumpReLU training steps on CPU
(numba).

Besides its matmuls, a dense training step does several elementwise passes over
[batch, d_sae] tensors: masks, the gate and magnitude paths, the rectangle kernel, sums over
the batch. With torch ops each is a separate pass that streams tens of MiB through memory;
on CPU these passes cost as much as a third of the step. Each kernel here does one
direction (forward or backward) of an architecture's latents in a single pass.

TopK's step (`sae_lens.saes.topk_step`) uses the per-row top-k that also writes the dense
latents (`topk_relu_`) and a sparse backward over the kept latents (`topk_backward`), which
the standard step's sparse path shares (`nonzero_entries`, `entries_backward`). The
decoder-row upkeep of 5.6.0's default training (unit-norm rows, gradients projected off
them) is one pass each (`normalize_rows_`, `project_out_rows_`).

They serve float32 and float64 tensors on the CPU (`serves`); the architectures' autograd
functions use torch ops everywhere else (GPU, half precision), with the same results up to
summation order. Each kernel compiles on its first call for a dtype (about a second) and
is cached on disk by numba; the compiled loops live in `sae_lens.saes.numba_loops`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

# Row blocks per thread in the kernels that sum over the batch: each block adds its rows
# into its own row of partial sums, which are added up at the end.
_BLOCKS_PER_THREAD = 4


def serves(*tensors: torch.Tensor) -> bool:
    """Whether the kernels handle these tensors: all on the CPU, contiguous, one dtype,
    float32 or float64."""
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype and t.is_contiguous() for t in tensors
    )


def _arrays(*tensors: torch.Tensor) -> list[Any]:
    return [t.detach().numpy() for t in tensors]


def _loops() -> ModuleType:
    """The compiled loops (imported on first use), with numba's thread count set to
    torch's."""
    from sae_lens.saes import numba_loops

    numba_loops.use_torch_thread_count()
    return numba_loops


def _blocks() -> int:
    """The number of row blocks of the kernels that sum over the batch."""
    return torch.get_num_threads() * _BLOCKS_PER_THREAD


def _bias_and_activation_(
    loop: str, x_enc: torch.Tensor, b_enc: torch.Tensor, per_latent: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the forward loop named `loop`, which adds b_enc to x_enc in place and writes the
    latents [batch, d_sae] and one value per row [batch] (a penalty or a count) from a
    per-latent vector (penalty weights or thresholds); returns those two."""
    feature_acts = torch.empty_like(x_enc)
    per_row = x_enc.new_empty(x_enc.shape[0])
    forward = getattr(_loops(), loop)
    forward(*_arrays(x_enc, b_enc, per_latent, x_enc, feature_acts, per_row))
    return feature_acts, per_row


# --------------------------------------------------------------------------- standard


def relu_forward_(
    x_enc: torch.Tensor, b_enc: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turns x_enc = x @ W_enc [batch, d_sae] into hidden_pre = x_enc + b_enc in place, and
    returns feature_acts = relu(hidden_pre), the penalty feature_acts @ weights [batch]
    and each row's number of nonzero latents [batch] (int64)."""
    feature_acts = torch.empty_like(x_enc)
    penalty = x_enc.new_empty(x_enc.shape[0])
    counts = torch.empty(x_enc.shape[0], dtype=torch.long)
    _loops().relu_forward(*_arrays(x_enc, b_enc, weights, x_enc, feature_acts, penalty, counts))
    return feature_acts, penalty, counts


def relu_backward(
    grad_latents: torch.Tensor,
    feature_acts: torch.Tensor,
    grad_penalty: torch.Tensor,
    weights: torch.Tensor,
    want_weights_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The standard latents' backward, given grad_latents = d loss / d feature_acts from
    the decoder [batch, d_sae] and the penalty's gradient [batch]: (d hidden_pre, written
    into `grad_latents`, which must be the caller's own buffer; d b_enc, its batch sum;
    and with `want_weights_grad` d weights = feature_acts.T @ grad_penalty, summed in the
    same pass, else None)."""
    grad_bias = torch.empty_like(weights)
    grad_weights = torch.empty_like(weights) if want_weights_grad else weights.new_empty(0)
    blocks = _blocks()
    _loops().relu_backward(
        *_arrays(grad_latents, feature_acts, grad_penalty, weights, grad_bias, grad_weights),
        blocks,
    )
    return grad_latents, grad_bias, grad_weights if want_weights_grad else None


# ------------------------------------------------------------------------------ gated


def gated_forward_(
    x_enc: torch.Tensor,
    b_gate: torch.Tensor,
    b_mag: torch.Tensor,
    scale: torch.Tensor,
    decoder_norms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turns x_enc = x @ W_enc [batch, d_sae] into magnitude_pre = x_enc * scale + b_mag in
    place, and returns gate_acts = relu(x_enc + b_gate), feature_acts = relu(magnitude_pre)
    where gate_acts > 0 (else 0), and the penalty gate_acts @ decoder_norms [batch]."""
    gate_acts, feature_acts = torch.empty_like(x_enc), torch.empty_like(x_enc)
    penalty = x_enc.new_empty(x_enc.shape[0])
    _loops().gated_forward(
        *_arrays(x_enc, b_gate, b_mag, scale, decoder_norms, x_enc, gate_acts, feature_acts),
        penalty.numpy(),
    )
    return gate_acts, feature_acts, penalty


def gated_backward(
    grad_latents: torch.Tensor,
    grad_gate: torch.Tensor,
    feature_acts: torch.Tensor,
    gate_acts: torch.Tensor,
    grad_penalty: torch.Tensor,
    decoder_norms: torch.Tensor,
    scale: torch.Tensor,
    b_mag: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gated latents' backward, given grad_latents = d loss / d feature_acts and
    grad_gate = d loss / d gate_acts from the decoder (both [batch, d_sae]), and the
    penalty's gradient [batch]. Returns (d x_enc, d b_gate, d b_mag, d r_mag); d x_enc is
    written into `grad_gate`, which must be the caller's own buffer. d r_mag uses
    x_enc * scale = feature_acts - b_mag, which holds wherever feature_acts > 0, the only
    places the magnitude path has a gradient."""
    d_sae = feature_acts.shape[1]
    grad_b_gate, grad_b_mag, grad_r_mag = (feature_acts.new_empty(d_sae) for _ in range(3))
    blocks = _blocks()
    _loops().gated_backward(
        *_arrays(grad_latents, grad_gate, feature_acts, gate_acts, grad_penalty),
        *_arrays(decoder_norms, scale, b_mag, grad_b_gate, grad_b_mag, grad_r_mag),
        blocks,
    )
    return grad_gate, grad_b_gate, grad_b_mag, grad_r_mag


# ---------------------------------------------------------------------------- jumprelu


def jumprelu_forward_(
    x_enc: torch.Tensor, b_enc: torch.Tensor, threshold: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turns x_enc = x @ W_enc [batch, d_sae] into hidden_pre = x_enc + b_enc in place, and
    returns feature_acts = hidden_pre where hidden_pre > threshold (else 0) and the number
    of firing latents per row [batch]."""
    return _bias_and_activation_("jumprelu_forward", x_enc, b_enc, threshold)


def jumprelu_backward_(
    grad: torch.Tensor,
    grad_l0: torch.Tensor,
    hidden_pre: torch.Tensor,
    threshold: torch.Tensor,
    bandwidth: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The JumpReLU-with-L0 backward from grad = d loss / d feature_acts [batch, d_sae]
    (the caller's own buffer, overwritten with d hidden_pre = grad where hidden_pre >
    threshold) and grad_l0 [batch]. Returns (d hidden_pre, d threshold = -(1/bandwidth) *
    sum over the batch of rectangle((hidden_pre - threshold) / bandwidth) * (threshold *
    grad + grad_l0), d b_enc = the batch sum of d hidden_pre)."""
    grad_threshold, grad_bias = torch.empty_like(threshold), torch.empty_like(threshold)
    blocks = _blocks()
    bandwidth_typed = hidden_pre.detach().numpy().dtype.type(bandwidth)
    _loops().jumprelu_backward(
        *_arrays(grad, grad_l0, hidden_pre, threshold, grad_threshold, grad_bias),
        bandwidth_typed,
        blocks,
    )
    return grad, grad_threshold, grad_bias


# ------------------------------------------------------------- topk and sparse steps

# Latents per block of the sparse weight-gradient kernel (one block's encoder gradient is
# gathered in a [block, d_in] buffer, then written as columns of grad_W_enc).
_LATENT_BLOCK = 64


def topk_relu_(
    x_enc: torch.Tensor, b_enc: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turns x_enc = x @ W_enc [batch, d_sae] into hidden_pre = x_enc + b_enc in place and
    returns (values [batch, k], indices [batch, k], acts [batch, d_sae]): each row's k
    largest pre-activations ReLU'd (unordered), and the dense latents holding them, in
    one pass over each row."""
    hidden_pre = x_enc
    n = hidden_pre.shape[0]
    values = hidden_pre.new_empty(n, k)
    indices = torch.empty(n, k, dtype=torch.long)
    acts = torch.empty_like(hidden_pre)
    # interleaved groups of the selection: many, so that about k of them hold the k
    # largest, yet a few entries each (the maxima are taken G lanes wide)
    groups = min(hidden_pre.shape[1], max(k, 256, hidden_pre.shape[1] // 16))
    _loops().topk_relu_rows(
        *_arrays(hidden_pre, b_enc), k, groups, *_arrays(values, indices, acts), _blocks()
    )
    return values, indices, acts


def nonzero_entries(
    acts: torch.Tensor, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nonzero latents of acts [batch, d_sae], given each row's count [batch], as
    entries in row-major order: (row_offsets [batch + 1], tokens, latents, values [nnz])."""
    row_offsets = torch.zeros(acts.shape[0] + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=row_offsets[1:])
    nnz = int(row_offsets[-1])
    latents = torch.empty(nnz, dtype=torch.long)
    values = acts.new_empty(nnz)
    _loops().nonzero_entries(*_arrays(acts, row_offsets, latents, values))
    tokens = torch.repeat_interleave(torch.arange(acts.shape[0]), counts)
    return row_offsets, tokens, latents, values


def entries_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    W_enc: torch.Tensor,
    W_dec: torch.Tensor,
    entries: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    grad_values: torch.Tensor,
    grad_penalty: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """The sparse backward of a step whose latents are `entries` (row_offsets [batch + 1],
    tokens, latents, values [nnz]; a value <= 0 passes no gradient, as after a ReLU):
    hidden_pre = x @ W_enc + b_enc, out = latents @ W_dec, penalty = latents @ weights.
    Given d loss / d out `grad_out` [batch, d_out], d loss / d penalty `grad_penalty`
    [batch] and any other gradient of the values `grad_values` [nnz] (the caller's own
    buffer, overwritten with d hidden_pre at the entries), returns (d x [batch, d_in],
    d W_enc [d_in, d_sae], d b_enc [d_sae], d W_dec [d_sae, d_out], d weights [d_sae]),
    every product touching only the entries."""
    row_offsets, tokens, latents, values = entries
    loops = _loops()
    d_sae = W_dec.shape[0]
    grad_x = torch.empty_like(x)
    W_enc_t = W_enc.t().contiguous()  # [d_sae, d_in]: a latent's encoder column as a row
    loops.entries_backward(
        *_arrays(grad_out, W_dec, W_enc_t, row_offsets, latents, values, grad_values),
        *_arrays(grad_penalty, weights, grad_x),
    )
    offsets = torch.empty(d_sae + 1, dtype=torch.long)
    order = torch.empty(latents.numel(), dtype=torch.long)
    loops.entries_by_latent(*_arrays(latents), d_sae, *_arrays(offsets, order))
    grad_W_dec, grad_W_enc = torch.empty_like(W_dec), torch.empty_like(W_enc)
    grad_b_enc, grad_weights = x.new_empty(d_sae), x.new_empty(d_sae)
    loops.entries_weight_grads(
        *_arrays(offsets, order, tokens, values, grad_out, grad_values, grad_penalty, x),
        *_arrays(grad_W_dec, grad_W_enc, grad_b_enc, grad_weights),
        _LATENT_BLOCK,
    )
    return grad_x, grad_W_enc, grad_b_enc, grad_W_dec, grad_weights


def topk_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    W_enc: torch.Tensor,
    W_dec: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    grad_values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`entries_backward` for k latents per token, `values` [batch, k] at `indices`
    [batch, k] (no penalty): (d x, d W_enc, d b_enc, d W_dec)."""
    n, k = values.shape
    entries = (
        torch.arange(0, n * k + 1, k),
        torch.arange(n).repeat_interleave(k),
        indices.reshape(-1),
        values.reshape(-1),
    )
    no_penalty = x.new_zeros(n)
    grads = entries_backward(
        grad_out, x, W_enc, W_dec, entries, grad_values.view(-1), no_penalty,
        x.new_zeros(W_dec.shape[0]),
    )  # fmt: skip
    return grads[0], grads[1], grads[2], grads[3]


# ------------------------------------------------------------------ decoder row upkeep


def project_out_rows_(grad: torch.Tensor, rows: torch.Tensor) -> None:
    """grad [n, d] -= (grad . rows, per row) * rows, in place, for unit rows [n, d] (the
    decoder's gradient made orthogonal to its rows) in one pass."""
    _loops().project_out_rows(*_arrays(grad, rows))


def normalize_rows_(rows: torch.Tensor) -> None:
    """rows [n, d] /= their norms, in place, in one pass."""
    _loops().normalize_rows(*_arrays(rows))
