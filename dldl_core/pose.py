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


def summarize_pose(probs: dict[str, torch.Tensor], bins: torch.Tensor, step: float, with_probs: bool = True) -> list[dict]:
    """Per-face readouts (JSON-ready): expected yaw, pitch, roll, the yaw-pitch covariance,
    the roll spread and (``with_probs``) the grid and the joint yaw x pitch distribution (rows
    yaw, columns pitch)."""
    mean, cov = joint_moments(probs["yaw_pitch"], bins, bins)
    roll, roll_sd = expectation(probs["roll"], bins), std(probs["roll"], bins)
    grid = {"start": float(bins[0]), "stop": float(bins[-1]), "step": step}
    joint = torch.round(probs["yaw_pitch"].double(), decimals=5) if with_probs else None  # at once: 3,721 values a face
    out = []
    for i in range(len(roll)):
        row = {
            "yaw": round(float(mean[i, 0]), 2),
            "pitch": round(float(mean[i, 1]), 2),
            "roll": round(float(roll[i]), 2),
            "cov": [[round(float(v), 2) for v in r] for r in cov[i]],
            "roll_std": round(float(roll_sd[i]), 2),
        }
        if joint is not None:
            row["grid"] = {"yaw": grid, "pitch": grid}
            row["probs"] = joint[i].tolist()
        out.append(row)
    return out


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Head rotations (N, 3, 3) of (N, 3) yaw, pitch, roll in degrees, in the data's convention.

    R = Rx(pitch) Ry(yaw) Rz(roll), the order of AFLW2000-3D and 300W-LP (3DDFA's fitted
    poses): roll turns the head about its own front axis first, so a rotation of the image
    about the camera axis changes all three angles of a turned head, not only the roll.
    Columns are the head's right, up and nose in camera space (x right, y up, z to the viewer).
    """
    y, p, r = torch.deg2rad(angles.double()).unbind(1)
    one, zero = torch.ones_like(y), torch.zeros_like(y)

    def mat(*rows: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack([torch.stack(row, -1) for row in rows], -2)

    rx = mat((one, zero, zero), (zero, p.cos(), p.sin()), (zero, -p.sin(), p.cos()))
    ry = mat((y.cos(), zero, -y.sin()), (zero, one, zero), (y.sin(), zero, y.cos()))
    rz = mat((r.cos(), r.sin(), zero), (-r.sin(), r.cos(), zero), (zero, zero, one))
    return (rx @ ry @ rz).to(angles.dtype)


def euler_angles(rot: torch.Tensor) -> torch.Tensor:
    """(N, 3) yaw, pitch, roll in degrees of rotations (N, 3, 3): the inverse of ``rotation_matrix``."""
    r = rot.double()
    yaw = torch.asin((-r[:, 0, 2]).clamp(-1, 1))
    pitch = torch.atan2(r[:, 1, 2], r[:, 2, 2])
    roll = torch.atan2(r[:, 0, 1], r[:, 0, 0])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], 1)).to(rot.dtype)


def rotate_in_plane(angles: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """The (N, 3) yaw, pitch, roll of heads after their images turn ``degrees`` (N,) counter-clockwise
    about the camera axis (as ``PIL.Image.rotate`` and ``transforms.random_affine`` turn them).

    A counter-clockwise image turn is a clockwise-negative one in the data's roll convention, applied
    in camera space: R' = Rz(-degrees) R.
    """
    zero = torch.zeros_like(degrees)
    turn = rotation_matrix(torch.stack([zero, zero, -degrees], 1))
    return euler_angles(turn @ rotation_matrix(angles))


def head_axes(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Image-plane directions (x right, y down) of the head's own axes: rows right, up, nose.

    Orthographic projection of ``rotation_matrix``: yaw > 0 turns the nose to the image's
    left, pitch > 0 raises it, roll > 0 turns the head clockwise in the image.
    """
    rot = rotation_matrix(torch.tensor([[yaw, pitch, roll]], dtype=torch.float64))[0].numpy()
    return np.stack([rot[0], -rot[1]], 1)  # (3 axes, 2): flip y for image coordinates
