"""Evidence over time: one person's per-frame distributions fused into one.

Age does not change within a clip, so every frame's age distribution is one
more piece of evidence about the same unknown: ``AgeEvidence`` pools them
log-linearly. Frames of one clip are far from independent (same face, same
light, same camera), so the pooled distribution is the geometric mean of the
frames' distributions sharpened by an *effective* number of frames,
``n / (1 + (n - 1) * correlation)``, which grows to ``1 / correlation`` and
no further: a naive product of 300 frames would claim certainty it does not
have.

Head pose moves, smoothly: ``PoseFilter`` is a forward Bayes filter over the
yaw x pitch grid and over roll, whose prediction step spreads the previous
posterior by a random-walk motion kernel and whose update multiplies in the
frame's distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TINY = 1e-12  # floor on probabilities before taking logs: a bin the model calls impossible stays possible
# Chosen on clips built from UTKFace val faces (``python -m benchmarks.video --split val --clips 200``):
# the correlation whose fused 80% interval at a clip's end comes nearest to covering 80% of true ages.
# With the age model trained on these very degradations it is 1 (0.795; 0.8 covers 0.745): a face's
# error is its own, the same in every frame, so more frames make the shown age steadier but may not
# make its interval narrower.
FRAME_CORRELATION = 1.0


class AgeEvidence:
    """Log-linear pooling of a track's age distributions (K bins each)."""

    def __init__(self, bins: int, correlation: float = FRAME_CORRELATION):
        if not 0.0 < correlation <= 1.0:
            raise ValueError(f"correlation must be in (0, 1], not {correlation}")
        self.correlation = correlation
        self.log_sum = torch.zeros(bins, dtype=torch.float64)
        self.frames = 0

    def add(self, probs: torch.Tensor) -> None:
        """Add one frame's distribution (K,)."""
        self.log_sum += probs.double().clamp_min(TINY).log()
        self.frames += 1

    def effective_frames(self, correlation: float | None = None) -> float:
        """How many independent frames the evidence is worth: ``n / (1 + (n - 1) * correlation)``."""
        n, c = self.frames, self.correlation if correlation is None else correlation
        return n / (1.0 + (n - 1) * c) if n else 0.0

    def fused(self, correlation: float | None = None) -> torch.Tensor:
        """The pooled distribution (K,): the frames' geometric mean raised to the effective count
        (under another ``correlation`` than the tracker's when given: for choosing it)."""
        if not self.frames:
            raise ValueError("no frame has been added")
        return torch.softmax(self.effective_frames(correlation) * self.log_sum / self.frames, 0).float()


def _gaussian_kernel(sd_bins: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sd_bins))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / max(sd_bins, 1e-6)) ** 2)
    return k / k.sum()


def spread(probs: torch.Tensor, sd_bins: float) -> torch.Tensor:
    """Blur a 1-D (K,) or 2-D (K, L) distribution by a Gaussian of ``sd_bins`` bins along every axis;
    mass pushed off the grid is dropped and the rest renormalised (angles do not wrap here)."""
    if sd_bins <= 0:
        return probs
    k = _gaussian_kernel(sd_bins).to(probs)
    r = (len(k) - 1) // 2
    x = probs[None, None] if probs.dim() == 2 else probs[None, None, None]
    x = F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0)) if probs.dim() == 2 else x
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    out = x.reshape(probs.shape)
    return out / out.sum().clamp_min(TINY)


class PoseFilter:
    """Forward filter of one track's head pose: a joint yaw x pitch grid and a roll grid.

    ``motion`` is the standard deviation (degrees) by which the head may turn
    between consecutive frames; ``step`` is the grid's bin width in degrees.
    """

    def __init__(self, step: float, motion: float = 2.0):
        self.step = step
        self.motion = motion
        self.joint: torch.Tensor | None = None
        self.roll: torch.Tensor | None = None

    def update(self, joint: torch.Tensor, roll: torch.Tensor, frames: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Take one frame's distributions (yaw x pitch (Y, P), roll (R)), ``frames`` after the last
        update (the motion spread grows with the square root of the gap); return the posteriors."""
        joint, roll = joint.double(), roll.double()
        if self.joint is None or self.roll is None:
            self.joint, self.roll = joint / joint.sum(), roll / roll.sum()
        else:
            sd = self.motion * math.sqrt(max(frames, 1)) / self.step
            self.joint = _bayes(spread(self.joint, sd), joint)
            self.roll = _bayes(spread(self.roll, sd), roll)
        return self.joint.float(), self.roll.float()


def _bayes(prior: torch.Tensor, likelihood: torch.Tensor) -> torch.Tensor:
    post = prior * likelihood.clamp_min(TINY)
    return post / post.sum()
