"""Geometric median (Weiszfeld): known medians, a brute-force check, weights, logs."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from sae_lens.training.geometric_median import (
    compute_geometric_median,
    geometric_median_objective,
    weighted_average,
)


def test_weighted_average_and_objective() -> None:
    points = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
    weights = torch.tensor([1.0, 1.0, 2.0])
    assert_close(weighted_average(points, weights), torch.tensor([1.0, 1.5]))
    assert_close(
        geometric_median_objective(torch.zeros(2), points, weights), torch.tensor(4.0 + 6.0)
    )


def test_median_of_points_on_a_line_is_the_middle_point() -> None:
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [10.0, 10.0]], dtype=torch.float64)
    result = compute_geometric_median(points, maxiter=1000)
    assert_close(result.median, torch.tensor([1.0, 1.0], dtype=torch.float64), atol=1e-4, rtol=0)


def test_median_of_a_square_is_its_centre_and_differs_from_the_mean() -> None:
    square = torch.tensor(
        [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [100.0, 100.0]], dtype=torch.float64
    )
    result = compute_geometric_median(square, maxiter=500)
    # The outlier pulls the mean to (20.8, 20.8) but moves the median only slightly.
    assert result.median.norm() < 3.0
    assert weighted_average(square, torch.ones(5, dtype=torch.float64)).norm() > 29.0


def test_objective_is_minimal_against_a_brute_force_grid() -> None:
    torch.manual_seed(0)
    points = torch.randn(30, 2, dtype=torch.float64) * torch.tensor([3.0, 1.0], dtype=torch.float64)
    weights = torch.rand(30, dtype=torch.float64) + 0.1
    median = compute_geometric_median(points, weights).median
    axis = torch.linspace(-3, 3, 601, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # [601*601, 2], spacing 0.01
    grid_objective = (torch.cdist(grid, points) * weights).sum(-1)
    best = grid[grid_objective.argmin()]
    assert (median - best).abs().max() <= 0.01
    assert geometric_median_objective(median, points, weights) <= grid_objective.min() + 1e-9


def test_a_dominant_weight_puts_the_median_on_its_point() -> None:
    points = torch.tensor([[0.0, 0.0], [5.0, 1.0], [-3.0, 4.0], [1.0, -2.0]], dtype=torch.float64)
    weights = torch.tensor([1.0, 1.0, 1.0, 10.0], dtype=torch.float64)
    result = compute_geometric_median(points, weights, maxiter=1000)
    assert_close(result.median, points[3], atol=1e-4, rtol=0)


def test_termination_and_logs() -> None:
    torch.manual_seed(0)
    points = torch.randn(20, 3)
    converged = compute_geometric_median(points, maxiter=1000, ftol=1e-5, do_log=True)
    assert converged.termination == "function value converged within tolerance"
    assert converged.logs is not None and len(converged.logs) >= 2
    assert all(b <= a + 1e-6 for a, b in zip(converged.logs, converged.logs[1:], strict=False))
    capped = compute_geometric_median(points, maxiter=2)
    assert capped.termination == "maximum iterations reached" and capped.logs is None
    assert capped.new_weights.shape == (20,)


def test_bad_shapes() -> None:
    with pytest.raises(
        ValueError, match=r"points must be a non-empty \[n, d\] tensor, got shape \[3\]"
    ):
        compute_geometric_median(torch.zeros(3))
    with pytest.raises(ValueError, match=r"weights must have shape \[4\], got \[3\]"):
        compute_geometric_median(torch.zeros(4, 2), torch.ones(3))
