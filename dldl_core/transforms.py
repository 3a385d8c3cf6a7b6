"""Tensor transforms shared by training and inference."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (N, 3, H, W) images -> normalised float (N, 3, H, W)."""
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    x = images.float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def batches(
    images: np.ndarray, device: torch.device, batch_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> Iterator[torch.Tensor]:
    """Normalised channels-last float batches of a uint8 image array (N, H, W, 3), moved to ``device``."""
    for i in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(np.array(images[i : i + batch_size])).to(device), mean, std)
        yield x.contiguous(memory_format=torch.channels_last)


def random_affine(
    x: torch.Tensor,
    flip: bool = True,
    max_rotate: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.05,
    degrees: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random flip, rotation, scale and shift of a float batch (N, 3, H, W), one draw per image.

    ``degrees`` (N,) gives each image's rotation instead of a random one, counter-clockwise as
    ``PIL.Image.rotate`` turns it (pose labels must turn with their images). Done on whole batches with ``affine_grid`` so augmentation costs little
    next to the network, on CPU and GPU alike.
    """
    n = x.shape[0]
    dev = x.device
    if degrees is None:
        angle = (torch.rand(n, device=dev) * 2 - 1) * math.radians(max_rotate)
    else:
        angle = torch.deg2rad(degrees.to(dev, torch.float32))
    s = torch.empty(n, device=dev).uniform_(*scale)
    sign = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=dev)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = cos * sign
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * sign
    theta[:, 1, 1] = cos
    theta[:, :, 2] = (torch.rand(n, 2, device=dev) * 2 - 1) * max_shift * 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_erase(x: torch.Tensor, p: float, area: tuple[float, float] = (0.02, 0.2), aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017) of a float batch (N, C, H, W) in 0..1: each image, with
    probability ``p``, gets one rectangle of ``area`` (a fraction of the image) and ``aspect``
    (height / width, drawn log-uniformly) painted in one random colour, as a hand, a strand of hair
    or a pair of sunglasses covers part of a face, so that no single part of it decides the label."""
    n, c, h, w = x.shape
    dev = x.device
    hit = torch.rand(n, device=dev) < p
    frac = torch.empty(n, device=dev).uniform_(*area)
    ratio = torch.exp(torch.empty(n, device=dev).uniform_(math.log(aspect[0]), math.log(aspect[1])))
    eh = (torch.sqrt(frac * ratio) * h).clamp(1, h)
    ew = (torch.sqrt(frac / ratio) * w).clamp(1, w)
    top = torch.rand(n, device=dev) * (h - eh)
    left = torch.rand(n, device=dev) * (w - ew)
    ys = torch.arange(h, device=dev, dtype=x.dtype)[None, :, None]
    xs = torch.arange(w, device=dev, dtype=x.dtype)[None, None, :]
    inside = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
              & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]) & hit[:, None, None])
    colour = torch.rand(n, c, 1, 1, device=dev, dtype=x.dtype)
    return torch.where(inside[:, None], colour, x)


def random_frame(x: torch.Tensor, p: float, width: tuple[float, float] = (0.01, 0.12)) -> torch.Tensor:
    """Flat borders for a float batch (N, C, H, W) in 0..1: each image, with probability ``p``, has
    strips of ``width`` (a fraction of its side, drawn per side) along one to four of its sides
    replaced, half the time by one random colour (a plain backdrop, a padded photo's black) and
    otherwise by the strip's inner edge repeated outward (``crops.warp(edge=True)`` at a photo's
    border). The training chips' shifts are filled by reflection, and a flat frame of 4 px in 200
    read val a year younger, toward the middle of the ages (docs/models/age.md)."""
    n, c, h, w = x.shape
    dev = x.device
    hit = torch.rand(n, device=dev) < p
    sides = torch.rand(n, 4, device=dev) < 0.5
    sides[torch.arange(n, device=dev), torch.randint(0, 4, (n,), device=dev)] = True  # at least one side
    frac = torch.empty(n, 4, device=dev).uniform_(*width) * (sides & hit[:, None])
    top, bottom = (frac[:, 0] * h).round().long(), (frac[:, 1] * h).round().long()
    left, right = (frac[:, 2] * w).round().long(), (frac[:, 3] * w).round().long()
    ys = torch.arange(h, device=dev)[None, :]
    xs = torch.arange(w, device=dev)[None, :]
    src_y = torch.minimum(torch.maximum(ys, top[:, None]), (h - 1 - bottom)[:, None])  # (N, H)
    src_x = torch.minimum(torch.maximum(xs, left[:, None]), (w - 1 - right)[:, None])  # (N, W)
    rows = torch.gather(x, 2, src_y[:, None, :, None].expand(n, c, h, w))
    edge = torch.gather(rows, 3, src_x[:, None, None, :].expand(n, c, h, w))
    outside = (src_y != ys)[:, :, None] | (src_x != xs)[:, None, :]  # (N, H, W)
    flat = torch.rand(n, device=dev) < 0.5
    colour = torch.rand(n, c, 1, 1, device=dev, dtype=x.dtype).expand(n, c, h, w)
    fill = torch.where(flat[:, None, None, None], colour, edge)
    return torch.where(outside[:, None], fill, x)


def color_jitter(x: torch.Tensor, brightness: float = 0.2, contrast: float = 0.2) -> torch.Tensor:
    """Random brightness and contrast on a normalised batch, one draw per image."""
    n = x.shape[0]
    b = (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * brightness
    c = 1 + (torch.rand(n, 1, 1, 1, device=x.device) * 2 - 1) * contrast
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean + b


def random_scale_crop(
    x: torch.Tensor,
    labels: torch.Tensor,
    size: tuple[int, int],
    scale: tuple[float, float] = (0.75, 1.5),
    flip: bool = True,
    fill: int = 255,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random rescale, crop (``size`` = height, width) and flip of a float image batch
    (N, 3, H, W) and its class-index maps (N, H, W), one draw per image.

    Labels are sampled nearest-neighbour, so no class is invented; parts of the crop that fall
    outside the image get ``fill`` (void) in the labels and 0 (the mean colour, after
    normalising) in the image.
    """
    n, _, h, w = x.shape
    dev = x.device
    s = torch.empty(n, device=dev).uniform_(*scale)
    ax, ay = size[1] / (w * s), size[0] / (h * s)  # half-extent of the crop in the input's [-1, 1] coordinates
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = ax * (torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0) if flip else 1.0)
    theta[:, 1, 1] = ay
    theta[:, 0, 2] = (torch.rand(n, device=dev) * 2 - 1) * (1 - ax).abs()
    theta[:, 1, 2] = (torch.rand(n, device=dev) * 2 - 1) * (1 - ay).abs()
    grid = F.affine_grid(theta, [n, 1, *size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    shifted = (labels.float() + 1).unsqueeze(1)  # 0 now means "outside the image"
    lab = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False).squeeze(1).long() - 1
    return out, torch.where(lab < 0, torch.full_like(lab, fill), lab)
