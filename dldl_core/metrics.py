"""Evaluation metrics: scalar predictions with distributions, and per-class ranking (multi-label)."""

from __future__ import annotations

import torch


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error."""
    return float((pred.float() - target.float()).abs().mean())


def balanced_mae(pred: torch.Tensor, target: torch.Tensor, starts: tuple[float, ...]) -> float:
    """The mean of the MAEs of target groups ``[starts[i], starts[i+1])`` (the last open-ended), each
    group weighed alike however many examples it has (empty groups are skipped): the error on a
    set balanced across the groups, which a skewed test set hides."""
    group = torch.bucketize(target.float(), torch.tensor(starts[1:], dtype=torch.float32), right=True)
    err = (pred.float() - target.float()).abs()
    return float(torch.stack([err[group == g].mean() for g in range(len(starts)) if (group == g).any()]).mean())


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


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the precision-recall curve of one class (non-interpolated, as scikit-learn's
    ``average_precision_score``): the mean of the precision at the rank of each positive."""
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positive.bool()[order].float()
    if hits.sum() == 0:
        raise ValueError("average precision needs at least one positive")
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def mean_average_precision(scores: torch.Tensor, positive: torch.Tensor) -> tuple[float, list[float | None]]:
    """mAP over the classes (columns) with at least one positive, and each class's AP (None when it has none)."""
    per = [average_precision(scores[:, c], positive[:, c]) if positive[:, c].any() else None for c in range(scores.shape[1])]
    present = [a for a in per if a is not None]
    return sum(present) / len(present), per


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half); 0.5 is chance."""
    pos, neg = scores[positive.bool()].double(), scores[~positive.bool()].double()
    if not len(pos) or not len(neg):
        raise ValueError("AUROC needs positives and negatives")
    above = (pos[:, None] > neg[None]).double().sum() + 0.5 * (pos[:, None] == neg[None]).double().sum()
    return float(above / (len(pos) * len(neg)))


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """(C, C) pixel counts, rows the true class, columns the predicted one; targets outside
    0..C-1 (void) are left out."""
    t, p = target.flatten().long(), pred.flatten().long()
    keep = (t >= 0) & (t < classes)
    return torch.bincount(t[keep] * classes + p[keep], minlength=classes * classes).view(classes, classes)


def iou_per_class(confusion: torch.Tensor) -> list[float | None]:
    """Intersection over union of each class (None for a class neither present nor predicted)."""
    c = confusion.double()
    inter, union = c.diag(), c.sum(0) + c.sum(1) - c.diag()
    return [float(i / u) if u > 0 else None for i, u in zip(inter, union)]


def iou_summary(confusion: torch.Tensor, names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``miou`` (mean over the classes present or predicted), ``pixel_accuracy`` and ``iou_<name>``
    for each such class, from a (C, C) confusion matrix."""
    per = iou_per_class(confusion)
    present = [v for v in per if v is not None]
    out = {"miou": sum(present) / len(present), "pixel_accuracy": float(confusion.diag().sum() / confusion.sum())}
    out.update({f"iou_{n}": v for n, v in zip(names, per) if v is not None})
    return out
