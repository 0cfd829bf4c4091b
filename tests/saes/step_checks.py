"""Comparing a fused SAE step with its torch formulas: outputs, then the gradients of every
input for a random weighted loss on a chosen subset of the outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.testing import assert_close


def assert_step_matches(
    ours: Sequence[torch.Tensor],
    ref: Sequence[torch.Tensor],
    leaves: Sequence[torch.Tensor],
    used: Sequence[int],
    seed: int,
) -> None:
    """`ours` equal `ref` (float32: to 1e-4), and so do the gradients of `leaves` for the
    loss sum(output * random weights) over the outputs marked in `used`; an input the
    reference gives no gradient gets none, or zeros."""
    tol = dict(atol=1e-4, rtol=1e-4) if ref[0].dtype == torch.float32 else {}
    for a, b in zip(ours, ref, strict=True):
        assert_close(a, b, **tol)
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in ref]

    def loss(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        terms = [(o * w).sum() for o, w, u in zip(outputs, weights, used, strict=True) if u]
        return torch.stack(terms).sum()

    grads = torch.autograd.grad(loss(ours), leaves, allow_unused=True)
    ref_grads = torch.autograd.grad(loss(ref), leaves, allow_unused=True)
    for a, b in zip(grads, ref_grads, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            assert_close(a, b, **tol)
