"""Face detection (facenet-pytorch MTCNN) and crops framed like the training crops.

Age models see aligned crops: a similarity transform (rotation, uniform scale,
shift) maps the 5 detected landmarks onto a template measured on the training
chips, so a detected face is framed as the chips the model learned from.
Pose models see upright square crops (rotating would remove the roll they
must predict), placed relative to the detector's box as measured on theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import fit_within

DETECT_MAX_SIDE = 1600  # larger images are downscaled for detection only


@dataclass
class Face:
    box: list[float]  # x0, y0, x1, y1 in the input image's pixels
    score: float
    landmarks: list[list[float]]  # left eye, right eye, nose, mouth left, mouth right

    def to_json(self) -> dict:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
        }


class FaceDetector:
    """MTCNN with its weights from the facenet-pytorch wheel; finds every face and its landmarks."""

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = 20, threshold: float = 0.9):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size, post_process=False)
        self.threshold = threshold

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces sorted left to right; boxes and landmarks in ``image``'s own pixels."""
        small = fit_within(image, DETECT_MAX_SIDE)
        scale = small.width / image.width
        if min(small.size) < 12:
            return []
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(small, landmarks=True)
        if boxes is None:
            return []
        faces = [
            Face((b / scale).tolist(), float(p), (pt / scale).tolist())
            for b, p, pt in zip(boxes, probs, points)
            if p >= self.threshold
        ]
        return sorted(faces, key=lambda f: f.box[0])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping points ``src`` onto ``dst``; a 2x3 matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (sc**2).sum(1).mean()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def warp(image: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """Apply the 2x3 image-to-crop ``matrix`` to get a ``size`` x ``size`` crop.

    When the face is much larger than the crop, the image is first shrunk
    with an antialiasing filter so the crop is not aliased.
    """
    m = np.vstack([matrix, [0, 0, 1]])
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if scale < 0.5:
        # Shrink only the region the crop needs, by a whole factor, then warp.
        inv = np.linalg.inv(m)
        corners = inv @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]], float)
        x0, y0 = np.floor(corners[:2].min(1)).astype(int) - 2
        x1, y1 = np.ceil(corners[:2].max(1)).astype(int) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, image.width), min(y1, image.height)
        if x1 > x0 and y1 > y0:
            factor = int(1 / scale)
            region = image.crop((x0, y0, x1, y1))
            region = region.reduce(factor) if factor > 1 else region
            shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], float)
            shrink = np.diag([factor, factor, 1.0])
            m = m @ shift @ shrink
            image = region
    inv = np.linalg.inv(m)
    return image.transform((size, size), Image.AFFINE, data=tuple(inv[:2].ravel()), resample=Image.BILINEAR)


def aligned_crop(image: Image.Image, landmarks: list[list[float]], template: list[list[float]], size: int) -> Image.Image:
    """Crop a face so its 5 landmarks land on ``template`` (fractions of the crop side)."""
    dst = np.asarray(template, np.float64) * size
    return warp(image, similarity_transform(np.asarray(landmarks), dst), size)


def square_crop(image: Image.Image, center: tuple[float, float], side: float, size: int) -> Image.Image:
    """The upright square of ``side`` pixels around ``center``, resampled to ``size``; outside is black."""
    k = size / side
    cx, cy = center
    return warp(image, np.array([[k, 0.0, -k * (cx - side / 2)], [0.0, k, -k * (cy - side / 2)]]), size)


def box_centre_size(box: list[float]) -> tuple[float, float, float]:
    """Centre x, centre y and size (mean of width and height) of a box x0, y0, x1, y1."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, ((x1 - x0) + (y1 - y0)) / 2


def box_square(box: list[float], framing: dict) -> tuple[tuple[float, float], float]:
    """Centre and side of the crop square for a face ``box``, placed as ``framing`` says.

    ``framing`` holds ``dx``, ``dy`` (offset of the crop centre from the box
    centre) and ``side``, all in units of the box size (mean of its width and
    height), as measured by ``measure_box_framing``.
    """
    cx, cy, s = box_centre_size(box)
    return (cx + framing["dx"] * s, cy + framing["dy"] * s), framing["side"] * s


def _detect_padded(chip: np.ndarray, detector: FaceDetector, pad: float) -> Face | None:
    """The most confident face on a tight chip padded with grey; coordinates in the chip's pixels."""
    side = chip.shape[1]
    p = int(round(side * pad))
    canvas = np.full((chip.shape[0] + 2 * p, side + 2 * p, 3), 128, np.uint8)
    canvas[p : p + chip.shape[0], p : p + side] = chip
    faces = detector.detect(Image.fromarray(canvas))
    if not faces:
        return None
    best = max(faces, key=lambda f: f.score)
    return Face([v - p for v in best.box], best.score, [[x - p, y - p] for x, y in best.landmarks])


def measure_template(chips: np.ndarray, detector: FaceDetector, pad: float = 0.25) -> dict:
    """Median landmark positions (fractions of the side) over training chips (N, S, S, 3).

    Chips are tight crops, so each is padded with grey before detection to
    leave the detector some context; the most confident face of each is used.
    """
    side = chips.shape[1]
    found = [np.asarray(f.landmarks) / side for f in (_detect_padded(c, detector, pad) for c in chips) if f]
    if not found:
        raise RuntimeError("no face was detected on any training chip; cannot measure the alignment template")
    pts = np.stack(found)
    return {
        "landmarks": np.median(pts, 0).round(4).tolist(),
        "spread": pts.std(0).mean().round(4).item(),
        "chips_measured": len(chips),
        "chips_detected": len(found),
    }


def measure_box_framing(chips: np.ndarray, detector: FaceDetector, pad: float = 0.25) -> dict:
    """Where training crops (N, S, S, 3) sit relative to the detector's box: the framing for ``box_square``.

    Medians over the chips of the crop centre's offset from the detected box
    centre and of the crop side, in units of the detected box size.
    """
    side = chips.shape[1]
    rows = []
    for chip in chips:
        f = _detect_padded(chip, detector, pad)
        if f:
            cx, cy, s = box_centre_size(f.box)
            rows.append([(side / 2 - cx) / s, (side / 2 - cy) / s, side / s])
    if not rows:
        raise RuntimeError("no face was detected on any training crop; cannot measure the crop framing")
    med = np.median(np.asarray(rows), 0).round(4)
    return {"dx": med[0].item(), "dy": med[1].item(), "side": med[2].item(), "chips_measured": len(chips), "chips_detected": len(rows)}
