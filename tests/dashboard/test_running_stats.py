"""The bounded-memory statistics agree with brute force over all the data they were fed:
the running top-k keeps the true k largest values with the right context windows, the
reservoir keeps distinct active tokens, and the doubling histogram's counts are exact."""

from __future__ import annotations

import pytest
import torch

from sae_lens.dashboard.running_stats import ContextWindows, RunningHistogram, RunningTopK

CPU = torch.device("cpu")


def batches(n: int, batch: int, pos: int, latents: int, seed: int = 0) -> list[torch.Tensor]:
    """Activations [batch, pos, latents], mostly zero, with scales growing batch by batch
    (so later batches force the histogram to widen)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        acts = torch.randn(batch, pos, latents, generator=generator).relu() * (1.7**i)
        out.append(acts)
    return out


def test_running_top_k_keeps_the_true_maxima_and_their_windows():
    left, right, k = 3, 2, 7
    acts_batches = batches(5, 4, 10, 6)
    token_batches = [
        torch.randint(0, 1000, a.shape[:2], generator=torch.Generator().manual_seed(i))
        for i, a in enumerate(acts_batches)
    ]
    top = RunningTopK(6, k, left + 1 + right, CPU)
    for i, (acts, tokens) in enumerate(zip(acts_batches, token_batches, strict=True)):
        windows = ContextWindows(tokens, acts, left, right)
        top.update(acts.reshape(-1, 6).T, windows, first_sequence=4 * i)

    all_acts = torch.cat(acts_batches)  # [sequences, pos, latents]
    all_tokens = torch.cat(token_batches)
    for latent in range(6):
        expected = torch.sort(all_acts[..., latent].flatten(), descending=True).values[:k]
        torch.testing.assert_close(top.scores[latent], expected)
        for slot in range(k):
            sequence, position = top.where[latent, slot].tolist()
            assert all_acts[sequence, position, latent] == top.scores[latent, slot]
            for offset in range(-left, right + 1):
                p = position + offset
                token = top.tokens[latent, slot, offset + left]
                act = top.acts[latent, slot, offset + left]
                if 0 <= p < all_acts.shape[1]:
                    assert token == all_tokens[sequence, p]
                    assert act == all_acts[sequence, p, latent]
                else:
                    assert token == -1 and act == 0


def test_tokens_scored_minus_infinity_are_never_kept():
    acts = torch.arange(12.0).reshape(1, 12, 1)
    scores = acts.reshape(-1, 1).T.clone()
    scores[0, 6:] = -torch.inf  # the largest values are left out
    top = RunningTopK(1, 4, 1, CPU)
    top.update(scores, ContextWindows(torch.zeros(1, 12, dtype=torch.long), acts, 0, 0), 0)
    assert top.scores[0].tolist() == [5.0, 4.0, 3.0, 2.0]
    few = RunningTopK(1, 4, 1, CPU)
    only_two = torch.full((1, 12), -torch.inf)
    only_two[0, [2, 9]] = 1.0
    few.update(only_two, ContextWindows(torch.zeros(1, 12, dtype=torch.long), acts, 0, 0), 0)
    assert few.kept(0) == [0, 1]


def test_random_keys_keep_a_sample_of_distinct_active_tokens():
    acts_batches = batches(4, 3, 8, 2, seed=5)
    sample = RunningTopK(2, 10, 1, CPU)
    generator = torch.Generator().manual_seed(0)
    for i, acts in enumerate(acts_batches):
        flat = acts.reshape(-1, 2).T
        keys = torch.rand(flat.shape, generator=generator).masked_fill(flat <= 0, -torch.inf)
        windows = ContextWindows(torch.zeros(acts.shape[:2], dtype=torch.long), acts, 0, 0)
        sample.update(keys, windows, first_sequence=3 * i)
    all_acts = torch.cat(acts_batches)
    for latent in range(2):
        slots = sample.kept(latent)
        assert len(slots) == min(10, int((all_acts[..., latent] > 0).sum()))
        places = {tuple(sample.where[latent, s].tolist()) for s in slots}
        assert len(places) == len(slots)
        for sequence, position in places:
            assert all_acts[sequence, position, latent] > 0


def brute_force_counts(values: torch.Tensor, edges: list[float]) -> list[int]:
    values = values.double()
    return [
        int(((values >= low) & (values < high)).sum())
        for low, high in zip(edges[:-1], edges[1:], strict=True)
    ]


def test_histogram_counts_are_exact_through_widening_and_add_up_to_the_tokens():
    acts_batches = batches(6, 5, 9, 4, seed=2)
    counted = [torch.rand(a.shape[0] * a.shape[1]) > 0.2 for a in acts_batches]
    histogram = RunningHistogram(4, 8, CPU)
    for acts, keep in zip(acts_batches, counted, strict=True):
        histogram.update(acts.reshape(-1, 4), keep)
    all_acts = torch.cat([a.reshape(-1, 4)[k] for a, k in zip(acts_batches, counted, strict=True)])
    assert histogram.n_tokens == all_acts.shape[0]
    for latent in range(4):
        values = all_acts[:, latent]
        edges = histogram.edges(latent)
        assert edges[-1] > float(values.max())  # the range holds every value
        assert histogram.counts[latent].tolist() == brute_force_counts(values[values > 0], edges)
        n_active = int((values > 0).sum())
        assert int(histogram.n_active[latent]) == n_active
        assert int(histogram.counts[latent].sum()) == n_active
    assert float(histogram.width[0]) != float(acts_batches[0][..., 0].max()) / 5.5  # widened


def test_a_latent_that_never_fires_has_empty_bins():
    histogram = RunningHistogram(2, 4, CPU)
    acts = torch.tensor([[0.0, 1.0], [0.0, 3.0], [-1.0, 2.0]])
    histogram.update(acts, torch.ones(3, dtype=torch.bool))
    assert histogram.counts[0].tolist() == [0, 0, 0, 0]
    assert histogram.n_active.tolist() == [0, 3]
    assert histogram.edges(1)[-1] > 3.0


def test_a_first_maximum_sits_in_the_middle_of_a_bin_never_on_an_edge():
    """An edge at the maximum could fall either side of the same activation computed
    another way (ulps apart); mid-bin it cannot."""
    for n_bins in (2, 8, 10, 48):
        histogram = RunningHistogram(1, n_bins, CPU)
        histogram.update(torch.tensor([[0.5], [3.0]]), torch.ones(2, dtype=torch.bool))
        position = 3.0 / float(histogram.width[0])
        assert position % 1 == pytest.approx(0.5)
        assert 1.2 <= n_bins / position <= 4.0  # the range is ~1.25x the max (2 bins: 4x)
