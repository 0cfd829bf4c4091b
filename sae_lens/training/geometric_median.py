"""Geometric median by Weiszfeld's algorithm (used to initialise b_dec): the point
minimising the weighted sum of Euclidean distances to a set of points."""

from __future__ import annotations

from typing import NamedTuple

import torch


class GeometricMedianResult(NamedTuple):
    median: torch.Tensor  # [d]
    new_weights: torch.Tensor  # [n] the last Weiszfeld weights
    termination: str
    logs: list[torch.Tensor] | None  # objective values per iteration, when asked for


def weighted_average(points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i p_i / sum_i w_i for points [n, d] and weights [n]."""
    weights = weights / weights.sum()
    return (points * weights.view(-1, 1)).sum(dim=0)


@torch.no_grad()
def geometric_median_objective(
    median: torch.Tensor, points: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_i w_i |p_i - median|."""
    return (torch.linalg.norm(points - median.view(1, -1), dim=1) * weights).sum()


def compute_geometric_median(
    points: torch.Tensor,
    weights: torch.Tensor | None = None,
    eps: float = 1e-6,
    maxiter: int = 100,
    ftol: float = 1e-20,
    do_log: bool = False,
) -> GeometricMedianResult:
    """Weiszfeld iterations from the weighted mean, for points [n, d] and weights [n].

    `eps` floors the distances (so a median landing on a point does not divide by zero);
    stops after `maxiter` iterations or when the objective improves by at most `ftol` times
    its value. Returns the median [d], the final weights, how it stopped and, with `do_log`,
    the objective value before the first and after every iteration.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(
            f"points must be a non-empty [n, d] tensor, got shape {list(points.shape)}"
        )
    if weights is None:
        weights = torch.ones(points.shape[0], dtype=points.dtype, device=points.device)
    elif weights.shape != (points.shape[0],):
        raise ValueError(f"weights must have shape [{points.shape[0]}], got {list(weights.shape)}")
    with torch.no_grad():
        new_weights = weights
        median = weighted_average(points, weights)
        objective = geometric_median_objective(median, points, weights)
        logs = [objective] if do_log else None
        termination = "maximum iterations reached"
        for _ in range(maxiter):
            previous = objective
            distances = torch.linalg.norm(points - median.view(1, -1), dim=1)  # [n]
            new_weights = weights / distances.clamp(min=eps)
            median = weighted_average(points, new_weights)
            objective = geometric_median_objective(median, points, weights)
            if logs is not None:
                logs.append(objective)
            if abs(previous - objective) <= ftol * objective:
                termination = "function value converged within tolerance"
                break
    # Recomputed outside no_grad so gradients can reach `points` through the last step.
    return GeometricMedianResult(
        median=weighted_average(points, new_weights),
        new_weights=new_weights,
        termination=termination,
        logs=logs,
    )
