"""Multi-label readouts: per-class scores from the class head, and the classes named present."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def class_scores(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """(N, C) scores: the predicted label distribution (softmax, DLDL) or per-class sigmoids (BCE)."""
    z = logits.float()
    if activation == "softmax":
        return torch.softmax(z, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    raise ValueError(f"unknown activation {activation!r}")


@torch.inference_mode()
def image_scores(model: nn.Module, batches: Iterable[torch.Tensor], activation: str) -> torch.Tensor:
    """(N, C) scores of a multi-label model (in eval mode) over normalised image batches, on the CPU."""
    return torch.cat([class_scores(model(x)["classes"], activation).cpu() for x in batches])


def name_present(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, C) booleans: the classes whose score reaches ``threshold``."""
    return scores >= threshold
