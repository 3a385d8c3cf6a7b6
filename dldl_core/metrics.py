"""Evaluation metrics for scalar predictions with distributions."""

from __future__ import annotations

import torch


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error."""
    return float((pred.float() - target.float()).abs().mean())


def cumulative_score(pred: torch.Tensor, target: torch.Tensor, theta: float = 5.0) -> float:
    """CS(theta): the fraction of predictions within ``theta`` of the target."""
    return float(((pred.float() - target.float()).abs() <= theta).float().mean())


def epsilon_error(pred: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> float:
    """ChaLearn LAP apparent-age error: mean of 1 - exp(-(pred - mean)^2 / (2 std^2)).

    ``mean`` and ``std`` are the annotators' mean and standard deviation of
    the apparent age of each image. 0 is perfect, 1 is worst.
    """
    z = (pred.float() - mean.float()) / std.float()
    return float((1.0 - torch.exp(-0.5 * z**2)).mean())


def interval_coverage(interval: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of targets inside their predicted [lo, hi] interval (N, 2)."""
    t = target.float()
    return float(((t >= interval[:, 0]) & (t <= interval[:, 1])).float().mean())
