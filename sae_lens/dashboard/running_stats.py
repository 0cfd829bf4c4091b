"""Statistics of latent activations gathered in one streaming pass, in memory bounded by
latents x examples (never by the number of tokens read):

- `RunningTopK`: per latent, the k tokens of largest score seen so far and a window of
  token ids and activations around each, merged batch by batch with `torch.topk`. With the
  activation as score it keeps the top activating examples; with a uniform random key on
  active tokens (and -inf elsewhere) it keeps a uniform sample of them without replacement
  (reservoir sampling by random keys), from which quantile examples are drawn.
- `RunningHistogram`: per latent, exact counts of positive activations in equal-width bins
  from 0. A latent's bin width is set when it first fires (its range then about 1.25 times
  its largest activation, which sits in the middle of a bin, never on an edge) and
  doubled, merging neighbouring bins, whenever a larger activation arrives: bins stay
  aligned, so every count stays exact.

Tensors: `acts` [batch, pos, n_latents] (the latents asked for, in order), `tokens`
[batch, pos], `counted` [batch, pos] (False on tokens left out, such as BOS).
"""

from __future__ import annotations

import math

import torch

_INITIAL_RANGE = 1.25  # a latent's first histogram range: about this times its first maximum


def first_width(first_max: torch.Tensor, n_bins: int) -> torch.Tensor:
    """The bin width that puts a latent's first maximum in the middle of bin
    floor(n_bins / 1.25) - 1 (an edge there could fall either side of a value computed
    another way, ulps apart)."""
    return first_max / (math.floor(n_bins / _INITIAL_RANGE) - 0.5)


class ContextWindows:
    """Windows of `left` tokens before and `right` after any token of one batch, with one
    latent's activations over them; positions outside the sequence hold token -1."""

    def __init__(self, tokens: torch.Tensor, acts: torch.Tensor, left: int, right: int):
        batch, pos, n_latents = acts.shape
        self.pos, self.left, self.width = pos, left, left + 1 + right
        self.tokens = torch.full((batch, pos + left + right), -1, dtype=torch.long)
        self.tokens = self.tokens.to(tokens.device)
        self.tokens[:, left : left + pos] = tokens
        self.acts = acts.new_zeros((batch, pos + left + right, n_latents))
        self.acts[:, left : left + pos] = acts

    def gather(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For flat token indices `flat` [n_latents, k] (row = latent): the windows' tokens
        [n_latents, k, width], the row latent's activations over them [n_latents, k, width]
        and (sequence in batch, position) [n_latents, k, 2]."""
        rows, positions = flat // self.pos, flat % self.pos
        offsets = torch.arange(self.width, device=flat.device)
        window_pos = positions[..., None] + offsets  # window starts `left` before the token
        latent = torch.arange(flat.shape[0], device=flat.device)[:, None, None]
        tokens = self.tokens[rows[..., None], window_pos]
        acts = self.acts[rows[..., None], window_pos, latent]
        return tokens, acts, torch.stack([rows, positions], dim=-1)


class RunningTopK:
    """Per latent, the `k` largest scores seen and the context window of each."""

    def __init__(self, n_latents: int, k: int, width: int, device: torch.device):
        self.k = k
        self.scores = torch.full((n_latents, k), -torch.inf, device=device)
        self.tokens = torch.full((n_latents, k, width), -1, dtype=torch.long, device=device)
        self.acts = torch.zeros((n_latents, k, width), device=device)
        self.where = torch.full((n_latents, k, 2), -1, dtype=torch.long, device=device)

    def update(self, scores: torch.Tensor, windows: ContextWindows, first_sequence: int) -> None:
        """Merge a batch whose flat scores are `scores` [n_latents, batch*pos] (-inf where a
        token must not be kept); `first_sequence` numbers the batch's first sequence."""
        k = min(self.k, scores.shape[1])
        if k == 0:
            return
        best, flat = torch.topk(scores, k, dim=1)  # [n_latents, k]
        if not torch.isfinite(best).any():
            return
        tokens, acts, where = windows.gather(flat)
        where[..., 0] += first_sequence
        merged = torch.cat([self.scores, best], dim=1)
        self.scores, order = torch.topk(merged, self.k, dim=1)
        self.tokens = _take(torch.cat([self.tokens, tokens], dim=1), order)
        self.acts = _take(torch.cat([self.acts, acts], dim=1), order)
        self.where = _take(torch.cat([self.where, where], dim=1), order)

    def kept(self, latent: int) -> list[int]:
        """Slots of `latent` holding a kept token, best score first."""
        return [i for i, score in enumerate(self.scores[latent].tolist()) if score > -torch.inf]


def _take(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """values[latent, order[latent, j], ...] for each latent and j."""
    index = order.reshape(*order.shape, *([1] * (values.ndim - 2)))
    return torch.gather(values, 1, index.expand(*order.shape, *values.shape[2:]))


class RunningHistogram:
    """Per latent, exact counts of positive activations in `n_bins` equal-width bins from 0
    (see the module docstring), and the number of counted tokens."""

    def __init__(self, n_latents: int, n_bins: int, device: torch.device):
        if n_bins < 2 or n_bins % 2:
            raise ValueError(f"the histogram needs an even number of bins >= 2, got {n_bins}")
        self.n_bins = n_bins
        self.counts = torch.zeros((n_latents, n_bins), dtype=torch.long, device=device)
        self.width = torch.zeros(n_latents, dtype=self._exact_dtype(device), device=device)
        self.n_active = torch.zeros(n_latents, dtype=torch.long, device=device)
        self.n_tokens = 0

    @staticmethod
    def _exact_dtype(device: torch.device) -> torch.dtype:
        # bin index = floor(activation / width): in float64 it is exact where it matters
        # (MPS has no float64; float32 there can misplace a value within an ulp of an edge)
        return torch.float32 if device.type == "mps" else torch.float64

    def update(self, acts: torch.Tensor, counted: torch.Tensor) -> None:
        """Count `acts` [tokens, n_latents] on the rows where `counted` [tokens] is True."""
        acts = acts[counted]
        self.n_tokens += acts.shape[0]
        if acts.shape[0] == 0:
            return
        active = acts > 0
        self.n_active += active.sum(0)
        batch_max = acts.amax(0).clamp_min(0).to(self.width.dtype)  # [n_latents]
        first = (self.width == 0) & (batch_max > 0)
        self.width[first] = first_width(batch_max[first], self.n_bins)
        self._widen_until_below(batch_max)
        # only the active values are binned (a few percent of all, typically)
        _, latent = active.nonzero(as_tuple=True)
        values = acts[active].to(self.width.dtype)  # row-major, as `nonzero` lists them
        width = self.width[latent]
        bins = torch.floor(values / width)
        # the division may round across an edge: settle on the bin whose edges
        # (i * width, as `edges` gives them) hold the value
        bins -= (values < bins * width).to(bins.dtype)
        bins += (values >= (bins + 1) * width).to(bins.dtype)
        flat = latent * self.n_bins + bins.long().clamp_(0, self.n_bins - 1)
        self.counts += torch.bincount(flat, minlength=self.counts.numel()).view_as(self.counts)

    def _widen_until_below(self, batch_max: torch.Tensor) -> None:
        """Double the width of each latent whose range [0, width * n_bins) misses its new
        maximum, merging bin pairs (2i, 2i+1) into bin i, until every range holds it."""
        while True:
            widen = (self.width > 0) & (batch_max >= self.width * self.n_bins)
            if not bool(widen.any()):
                return
            pairs = self.counts[widen].view(-1, self.n_bins // 2, 2).sum(-1)
            self.counts[widen] = torch.cat([pairs, torch.zeros_like(pairs)], dim=1)
            self.width[widen] *= 2

    def edges(self, latent: int) -> list[float]:
        """Bin edges of `latent` (all zero width when it never fired)."""
        width = float(self.width[latent])
        return [i * width for i in range(self.n_bins + 1)]
