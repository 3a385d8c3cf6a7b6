"""Age from an age model: its outputs -> the age distribution (mirror-averaged, tempered)."""

from __future__ import annotations

import torch
from torch import nn

from .models import with_mirror


def age_logits(model: nn.Module, x: torch.Tensor, tta_flip: bool) -> torch.Tensor:
    """(N, bins) age logits of a normalised batch; with ``tta_flip`` averaged with the mirror image's."""
    if not tta_flip:
        return model(x)["age"].float()
    plain, mirrored = with_mirror(model, x)
    return 0.5 * (plain["age"].float() + mirrored["age"].float())


def age_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N, bins) age distributions: the softmax of the logits at the calibrated ``temperature``."""
    return torch.softmax(logits / temperature, dim=1)
