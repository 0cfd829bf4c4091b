"""One-pass elementwise kernels for the standard, gated and JumpReLU training steps on CPU
(numba).

Besides its matmuls, a dense training step does several elementwise passes over
[batch, d_sae] tensors: masks, the gate and magnitude paths, the rectangle kernel, sums over
the batch. With torch ops each is a separate pass that streams tens of MiB through memory;
on CPU these passes cost as much as a third of the step. Each kernel here does one
direction (forward or backward) of an architecture's latents in a single pass.

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turns x_enc = x @ W_enc [batch, d_sae] into hidden_pre = x_enc + b_enc in place, and
    returns feature_acts = relu(hidden_pre) and the penalty feature_acts @ weights
    [batch]."""
    return _bias_and_activation_("relu_forward", x_enc, b_enc, weights)


def relu_backward(
    grad_latents: torch.Tensor,
    feature_acts: torch.Tensor,
    grad_penalty: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard latents' backward, given grad_latents = d loss / d feature_acts from
    the decoder [batch, d_sae] and the penalty's gradient [batch]: (d hidden_pre, written
    into `grad_latents`, which must be the caller's own buffer, and d b_enc, its batch
    sum)."""
    grad_bias = torch.empty_like(weights)
    blocks = _blocks()
    _loops().relu_backward(
        *_arrays(grad_latents, feature_acts, grad_penalty, weights, grad_bias), blocks
    )
    return grad_latents, grad_bias


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
