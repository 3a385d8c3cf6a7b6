"""Train the head-pose model on AFLW: ``python -m train.pose [--epochs N ...]``.

Each face's (yaw, pitch) becomes a 2-D Gaussian over a yaw x pitch grid and
its roll a 1-D Gaussian; the network learns both with KL (plus the
expectation L1 of DLDL-v2 when ``lam`` > 0). Crops are upright squares around
the face box. Trains on AFLW ``train``, keeps the epoch with the best
validation score and reports AFLW2000 (cropped from its given boxes) once.

AFLW's own angles are defined differently from AFLW2000's fitted 3-D poses.
``--labels`` chooses what the label distribution is centred on:

- ``raw``: AFLW's labels, spread ``sigma``.
- ``teachers``: the mean of the two teachers in ``teachers.csv`` (published
  models trained with AFLW2000's definition), spread growing with their
  disagreement (label ambiguity, which is what DLDL models).
- ``blend``: like ``teachers`` where they agree; where they disagree (large
  yaw) the centre moves to AFLW's own label, the spread still growing.
- ``3ddfa``: the better teacher (3DDFA_V2 scores 3.92 on AFLW2000, FSA-Net
  4.77) alone as the centre, the spread still growing with their disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dldl_core.crops import box_square
from dldl_core.data import PoseRecord, Square, data_root, image_cache, read_pose
from dldl_core.distributions import bin_grid, gaussian_1d, gaussian_2d
from dldl_core.faces import FaceDetector, measure_box_framing
from dldl_core.losses import expectation_l1, kl_from_logits
from dldl_core.pose import pose_probs, rotate_in_plane
from dldl_core.readouts import expectation, joint_moments
from dldl_core.transforms import batches, color_jitter, normalize, random_affine
from train.engine import Task, TrainConfig, fit, input_card, opt, parse_config

ANGLES = ("yaw", "pitch", "roll")
LABELS = ("raw", "teachers", "blend", "3ddfa")
MIRROR = torch.tensor([-1.0, 1.0, -1.0])  # a mirror image negates yaw and roll, keeps pitch


@dataclass
class PoseConfig(TrainConfig):
    """Train the DLDL head-pose model on AFLW (test: AFLW2000)."""

    out: str = opt("runs/pose", "run folder: last.pt, the best weights and their card")
    epochs: int = opt(12, "training epochs")
    image_size: int = opt(112, "network input side in pixels")
    max_angle: float = opt(90.0, "every angle's bins run from -max_angle to max_angle")
    step: float = opt(3.0, "bin width in degrees")
    hidden: int = opt(256, "bottleneck of the joint yaw x pitch head (0 = one linear layer)")
    sigma: float = opt(3.0, "spread (degrees) of the label distribution where the label is certain")
    labels: str = opt("blend", "what labels are centred on (see the module doc)", LABELS)
    agree: float = opt(5.0, "teachers within this many degrees on an angle count as agreeing")
    disagree: float = opt(15.0, "blend: at this teacher disagreement (degrees) the centre is AFLW's own label")
    lam: float = opt(1.0, "weight of the expectation L1 term (0 = plain DLDL)")
    box_side: float = opt(1.6, "crop side in units of the face box size (mean of width and height)")
    augment: bool = opt(True, "random mirror (negating yaw and roll), scale, shift, brightness and contrast")
    rotate: float = opt(45.0, "in-plane rotation range (degrees) of the augmentation; labels turn with the image")
    rotate_p: float = opt(0.5, "share of training faces that are rotated in the image plane")
    tta_flip: bool = opt(True, "average the distribution of the face and its mirror image")
    framing_chips: int = opt(500, "training crops used to measure the crop framing relative to the detector")


def targets(labels: torch.Tensor, cfg: PoseConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (N, 3) and spreads (N, 3) of the label distributions from label rows (N, 9).

    A row holds AFLW's (yaw, pitch, roll) then the two teachers' (yaw, pitch, roll).
    """
    raw = labels[:, :3]
    if cfg.labels == "raw":
        return raw, torch.full_like(raw, cfg.sigma)
    a, b = labels[:, 3:6], labels[:, 6:9]
    gap = (a - b).abs()
    spread = (cfg.sigma**2 + (gap / 2) ** 2).sqrt()
    mean = (a + b) / 2
    if cfg.labels == "teachers":
        return mean, spread
    if cfg.labels == "3ddfa":
        return a, spread
    if cfg.labels == "blend":
        w = ((gap - cfg.agree) / max(cfg.disagree - cfg.agree, 1e-6)).clamp(0, 1)
        return (1 - w) * mean + w * raw, spread
    raise ValueError(f"unknown labels {cfg.labels!r}; choose one of {', '.join(LABELS)}")


class PoseTask(Task):
    name = "pose"

    def __init__(self, config: PoseConfig):
        if config.labels not in LABELS:
            raise ValueError(f"unknown labels {config.labels!r}; choose one of {', '.join(LABELS)}")
        self.config = config
        self.bins = bin_grid(-config.max_angle, config.max_angle, config.step)
        self.framing: dict[str, Any] = {}

    @property
    def box_framing(self) -> dict[str, float]:
        return {"dx": 0.0, "dy": 0.0, "side": self.config.box_side}

    def heads(self) -> dict[str, Any]:
        n = len(self.bins)
        return {"yaw_pitch": {"shape": [n, n], "hidden": self.config.hidden}, "roll": n}

    def _rows(self, split: str) -> list[PoseRecord]:
        return read_pose("aflw2000", self.config.data) if split == "test" else read_pose("aflw", self.config.data, split)

    def load_split(self, split: str, limit: int = 0) -> tuple[np.ndarray, torch.Tensor]:
        rows = self._rows(split)
        rows = rows[:limit] if limit else rows
        squares: list[Square] = [box_square(list(r.box), self.box_framing) for r in rows]
        images = image_cache([r.path for r in rows], self.config.image_size, self.config.cache_dir, squares)
        nan = (float("nan"),) * 3
        labels = [list(r.pose) + [v for t in (r.teachers or (nan, nan))[:2] for v in t] for r in rows]
        return images, torch.tensor(labels, dtype=torch.float32)

    def prepare(self, images: np.ndarray) -> None:
        step = max(1, len(images) // self.config.framing_chips)
        chips = np.asarray(images[::step][: self.config.framing_chips])
        self.framing = measure_box_framing(chips, FaceDetector())

    def extra_state(self) -> dict[str, Any]:
        return {"framing": self.framing}

    def load_extra(self, extra: dict[str, Any]) -> None:
        self.framing = extra["framing"]

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalize(images)
        if not self.config.augment:
            return x, labels
        mirror = torch.rand(len(x), device=x.device) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        sign = torch.where(mirror[:, None], MIRROR.to(x.device).repeat(3)[None, :], torch.ones(1, 9, device=x.device))
        labels = labels * sign
        degrees, labels = self.rotation(labels)
        return color_jitter(random_affine(x, flip=False, degrees=degrees)), labels

    def rotation(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random in-plane turns (degrees, counter-clockwise) for a batch and its label rows turned with
        them (every triplet: AFLW's and both teachers'); turns that would carry an angle off the
        bins are not made."""
        c = self.config
        n = len(labels)
        degrees = (torch.rand(n, device=labels.device) * 2 - 1) * c.rotate
        degrees = degrees * (torch.rand(n, device=labels.device) < c.rotate_p)
        turned = torch.cat([rotate_in_plane(t, degrees) for t in labels.split(3, 1)], 1)
        limit = c.max_angle - c.step
        ok = ~(turned.abs() > limit).any(1)  # NaN (no teacher) compares False: still turned
        return torch.where(ok, degrees, 0.0), torch.where(ok[:, None], turned, labels)

    def loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        centre, spread = targets(labels, self.config)
        joint = gaussian_2d(centre[:, :2], self.bins, self.bins, spread[:, :2])
        roll = gaussian_1d(centre[:, 2], self.bins, spread[:, 2])
        loss = kl_from_logits(outputs["yaw_pitch"], joint) + kl_from_logits(outputs["roll"], roll)
        if self.config.lam > 0:
            yp = outputs["yaw_pitch"].float()
            l1 = (
                expectation_l1(torch.logsumexp(yp, 2), self.bins, centre[:, 0])
                + expectation_l1(torch.logsumexp(yp, 1), self.bins, centre[:, 1])
                + expectation_l1(outputs["roll"], self.bins, centre[:, 2])
            )
            loss = loss + self.config.lam * l1 / 3
        return loss

    @torch.inference_mode()
    def predict(self, model: nn.Module, images: np.ndarray, device: torch.device) -> torch.Tensor:
        """Expected (yaw, pitch, roll) for each crop, (N, 3)."""
        model.eval()
        out = []
        for x in batches(images, device, 256):
            probs = pose_probs(model, x, self.config.tta_flip)
            (yp, _), roll = joint_moments(probs["yaw_pitch"], self.bins, self.bins), expectation(probs["roll"], self.bins)
            out.append(torch.cat([yp, roll[:, None]], 1).cpu())
        return torch.cat(out)

    def evaluate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> dict[str, float]:
        pred = self.predict(model, images, device)
        raw = labels[:, :3]
        err = (pred - raw).abs()
        metrics = {f"mae_{a}": float(err[:, i].mean()) for i, a in enumerate(ANGLES)}
        metrics["mae"] = float(err.mean())
        metrics["within10_yaw_pitch"] = float((err[:, :2] <= 10).all(1).float().mean())
        teachers = labels[:, 3:9]
        if torch.isfinite(teachers).all():
            # AFLW's labels use another definition than AFLW2000's; where the two teachers agree
            # their mean is the best available reference in AFLW2000's definition.
            a, b = labels[:, 3:6], labels[:, 6:9]
            agree = ((a - b).abs() <= self.config.agree).all(1)
            metrics["mae_consensus"] = float((pred - (a + b) / 2).abs()[agree].mean())
            metrics["consensus_faces"] = float(agree.sum())
            wide = raw[:, 0].abs() > 45
            metrics["mae_raw_wide_yaw"] = float(err[wide].mean())
            metrics["score"] = metrics["mae_consensus"]
        else:
            metrics["score"] = metrics["mae"]
        return metrics

    def card(self) -> dict[str, Any]:
        c = self.config
        return {
            "input": input_card(
                c.image_size,
                {
                    "kind": "square",
                    "description": "upright square around the face box; dx, dy, side in units of the box size "
                    "(mean of its width and height); outside the image is black",
                    "from_box": self.box_framing,
                    "from_detector": self.framing,
                },
            ),
            "bins": {a: {"start": -c.max_angle, "stop": c.max_angle, "step": c.step} for a in ANGLES},
            "readout": {"tta_flip": c.tta_flip},
            "data": {
                "dataset": "AFLW face crops, ../shared/data/pose/aflw; test AFLW2000, ../shared/data/pose/aflw2000",
                "root": str(data_root(c.data)),
                "labels": {
                    "raw": "AFLW's own angles",
                    "teachers": "mean of the 3DDFA_V2 and FSA-Net predictions in teachers.csv (distillation)",
                    "blend": "teachers' mean where they agree within `agree` degrees, moving linearly to AFLW's "
                    "own angle as their disagreement reaches `disagree` (distillation plus AFLW labels)",
                    "3ddfa": "the 3DDFA_V2 predictions in teachers.csv (distillation from the better teacher)",
                }[c.labels],
                "label_spread": "sigma" if c.labels == "raw" else "sqrt(sigma^2 + (teacher disagreement / 2)^2) per angle",
                "train": "aflw split == train",
                "select": "aflw split == val, best epoch by MAE to the teachers' mean on faces where they agree",
                "test": "AFLW2000 (1,969 images), cropped from the given boxes, evaluated once at the end",
            },
        }


def main(argv: list[str] | None = None) -> None:
    fit(PoseTask(parse_config(PoseConfig, argv, prog="python -m train.pose")))


if __name__ == "__main__":
    main()
