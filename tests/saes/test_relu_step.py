"""`relu_step`, the standard SAE's training step as one autograd function: on its sparse path
(few latents fire: the nonzero latents as entries, every matmul but the encoder's forward
sparse), its dense CPU path and its torch path, values and gradients must be those of the
torch formulas `relu(x @ W_enc + b_enc) @ W_dec` and `relu(...) @ weights`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from sae_lens.saes import cpu_kernels, relu_step
from sae_lens.saes.relu_step import relu_step as step
from tests.saes.step_checks import assert_step_matches


@pytest.fixture(params=["sparse", "dense", "torch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs on the three paths: sparse (forced by a density bound of 1), dense
    (bound 0) and torch ops (the kernels refused)."""
    monkeypatch.setattr(relu_step, "SPARSE_DENSITY", 0.0 if request.param == "dense" else 1.0)
    if request.param == "torch":
        monkeypatch.setattr(relu_step.cpu_kernels, "serves", lambda *tensors: False)
    yield request.param


def _leaves(n: int, d: int, m: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(n + m)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    W_enc = torch.randn(d, m, generator=g, dtype=dtype)
    b_enc = torch.randn(m, generator=g, dtype=dtype) - 2.0  # most latents off
    W_dec = torch.randn(m, d + 1, generator=g, dtype=dtype)  # d_out != d_in
    weights = torch.rand(m, generator=g, dtype=dtype)  # e.g. decoder norms
    return [t.requires_grad_() for t in (x, W_enc, b_enc, W_dec, weights)]


def _reference(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    hidden_pre = x @ W_enc + b_enc
    acts = hidden_pre.relu()
    return hidden_pre, acts, acts @ W_dec, acts @ w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d", "m"), [(37, 13, 101), (5, 3, 7), (64, 17, 515)])
@pytest.mark.parametrize(
    "used",
    [(0, 0, 1, 1), (0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 1, 1)],
)
def test_values_and_gradients_match_the_torch_formulas(
    path: str, dtype: torch.dtype, n: int, d: int, m: int, used: tuple[int, ...]
) -> None:
    """Outputs, and the gradients of all five inputs for a loss on any subset of
    (hidden_pre, acts, acts @ W_dec, penalty): as the training loss uses the last two, as
    ghost grads add hidden_pre, as a caller's loss on the latents adds acts."""
    leaves = _leaves(n, d, m, dtype)
    ours = step(*leaves)
    ref = _reference(*leaves)
    assert_step_matches(ours, ref, leaves, used, seed=3)


def test_the_sparse_path_runs_when_few_latents_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default bound, a batch whose latents are mostly zero takes the sparse
    path (its entries are built), one with half of them firing the dense path."""
    calls: list[int] = []
    inner = cpu_kernels.nonzero_entries

    def counted(acts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        calls.append(int(counts.sum()))
        return inner(acts, counts)

    monkeypatch.setattr(relu_step.cpu_kernels, "nonzero_entries", counted)
    x, W_enc, b_enc, W_dec, w = (t.detach() for t in _leaves(64, 8, 512, torch.float32))
    step(x, W_enc, b_enc - 8.0, W_dec, w)  # almost nothing fires
    assert len(calls) == 1 and calls[0] <= relu_step.SPARSE_DENSITY * 64 * 512
    step(x, W_enc, b_enc + 2.0, W_dec, w)  # about half fires
    assert len(calls) == 1


def test_nonzero_entries_lists_the_latents_in_row_order() -> None:
    acts = torch.tensor([[0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 4.0]])
    counts = (acts != 0).sum(1)
    row_offsets, tokens, latents, values = cpu_kernels.nonzero_entries(acts, counts)
    assert row_offsets.tolist() == [0, 2, 2, 4]
    assert tokens.tolist() == [0, 0, 2, 2]
    assert latents.tolist() == [1, 3, 0, 3]
    assert values.tolist() == [2.0, 3.0, 1.0, 4.0]
