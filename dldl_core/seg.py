"""Segmentation readouts: from per-pixel class distributions to a class map, an uncertainty map
(normalised entropy) and class fractions, and the CamVid class names and colours."""

from __future__ import annotations

import math

import numpy as np
import torch

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
CAMVID_COLOURS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
CAMVID_VOID = 11  # the masks' index for unlabelled pixels


def class_map(probs: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) distributions -> (N, H, W) most probable class."""
    return probs.argmax(1)


def uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) distributions -> (N, H, W) entropy divided by log C: 0 when the model is sure
    of one class, 1 when every class is equally likely."""
    p = probs.float()
    return -(torch.xlogy(p, p)).sum(1) / math.log(p.shape[1])


def class_fractions(classes: np.ndarray, names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """Share of the pixels of one class map (H, W) that each class covers."""
    counts = np.bincount(classes.ravel(), minlength=len(names))[: len(names)]
    return {n: round(float(c) / max(1, classes.size), 4) for n, c in zip(names, counts)}


def colourize(classes: np.ndarray, colours: tuple[tuple[int, int, int], ...] | list) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours (indices beyond the palette are black)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(colours)] = np.asarray(colours, dtype=np.uint8)
    return palette[classes]
