"""Head pose from a pose model: the joint yaw x pitch and the roll distributions, and their readouts."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .models import with_mirror
from .readouts import expectation, joint_moments, std


def pose_probs(model: nn.Module, x: torch.Tensor, tta_flip: bool) -> dict[str, torch.Tensor]:
    """Joint yaw x pitch (N, Y, P) and roll (N, R) distributions of a normalised batch.

    With ``tta_flip`` the mirror image's distributions are averaged in, with
    yaw and roll reversed (the grids are symmetric around 0).
    """
    out, m = with_mirror(model, x) if tta_flip else (model(x), None)
    z_yp, z_r = out["yaw_pitch"].float(), out["roll"].float()
    if m is not None:
        z_yp = 0.5 * (z_yp + m["yaw_pitch"].float().flip(1))
        z_r = 0.5 * (z_r + m["roll"].float().flip(1))
    return {"yaw_pitch": torch.softmax(z_yp.flatten(1), 1).view_as(z_yp), "roll": torch.softmax(z_r, 1)}


def summarize_pose(probs: dict[str, torch.Tensor], bins: torch.Tensor, step: float) -> list[dict]:
    """Per-face readouts (JSON-ready): expected yaw, pitch, roll, the yaw-pitch covariance,
    the roll spread, the grid and the joint yaw x pitch distribution (rows yaw, columns pitch)."""
    mean, cov = joint_moments(probs["yaw_pitch"], bins, bins)
    roll, roll_sd = expectation(probs["roll"], bins), std(probs["roll"], bins)
    grid = {"start": float(bins[0]), "stop": float(bins[-1]), "step": step}
    joint = torch.round(probs["yaw_pitch"].double(), decimals=5)  # at once: 3,721 values a face
    return [
        {
            "yaw": round(float(mean[i, 0]), 2),
            "pitch": round(float(mean[i, 1]), 2),
            "roll": round(float(roll[i]), 2),
            "cov": [[round(float(v), 2) for v in r] for r in cov[i]],
            "roll_std": round(float(roll_sd[i]), 2),
            "grid": {"yaw": grid, "pitch": grid},
            "probs": joint[i].tolist(),
        }
        for i in range(len(roll))
    ]


def head_axes(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Image-plane directions (x right, y down) of the head's own axes: rows right, up, nose.

    Orthographic projection of the head rotation R = Rz(roll) Ry(yaw) Rx(pitch)
    in the data's convention: yaw > 0 turns the nose to the image's left,
    pitch > 0 raises it, roll > 0 turns the head clockwise in the image.
    """
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    rot = rz @ ry @ rx  # columns: the head's right, up and nose in camera space (x right, y up, z to the viewer)
    return np.stack([rot[0], -rot[1]], 1)  # (3 axes, 2): flip y for image coordinates
