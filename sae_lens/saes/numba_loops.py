"""The numba-compiled loops behind `sae_lens.saes.cpu_kernels`, on numpy views of the
tensors. Imported only when a kernel first runs (numba and LLVM add ~100 MB to a process),
so GPU training and inference never load them."""

import numba
import numpy as np
import torch


def use_torch_thread_count() -> int:
    """Sets numba's thread count to torch's and returns it. (Numba's OpenMP threading layer
    shares the OpenMP runtime with torch: starting its pool resets the process's OpenMP
    thread count, which is torch's, to all cores; torch's count is put back.)"""
    torch_threads = torch.get_num_threads()
    threads = min(torch_threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    torch.set_num_threads(torch_threads)
    return threads


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz"})
def relu_forward(x_enc, b_enc, weights, hidden_pre, acts, penalty, counts):
    n, m = x_enc.shape
    zero = x_enc.dtype.type(0)
    for i in numba.prange(n):
        row_penalty = zero
        count = 0
        for j in range(m):
            value = x_enc[i, j] + b_enc[j]
            act = zero if value <= zero else value  # a ReLU that keeps NaN, as torch's
            hidden_pre[i, j] = value
            acts[i, j] = act
            row_penalty += act * weights[j]
            count += 0 if act == zero else 1
        penalty[i] = row_penalty
        counts[i] = count


@numba.njit(parallel=True, cache=True)
def relu_backward(grad, acts, grad_penalty, weights, grad_bias, grad_weights, blocks):
    """grad_weights[j] = sum_i acts[i, j] * grad_penalty[i] when grad_weights has d_sae
    entries (leave it empty to skip that sum)."""
    n, m = acts.shape
    zero = acts.dtype.type(0)
    rows = (n + blocks - 1) // blocks
    want_weights = grad_weights.shape[0] == m
    parts = np.zeros((blocks, m), acts.dtype)
    parts_weights = np.zeros((blocks, m if want_weights else 0), acts.dtype)
    for b in numba.prange(blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            penalty_i = grad_penalty[i]
            for j in range(m):
                value = grad[i, j] + penalty_i * weights[j] if acts[i, j] > zero else zero
                grad[i, j] = value
                parts[b, j] += value
            if want_weights:
                for j in range(m):
                    parts_weights[b, j] += acts[i, j] * penalty_i
    sum_parts(parts, grad_bias)
    if want_weights:
        sum_parts(parts_weights, grad_weights)


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


# ------------------------------------------------------------------------------- TopK


@numba.njit(cache=True, inline="always")
def _sift_down(heap_values, heap_indices, pos, value, index):
    """Puts (value, index) at `pos` of the min-heap heap_values [k] (indices alongside),
    whose subtrees below `pos` are heaps, moving smaller children up until it fits."""
    size = heap_values.shape[0]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and heap_values[child + 1] < heap_values[child]:
            child += 1
        if heap_values[child] >= value:
            break
        heap_values[pos], heap_indices[pos] = heap_values[child], heap_indices[child]
        pos = child
    heap_values[pos], heap_indices[pos] = value, index


@numba.njit(cache=True)
def _heap_topk(values, positions, heap_values, heap_indices):
    """The k = heap_values.shape[0] largest of values [c >= k] (unordered) into
    heap_values, with the matching entries of positions [c] into heap_indices."""
    k = heap_values.shape[0]
    for j in range(k):  # the first k entries, then heapified
        heap_values[j], heap_indices[j] = values[j], positions[j]
    for start in range(k // 2 - 1, -1, -1):
        _sift_down(heap_values, heap_indices, start, heap_values[start], heap_indices[start])
    for t in range(k, values.shape[0]):
        if values[t] > heap_values[0]:
            _sift_down(heap_values, heap_indices, 0, values[t], positions[t])  # new root


@numba.njit(cache=True, fastmath=True)
def _lane_maxima(row, bias, lanes):
    """Adds bias to row in place, and sets lanes[j] = max of row[j], row[j + G],
    row[j + 2G], ... (G = lanes.shape[0]): the maxima of G interleaved groups, computed G
    lanes wide."""
    m, groups = row.shape[0], lanes.shape[0]
    for j in range(groups):
        row[j] += bias[j]
        lanes[j] = row[j]
    full = m - m % groups
    for start in range(groups, full, groups):
        for j in range(groups):
            value = row[start + j] + bias[start + j]
            row[start + j] = value
            lanes[j] = max(lanes[j], value)
    for t in range(full, m):
        value = row[t] + bias[t]
        row[t] = value
        lanes[t - full] = max(lanes[t - full], value)


@numba.njit(cache=True, fastmath={"reassoc", "nsz", "contract"})
def _count_at_least(lanes, floor):
    count = 0
    for j in range(lanes.shape[0]):
        count += 1 if lanes[j] >= floor else 0
    return count


@numba.njit(cache=True)
def _raise_floor(lanes, floor, k):
    """A floor >= `floor` that at least k of lanes still reach (so at least k entries of
    the row do), found by bisection towards the largest lane until about k lanes reach
    it (at most 12 counting passes over the lanes)."""
    top = lanes[0]
    for j in range(1, lanes.shape[0]):
        top = max(top, lanes[j])
    enough = k + k // 4
    for _ in range(12):
        middle = floor + (top - floor) * 0.5
        if not (floor < middle < top):
            break
        count = _count_at_least(lanes, middle)
        if count >= k:
            floor = middle
            if count <= enough:
                break
        else:
            top = middle
    return floor


@numba.njit(cache=True)
def _row_topk(
    row, bias, positions, lanes, cand_values, cand_indices, heap_values, heap_indices
):  # fmt: skip
    """Adds bias to row in place, then row's k largest entries (unordered) into
    heap_values / heap_indices [k].

    The maxima of G interleaved groups of the row (lanes [G], G >= k, computed G wide),
    then the floor min over k runs of G / k lanes of their max: each run holds an entry
    at least that large, so the row's k largest all reach it. `_raise_floor` lifts it
    while k lanes still reach it; only the entries reaching it (little more than k) go
    through a k-heap. A row with NaN (which compares false, so that fewer than k entries
    may reach the floor) runs the heap over the whole row."""
    m, groups, k = row.shape[0], lanes.shape[0], heap_values.shape[0]
    _lane_maxima(row, bias, lanes)
    run = groups // k
    floor = lanes[0]
    for r in range(k):
        end = groups if r == k - 1 else (r + 1) * run
        run_max = lanes[r * run]
        for j in range(r * run + 1, end):
            run_max = max(run_max, lanes[j])
        floor = run_max if r == 0 else min(floor, run_max)
    floor = _raise_floor(lanes, floor, k)
    count = 0
    for j in range(groups):
        if lanes[j] >= floor:
            for t in range(j, m, groups):
                if row[t] >= floor:
                    cand_values[count] = row[t]
                    cand_indices[count] = t
                    count += 1
    if count < k:
        _heap_topk(row, positions, heap_values, heap_indices)
    else:
        _heap_topk(cand_values[:count], cand_indices[:count], heap_values, heap_indices)


@numba.njit(parallel=True, cache=True)
def topk_relu_rows(pre, bias, k, groups, values, indices, acts, blocks):
    """Adds bias [m] to each row of pre [n, m] in place; then values, indices [n, k]: each
    row's k largest entries (unordered), ReLU'd; acts [n, m]: those values at their
    indices, zero elsewhere. `groups` (k <= groups <= m) is the number of interleaved
    groups of `_row_topk`."""
    n, m = pre.shape
    zero = pre.dtype.type(0)
    rows = (n + blocks - 1) // blocks
    positions = np.arange(m)
    for b in numba.prange(blocks):
        heap_values = np.empty(k, pre.dtype)
        heap_indices = np.empty(k, np.int64)
        cand_values = np.empty(m, pre.dtype)
        cand_indices = np.empty(m, np.int64)
        lanes = np.empty(groups, pre.dtype)
        for i in range(b * rows, min(n, (b + 1) * rows)):
            _row_topk(
                pre[i], bias, positions, lanes, cand_values, cand_indices,
                heap_values, heap_indices,
            )  # fmt: skip
            acts[i, :] = zero
            for j in range(k):
                value = heap_values[j]
                value = zero if value <= zero else value
                values[i, j] = value
                indices[i, j] = heap_indices[j]
                acts[i, heap_indices[j]] = value


# ------------------------------------------- sparse latents as entries in row order
# A batch's nonzero latents as entries e in row-major order: token n's entries are
# row_offsets[n]:row_offsets[n + 1], entry e is latent latents[e] of value values[e].


@numba.njit(parallel=True, cache=True)
def nonzero_entries(acts, row_offsets, latents, values):
    """The nonzero entries of acts [n, m] into latents, values (row_offsets [n + 1] from
    the rows' counts)."""
    n, m = acts.shape
    zero = acts.dtype.type(0)
    for i in numba.prange(n):
        e = row_offsets[i]
        for j in range(m):
            if acts[i, j] != zero:
                latents[e] = j
                values[e] = acts[i, j]
                e += 1


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz", "contract"})
def entries_backward(
    grad_out, W_dec, W_enc_t, row_offsets, latents, values, grad_entries, grad_penalty,
    weights, grad_x,
):  # fmt: skip
    """Per token n and each of its entries e (latent l): grad_entries[e] = (grad_entries[e]
    + grad_out[n] . W_dec[l] + grad_penalty[n] * weights[l]) where values[e] > 0, else 0
    (grad_entries comes in holding any other gradient of the values); and grad_x[n] =
    sum over its entries of grad_entries[e] * W_enc_t[l]."""
    n = grad_out.shape[0]
    d_out, d_in = W_dec.shape[1], W_enc_t.shape[1]
    zero = values.dtype.type(0)
    for i in numba.prange(n):
        for t in range(d_in):
            grad_x[i, t] = zero
        penalty = grad_penalty[i]
        for e in range(row_offsets[i], row_offsets[i + 1]):
            row = latents[e]
            total = grad_entries[e] + penalty * weights[row]
            for t in range(d_out):
                total += grad_out[i, t] * W_dec[row, t]
            total = total if values[e] > zero else zero
            grad_entries[e] = total
            for t in range(d_in):
                grad_x[i, t] += total * W_enc_t[row, t]


@numba.njit(cache=True)
def entries_by_latent(latents, d_sae, offsets, order):
    """A counting sort of the entries by latent: the entries of latent m are
    order[offsets[m]:offsets[m + 1]], ascending."""
    counts = np.zeros(d_sae + 1, np.int64)
    for e in range(latents.shape[0]):
        counts[latents[e] + 1] += 1
    for m in range(d_sae):
        counts[m + 1] += counts[m]
    offsets[:] = counts
    for e in range(latents.shape[0]):
        latent = latents[e]
        order[counts[latent]] = e
        counts[latent] += 1


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz", "contract"})
def entries_weight_grads(
    offsets, order, tokens, values, grad_out, grad_entries, grad_penalty, x,
    grad_W_dec, grad_W_enc, grad_b_enc, grad_weights, latent_block,
):  # fmt: skip
    """Per latent m, over its entries e (token n): grad_W_dec[m] = sum of values[e] *
    grad_out[n]; grad_W_enc[:, m] = sum of grad_entries[e] * x[n] (grad_W_enc [d_in,
    d_sae], written a block of `latent_block` columns at a time); grad_b_enc[m] = sum of
    grad_entries[e]; grad_weights[m] = sum of values[e] * grad_penalty[n]."""
    d_sae = grad_W_dec.shape[0]
    d_out, d_in = grad_out.shape[1], x.shape[1]
    zero = x.dtype.type(0)
    n_blocks = (d_sae + latent_block - 1) // latent_block
    for b in numba.prange(n_blocks):
        start = b * latent_block
        stop = min(d_sae, start + latent_block)
        enc = np.zeros((stop - start, d_in), x.dtype)
        for m in range(start, stop):
            dec_row = grad_W_dec[m]
            enc_row = enc[m - start]
            for t in range(d_out):
                dec_row[t] = zero
            bias = zero
            weight = zero
            for p in range(offsets[m], offsets[m + 1]):
                e = order[p]
                token = tokens[e]
                value, grad = values[e], grad_entries[e]
                bias += grad
                weight += value * grad_penalty[token]
                for t in range(d_out):
                    dec_row[t] += value * grad_out[token, t]
                for t in range(d_in):
                    enc_row[t] += grad * x[token, t]
            grad_b_enc[m] = bias
            grad_weights[m] = weight
        for t in range(d_in):
            for m in range(start, stop):
                grad_W_enc[t, m] = enc[m - start, t]


# ---------------------------------------------------------------- decoder row upkeep


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz", "contract"})
def project_out_rows(grad, rows):
    """grad[i] -= (grad[i] . rows[i]) * rows[i] for every row i, one pass."""
    n, d = rows.shape
    zero = rows.dtype.type(0)
    for i in numba.prange(n):
        dot = zero
        for t in range(d):
            dot += grad[i, t] * rows[i, t]
        for t in range(d):
            grad[i, t] -= dot * rows[i, t]


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "nsz", "contract"}, error_model="numpy")
def normalize_rows(rows):
    """rows[i] /= ||rows[i]|| for every row i, one pass (a zero row turns NaN, as torch's
    division does)."""
    n, d = rows.shape
    zero = rows.dtype.type(0)
    for i in numba.prange(n):
        total = zero
        for t in range(d):
            total += rows[i, t] * rows[i, t]
        norm = np.sqrt(total)
        for t in range(d):
            rows[i, t] /= norm
