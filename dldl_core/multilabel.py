"""Multi-label readouts: per-class scores from the class head, and the classes named present."""

from __future__ import annotations

import torch


def class_scores(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """(N, C) scores: the predicted label distribution (softmax, DLDL) or per-class sigmoids (BCE)."""
    z = logits.float()
    if activation == "softmax":
        return torch.softmax(z, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    raise ValueError(f"unknown activation {activation!r}")


def name_present(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, C) booleans: the classes whose score reaches ``threshold``."""
    return scores >= threshold
