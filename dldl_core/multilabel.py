"""Multi-label readouts: per-class scores from the class head, and the classes named present."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image
from torch import nn

MIN_DETAIL_SIDE = 8  # pixels: a smaller image cannot show any of the classes
MIN_DETAIL_STD = 2.0  # grey levels: a flatter image is one colour, with nothing in it
NONE_LABEL = "none of these"  # how the extra output of a model trained with a "none" class is shown


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


def split_none(scores: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, classes) class scores, and the (N,) "none of these" scores of a head that has that extra
    output after the classes (None otherwise)."""
    return scores[:, :classes], (scores[:, classes] if scores.shape[1] > classes else None)


def name_present(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, C) booleans: the classes whose score reaches ``threshold``."""
    return scores >= threshold


def has_detail(image: Image.Image) -> bool:
    """Whether ``image`` can show an object at all: at least ``MIN_DETAIL_SIDE`` pixels a side and
    more than one colour. The class distribution always sums to one, so on a blank image it would
    still name classes; such images are answered "none" before the model is asked."""
    if min(image.size) < MIN_DETAIL_SIDE:
        return False
    grey = np.asarray(image.convert("L").resize((64, 64)) if max(image.size) > 64 else image.convert("L"), np.float32)
    return float(grey.std()) >= MIN_DETAIL_STD
