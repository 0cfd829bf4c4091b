"""The numba-compiled loops behind `sae_lens.saes.cpu_kernels`, on numpy views of the
tensors. Imported only when a kernel first runs (numba and LLVM add ~100 MB to a process),
so GPU and TopK training never load them."""

import numba
import numpy as np
import torch


def use_torch_thread_count() -> int:
    """Sets numba's thread count to torch's and returns it."""
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    return threads


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz"})
def relu_forward(x_enc, b_enc, weights, hidden_pre, acts, penalty):
    n, m = x_enc.shape
    zero = x_enc.dtype.type(0)
    for i in numba.prange(n):
        row_penalty = zero
        for j in range(m):
            value = x_enc[i, j] + b_enc[j]
            act = zero if value <= zero else value  # a ReLU that keeps NaN, as torch's
            hidden_pre[i, j] = value
            acts[i, j] = act
            row_penalty += act * weights[j]
        penalty[i] = row_penalty


@numba.njit(parallel=True, cache=True)
def relu_backward(grad, acts, grad_penalty, weights, grad_bias, blocks):
    n, m = acts.shape
    zero = acts.dtype.type(0)
    rows = (n + blocks - 1) // blocks
    parts = np.zeros((blocks, m), acts.dtype)
    for b in numba.prange(blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            penalty_i = grad_penalty[i]
            for j in range(m):
                value = grad[i, j] + penalty_i * weights[j] if acts[i, j] > zero else zero
                grad[i, j] = value
                parts[b, j] += value
    sum_parts(parts, grad_bias)


@numba.njit(cache=True)
def sum_parts(parts, out):
    """out[j] = sum over blocks b of parts[b, j], as scalar loops (numba turns
    `parts[:, j].sum()` inside a parallel function into a parallel reduction that slows
    the whole kernel several times)."""
    blocks, m = parts.shape
    zero = parts.dtype.type(0)
    for j in range(m):
        total = zero
        for b in range(blocks):
            total += parts[b, j]
        out[j] = total


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz"})
def gated_forward(x_enc, b_gate, b_mag, scale, norms, magnitude_pre, gate_acts, acts, penalty):
    n, m = x_enc.shape
    zero = x_enc.dtype.type(0)
    for i in numba.prange(n):
        row_penalty = zero
        for j in range(m):
            value = x_enc[i, j]
            magnitude = value * scale[j] + b_mag[j]
            gate = value + b_gate[j]
            gate = zero if gate <= zero else gate  # a ReLU that keeps NaN, as torch's
            magnitude_pre[i, j] = magnitude
            gate_acts[i, j] = gate
            acts[i, j] = zero if gate <= zero or magnitude <= zero else magnitude
            row_penalty += gate * norms[j]
        penalty[i] = row_penalty


@numba.njit(parallel=True, cache=True)
def gated_backward(
    grad_latents, grad_gate, acts, gate_acts, grad_penalty, norms, scale, b_mag,
    grad_b_gate, grad_b_mag, grad_r_mag, blocks,
):  # fmt: skip
    n, m = acts.shape
    zero = acts.dtype.type(0)
    rows = (n + blocks - 1) // blocks
    part_gate = np.zeros((blocks, m), acts.dtype)
    part_mag = np.zeros((blocks, m), acts.dtype)
    part_r = np.zeros((blocks, m), acts.dtype)
    for b in numba.prange(blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            penalty_i = grad_penalty[i]
            for j in range(m):
                gate = grad_gate[i, j] + penalty_i * norms[j] if gate_acts[i, j] > zero else zero
                active = acts[i, j]
                magnitude = grad_latents[i, j] if active > zero else zero
                part_gate[b, j] += gate
                part_mag[b, j] += magnitude
                part_r[b, j] += magnitude * (active - b_mag[j])
                grad_gate[i, j] = gate + magnitude * scale[j]
    sum_parts(part_gate, grad_b_gate)
    sum_parts(part_mag, grad_b_mag)
    sum_parts(part_r, grad_r_mag)


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz"})
def jumprelu_forward(x_enc, b_enc, threshold, hidden_pre, acts, l0):
    n, m = x_enc.shape
    zero = x_enc.dtype.type(0)
    one = x_enc.dtype.type(1)
    for i in numba.prange(n):
        count = zero
        for j in range(m):
            value = x_enc[i, j] + b_enc[j]
            fires = value > threshold[j]
            hidden_pre[i, j] = value
            acts[i, j] = value if fires else zero
            count += one if fires else zero
        l0[i] = count


@numba.njit(parallel=True, cache=True)
def jumprelu_backward(
    grad, grad_l0, hidden_pre, threshold, grad_threshold, grad_bias, bandwidth, blocks
):
    n, m = hidden_pre.shape
    zero = hidden_pre.dtype.type(0)
    half = hidden_pre.dtype.type(0.5)
    rows = (n + blocks - 1) // blocks
    part_threshold = np.zeros((blocks, m), hidden_pre.dtype)
    part_bias = np.zeros((blocks, m), hidden_pre.dtype)
    for b in numba.prange(blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            grad_l0_i = grad_l0[i]
            for j in range(m):
                value, incoming = hidden_pre[i, j], grad[i, j]
                passed = incoming if value > threshold[j] else zero
                grad[i, j] = passed
                part_bias[b, j] += passed
                in_window = abs((value - threshold[j]) / bandwidth) < half
                part_threshold[b, j] += threshold[j] * incoming + grad_l0_i if in_window else zero
    sum_parts(part_threshold, grad_threshold)
    sum_parts(part_bias, grad_bias)
    for j in range(m):
        grad_threshold[j] = -grad_threshold[j] / bandwidth
