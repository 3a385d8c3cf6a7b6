"""Crop geometry: faces cut from a photo the way the training crops were cut.

Age models see aligned crops: a similarity transform (rotation, uniform scale,
shift) maps the 5 detected landmarks onto a template measured on the training
chips, so a detected face is framed as the chips the model learned from.
Pose models see upright square crops (rotating would remove the roll they
must predict), placed relative to the detector's box as measured on theirs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


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


def warp(image: Image.Image, matrix: np.ndarray, size: int, edge: bool = False) -> Image.Image:
    """Apply the 2x3 image-to-crop ``matrix`` to get a ``size`` x ``size`` crop.

    Where the crop leaves the image it is black, or with ``edge`` the colour of the nearest border
    pixel (the age crops: black there reads faces younger). When the face is much larger than the
    crop, the image is first shrunk with an antialiasing filter so the crop is not aliased.
    """
    m = np.vstack([matrix, [0, 0, 1]])
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if scale < 0.5 or edge:
        # Only the region the crop needs, shrunk by a whole factor, then warped.
        inv = np.linalg.inv(m)
        corners = inv @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]], float)
        x0, y0 = np.floor(corners[:2].min(1)).astype(int) - 2
        x1, y1 = np.ceil(corners[:2].max(1)).astype(int) + 2
        # the part inside the image, at least one pixel (its colour fills an edge crop)
        cx0, cy0 = min(max(x0, 0), image.width - 1), min(max(y0, 0), image.height - 1)
        cx1, cy1 = max(min(x1, image.width), cx0 + 1), max(min(y1, image.height), cy0 + 1)
        factor = max(1, int(1 / scale))
        region = image.crop((cx0, cy0, cx1, cy1))
        region = region.reduce(factor) if factor > 1 else region
        # with edge, extend by whole shrunk pixels (rounded up) on each side the crop leaves the image
        left, top, right, bottom = (-(-max(n, 0) // factor) for n in (cx0 - x0, cy0 - y0, x1 - cx1, y1 - cy1))
        if edge and (left or top or right or bottom):
            a = np.asarray(region)
            region = Image.fromarray(np.pad(a, ((top, bottom), (left, right)) + ((0, 0),) * (a.ndim - 2), mode="edge"))
            cx0, cy0 = cx0 - left * factor, cy0 - top * factor
        m = m @ np.array([[1, 0, cx0], [0, 1, cy0], [0, 0, 1]], float) @ np.diag([factor, factor, 1.0])
        image = region
    inv = np.linalg.inv(m)
    return image.transform((size, size), Image.AFFINE, data=tuple(inv[:2].ravel()), resample=Image.BILINEAR)


def aligned_crop(image: Image.Image, landmarks: list[list[float]], template: list[list[float]], size: int) -> Image.Image:
    """Crop a face so its 5 landmarks land on ``template`` (fractions of the crop side); where the
    crop leaves the photo (a face at its border, a tight portrait) the border's colours are extended:
    black there reads faces younger."""
    dst = np.asarray(template, np.float64) * size
    return warp(image, similarity_transform(np.asarray(landmarks), dst), size, edge=True)


def square_crop(image: Image.Image, center: tuple[float, float], side: float, size: int) -> Image.Image:
    """The upright square of ``side`` pixels around ``center``, resampled to ``size``; outside is black."""
    k = size / side
    cx, cy = center
    return warp(image, np.array([[k, 0.0, -k * (cx - side / 2)], [0.0, k, -k * (cy - side / 2)]]), size)


def box_centre_size(box: list[float]) -> tuple[float, float, float]:
    """Centre x, centre y and size (mean of width and height) of a box x0, y0, x1, y1."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, ((x1 - x0) + (y1 - y0)) / 2


def box_iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_square(box: list[float], framing: dict) -> tuple[tuple[float, float], float]:
    """Centre and side of the crop square for a face ``box``, placed as ``framing`` says.

    ``framing`` holds ``dx``, ``dy`` (offset of the crop centre from the box
    centre) and ``side``, all in units of the box size (mean of its width and
    height), as measured by ``measure_box_framing``.
    """
    cx, cy, s = box_centre_size(box)
    return (cx + framing["dx"] * s, cy + framing["dy"] * s), framing["side"] * s
