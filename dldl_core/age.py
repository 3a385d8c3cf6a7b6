"""Age from an age model: its outputs -> the age distribution (test-time views averaged, tempered)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .degrade import gaussian_blur, luma
from .models import paired_outputs
from .transforms import IMAGENET_MEAN, IMAGENET_STD, batches


def gray_view(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """A normalised batch (N, 3, H, W) as the same images in grayscale, normalised again."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (luma(x * s + m) - m) / s


def age_logits(
    model: nn.Module, x: torch.Tensor, tta_flip: bool, tta_gray: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, blur: float = 0.0,
) -> torch.Tensor:
    """(N, bins) age logits of a normalised batch, averaged over two views with ``tta_flip`` (the
    image and its mirror image) or ``tta_gray`` (the second view in grayscale: the mirror image,
    or the image itself without ``tta_flip``). The gray view costs nothing beyond the second
    view: a face then reads about the same in color and in black and white (the encoding
    spread of ``benchmarks.age``).

    ``blur`` > 0 first blurs every face by a Gaussian of that sigma in input pixels. UTKFace's
    chips are soft; a slight blur takes the camera sharpening of other photos away, which the
    model would otherwise read as youth (the sharpened val set of ``benchmarks.age``). Blurring
    commutes with the per-channel normalisation, so the normalised batch is blurred as it is."""
    if blur > 0:
        x = gaussian_blur(x, torch.full((len(x),), blur, device=x.device, dtype=x.dtype))
    if not (tta_flip or tta_gray):
        return model(x)["age"].float()
    second = x.flip(3) if tta_flip else x
    if tta_gray:
        second = gray_view(second, mean, std)
    first, other = paired_outputs(model, x, second)
    return 0.5 * (first["age"].float() + other["age"].float())


@torch.inference_mode()
def image_age_logits(
    model: nn.Module, images: np.ndarray, device: torch.device, tta_flip: bool, tta_gray: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, blur: float = 0.0, batch_size: int = 256,
) -> torch.Tensor:
    """(N, bins) ``age_logits`` of a uint8 image array (N, H, W, 3), read by ``model`` in eval mode in
    batches on ``device``; returned on the CPU."""
    model.eval()
    return torch.cat([age_logits(model, x, tta_flip, tta_gray, mean, std, blur).cpu()
                      for x in batches(images, device, batch_size, mean, std)])


def age_probs(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """(N, bins) age distributions: the softmax of the logits at the calibrated ``temperature``
    (one for all faces, or each face's: ``face_temperatures``)."""
    return torch.softmax(logits / temperature, dim=1)


NOVELTY_RANGE = (-1.0, 3.0)  # the novelty that widens an interval is clipped to this


def face_temperatures(temperature: float, widening: float, novelty: torch.Tensor) -> torch.Tensor:
    """(N, 1) softmax temperatures: ``temperature`` times exp(``widening`` x each face's novelty),
    the novelty clipped to ``NOVELTY_RANGE``. A face unlike the training faces errs more than the
    model's own spread says (coverage falls from 0.88 at the lowest novelty to 0.72 at the highest
    on val), so its interval is widened and a typical face's narrowed; ``python -m train.novelty``
    fits the temperature with it (docs/models/age.md, "Wider where the face is unusual")."""
    z = novelty.float().clamp(*NOVELTY_RANGE)
    return (temperature * torch.exp(widening * z))[:, None]
