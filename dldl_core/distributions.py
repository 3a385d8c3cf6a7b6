"""Label distributions: turn a scalar (or vector) label into a distribution over bins.

DLDL replaces a hard label ``y`` by a discretised Gaussian centred on ``y``; the
network then learns the whole distribution with a KL loss. The same
construction serves every task: a 1-D grid for age or roll, the product of two
1-D grids for the joint yaw x pitch distribution of head pose. Multi-label
images spread their mass over the classes present instead, and a segmentation
map becomes per-pixel distributions that mix the classes met at a boundary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bin_grid(start: float, stop: float, step: float) -> torch.Tensor:
    """Bin centres ``start, start+step, ..., stop`` (``stop`` included)."""
    n = round((stop - start) / step) + 1
    return start + step * torch.arange(n, dtype=torch.float32)


def gaussian_1d(labels: torch.Tensor, bins: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Discretised Gaussian over ``bins`` for each label, normalised to sum 1.

    ``labels`` has shape (N,) and ``sigma`` is a float or a (N,) tensor (one
    spread per example, e.g. a spread that grows with label ambiguity).
    Labels outside the grid are clipped to its ends so that every row still
    puts its mass at the nearest representable value. Returns (N, len(bins)).
    """
    labels = labels.to(torch.float32).reshape(-1, 1)
    bins = bins.to(labels.device, torch.float32).reshape(1, -1)
    labels = labels.clamp(bins[0, 0].item(), bins[0, -1].item())
    sigma_t = torch.as_tensor(sigma, dtype=torch.float32, device=labels.device).reshape(-1, 1)
    if (sigma_t <= 0).any():
        raise ValueError("sigma must be positive")
    logp = -0.5 * ((bins - labels) / sigma_t) ** 2
    return torch.softmax(logp, dim=1)


def nearest_bin(labels: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Index of the bin centre nearest to each label (labels beyond the grid get its end bins)."""
    return (labels.reshape(-1, 1).float() - bins.to(labels.device).reshape(1, -1)).abs().argmin(1)


def label_density(labels: torch.Tensor, bins: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """The labels' density over ``bins``, summing to 1: each label spread by a Gaussian of ``sigma``,
    so that sparse neighbouring bins share their counts (as label-distribution smoothing does)."""
    density = gaussian_1d(labels, bins, sigma).sum(0)
    return density / density.sum()


def density_weights(labels: torch.Tensor, bins: torch.Tensor, power: float, sigma: float = 2.0, cap: float = 10.0) -> torch.Tensor:
    """A weight per bin that balances a skewed label distribution: the labels' density over ``bins``
    (each label spread by a Gaussian of ``sigma``, so that sparse neighbouring bins share their
    counts, as label-distribution smoothing does) to the power ``-power``, scaled so that the
    labels' mean weight is 1 and capped at ``cap`` (a handful of rare labels must not dominate)."""
    weight = label_density(labels, bins, sigma).clamp_min(1e-12) ** -power
    weight = weight / weight[nearest_bin(labels, bins)].mean()
    return weight.clamp(max=cap)


def gaussian_2d(
    labels: torch.Tensor,
    bins_x: torch.Tensor,
    bins_y: torch.Tensor,
    sigma: float | torch.Tensor,
) -> torch.Tensor:
    """2-D Gaussian over the grid ``bins_x`` x ``bins_y``, normalised over the grid.

    ``labels`` has shape (N, 2) holding (x, y). ``sigma`` is a float, a (N,)
    tensor (isotropic, one spread per example) or a (N, 2) tensor (one spread
    per axis and example). Returns (N, len(bins_x), len(bins_y)).
    """
    s = torch.as_tensor(sigma, dtype=torch.float32, device=labels.device)
    sx, sy = (s[:, 0], s[:, 1]) if s.ndim == 2 else (s, s)
    px = gaussian_1d(labels[:, 0], bins_x, sx)
    py = gaussian_1d(labels[:, 1], bins_y, sy)
    return px[:, :, None] * py[:, None, :]


def multilabel_distribution(present: torch.Tensor, ambiguous: torch.Tensor, weight: float, none_class: bool = False) -> torch.Tensor:
    """Distribution over classes for multi-label images: (N, C) from two (N, C) boolean masks.

    Each class present gets mass 1, a class present only through ambiguous
    objects (VOC's "difficult", COCO's crowds or tiny objects) gets ``weight``,
    absent classes 0; each row is then normalised to sum 1. A row with nothing
    present stays all zero (such images carry no label), unless ``none_class``:
    then the result has one more column, "none of these", which takes the whole
    mass of such rows (and none of the others).
    """
    present, ambiguous = present.bool(), ambiguous.bool()
    mass = torch.where(present, 1.0, torch.where(ambiguous, float(weight), 0.0))
    total = mass.sum(1, keepdim=True)
    if none_class:
        mass = torch.cat([mass, (total == 0).float()], 1)
        total = mass.sum(1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp_min(1e-12), mass)


def boundary_distribution(labels: torch.Tensor, classes: int, window: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Per-pixel class distributions (N, C, H, W) from class-index maps (N, H, W).

    DLDL's segmentation labels: the one-hot class maps are blurred with a
    ``window`` x ``window`` Gaussian of spread ``sigma`` pixels and renormalised
    at every pixel, so a pixel within ``window // 2`` of a boundary carries the
    classes on both sides while interior pixels stay one-hot. Labels outside
    0..C-1 are void: they add nothing to any neighbour and their own
    distribution is all zero (they take no part in the loss). ``window`` 1 or
    ``sigma`` 0 gives the one-hot maps.
    """
    labels = labels.long()
    valid = (labels >= 0) & (labels < classes)
    onehot = F.one_hot(torch.where(valid, labels, classes), classes + 1)[..., :classes].permute(0, 3, 1, 2).float()
    if window <= 1 or sigma <= 0:
        return onehot
    r = window // 2
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=labels.device, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(onehot.dtype)
    blurred = F.conv2d(onehot, k.view(1, 1, 1, -1).expand(classes, 1, 1, -1), padding=(0, r), groups=classes)
    blurred = F.conv2d(blurred, k.view(1, 1, -1, 1).expand(classes, 1, -1, 1), padding=(r, 0), groups=classes)
    total = blurred.sum(1, keepdim=True)
    return torch.where(valid[:, None], blurred / total.clamp_min(1e-12), torch.zeros_like(blurred))
