"""Face detection (facenet-pytorch MTCNN), and the measurements on training chips that tell how a
detected face must be cropped to be framed like them (``dldl_core.crops`` cuts the crops)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from .crops import box_centre_size, box_iou, box_square
from .images import fit_within

DETECT_MAX_SIDE = 1600  # larger images are downscaled for detection only
CHIP_SIZE = 200  # UTKFace's aligned chips are 200 x 200
# Where a UTKFace chip lies around the MTCNN box found on it, in box sides (measure_box_framing on
# every 80th train chip, padded as below).
CHIP_FRAMING = {"dx": 0.02, "dy": 0.07, "side": 1.04}
CHIP_PAD = 0.25  # grey around a chip when its landmarks are measured (a fraction of its side)
LANDMARK_CONTEXT = 1.5  # box sides of photo around a face that its landmarks need (else measured on a chip)


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
    """MTCNN with its weights from the facenet-pytorch wheel; finds every face and its landmarks.

    A face is kept when its final score reaches ``threshold``, or ``large_threshold`` when its box
    is at least ``large_side`` pixels (mean of width and height, at detection scale): MTCNN scores
    turned heads lower than frontal ones, while its false detections on face-free photos are
    nearly all small, so large faces can be trusted at a lower score. A close-up, a box at least
    ``closeup_side`` of the photo's shorter side and lying whole in it (90% of its area), is kept
    from ``closeup_threshold``: a portrait's face is the photo's subject, and the close-up false
    faces met on face-free photos were patterns cut by the border. ``pad`` (a fraction of the
    longer side) surrounds the image with grey first, so a face at the border is seen whole.

    The defaults were chosen on data outside every test split (``benchmarks/pose.py`` reports
    the test figures; ``python -m benchmarks.pose --validation`` prints the validation ones): on
    AFLW's validation faces they find more than stock MTCNN (score 0.9) with no more false faces
    on the face-free photos (``stock`` builds stock MTCNN).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        min_face_size: int = 20,
        threshold: float = 0.95,
        large_threshold: float | None = 0.8,
        large_side: float = 60.0,
        closeup_threshold: float | None = 0.6,
        closeup_side: float = 0.3,
        stage_thresholds: tuple[float, float, float] = (0.5, 0.6, 0.6),
        factor: float = 0.709,
        pad: float = 0.08,
    ):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size, post_process=False,
                           thresholds=list(stage_thresholds), factor=factor)
        self.threshold = threshold
        self.large_threshold = threshold if large_threshold is None else large_threshold
        self.large_side = large_side
        self.closeup_threshold = closeup_threshold
        self.closeup_side = closeup_side
        self.pad = pad

    @classmethod
    def stock(cls, device: str | torch.device = "cpu") -> FaceDetector:
        """MTCNN as facenet-pytorch ships it (score 0.9 for every face, no padding): the baseline."""
        return cls(device, threshold=0.9, large_threshold=None, closeup_threshold=None, stage_thresholds=(0.6, 0.7, 0.7), pad=0.0)

    def detect(self, image: Image.Image, refine: bool = True) -> list[Face]:
        """Faces sorted left to right; boxes and landmarks in ``image``'s own pixels. With ``refine``
        a face with too little of the photo around it (``lacks_context``) gets its landmarks measured
        again as the age template's were (``_chip_landmarks``)."""
        small = fit_within(image, DETECT_MAX_SIDE)
        scale = small.width / image.width
        faces = self._detect(small)
        for f in faces:
            if refine and lacks_context(f.box, small.size, self.margin(small.size)):
                f.landmarks = self._chip_landmarks(small, f)
        return sorted([Face((np.asarray(f.box) / scale).tolist(), f.score, (np.asarray(f.landmarks) / scale).tolist()) for f in faces],
                      key=lambda f: f.box[0])

    def margin(self, size: tuple[int, int]) -> int:
        """The grey border (pixels) a pass adds around a photo of ``size``: ``pad`` of its longer side."""
        return round(self.pad * max(size))

    def _detect(self, image: Image.Image) -> list[Face]:
        """One MTCNN pass over ``image`` padded with grey (``pad``), the score filter applied; in its pixels."""
        if min(image.size) < 12:
            return []
        p = self.margin(image.size)
        canvas = ImageOps.expand(image, p, fill=(128, 128, 128)) if p else image
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(canvas, landmarks=True)
        if boxes is None:
            return []
        return [Face((b - p).tolist(), float(prob), (pt - p).tolist())
                for b, prob, pt in zip(boxes, probs, points) if prob >= self._needed_score(b - p, image.size)]

    def _chip_landmarks(self, image: Image.Image, face: Face) -> list[list[float]]:
        """``face``'s landmarks measured on a chip cut around its box as UTKFace's chips frame a face
        (``CHIP_FRAMING``, at ``CHIP_SIZE`` pixels, grey beyond the photo) and
        padded with grey like the chips the age template was measured on. MTCNN places the
        landmarks of a face that fills its photo differently than with the template's context around
        it, and a tight portrait then read 0.1 years worse on val than its chip. The face's own
        landmarks are kept when the chip shows no face where it was found."""
        (cx, cy), side = box_square(face.box, CHIP_FRAMING)
        side = max(1, round(side))
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        chip = Image.new("RGB", (side, side), (128, 128, 128))
        chip.paste(image.crop((max(x0, 0), max(y0, 0), min(x0 + side, image.width), min(y0 + side, image.height))), (max(-x0, 0), max(-y0, 0)))
        chip, k = chip.resize((CHIP_SIZE, CHIP_SIZE), Image.BILINEAR), CHIP_SIZE / side
        found = detect_padded(np.asarray(chip), self, CHIP_PAD)
        if found is None or box_iou(found.box, [(v - o) * k for v, o in zip(face.box, (x0, y0, x0, y0))]) < 0.5:
            return face.landmarks
        return [[x / k + x0, y / k + y0] for x, y in found.landmarks]

    def _needed_score(self, box: np.ndarray, size: tuple[int, int]) -> float:
        """The final score a box (in the pixels of the detection-scale photo of ``size``) must reach."""
        side = ((box[2] - box[0]) + (box[3] - box[1])) / 2
        needed = self.large_threshold if side >= self.large_side else self.threshold
        if self.closeup_threshold is not None and side >= self.closeup_side * min(size):
            inside = max(0.0, min(box[2], size[0]) - max(box[0], 0)) * max(0.0, min(box[3], size[1]) - max(box[1], 0))
            if inside >= 0.9 * (box[2] - box[0]) * (box[3] - box[1]):
                needed = min(needed, self.closeup_threshold)
        return needed


def lacks_context(box: list[float], size: tuple[int, int], margin: float = 0.0) -> bool:
    """Whether the square of ``LANDMARK_CONTEXT`` box sides around a face's box leaves the photo of
    ``size`` surrounded by ``margin`` pixels (the grey the detector adds): the template's chips were
    seen with about 1.8 box sides of photo and grey."""
    cx, cy, side = box_centre_size(box)
    half = side * LANDMARK_CONTEXT / 2
    return min(cx - half, cy - half, size[0] - cx - half, size[1] - cy - half) < -margin


def detect_padded(chip: np.ndarray, detector: FaceDetector, pad: float) -> Face | None:
    """The most confident face on a tight chip padded with grey, as one detection pass finds it;
    coordinates in the chip's pixels."""
    side = chip.shape[1]
    p = round(side * pad)
    canvas = np.full((chip.shape[0] + 2 * p, side + 2 * p, 3), 128, np.uint8)
    canvas[p : p + chip.shape[0], p : p + side] = chip
    faces = detector.detect(Image.fromarray(canvas), refine=False)
    if not faces:
        return None
    best = max(faces, key=lambda f: f.score)
    return Face([v - p for v in best.box], best.score, [[x - p, y - p] for x, y in best.landmarks])


def chip_landmarks(paths: list[Path], pad: float = 0.25) -> np.ndarray:
    """The 5 landmarks of the most confident face on each tight face crop (N, 5, 2), in its
    pixels; NaN where MTCNN finds none."""
    detector = FaceDetector()
    out = np.full((len(paths), 5, 2), np.nan, np.float32)
    for i, path in enumerate(tqdm(paths, desc="landmarks", mininterval=30, file=sys.stderr, disable=len(paths) < 100)):
        with Image.open(path) as im:
            face = detect_padded(np.asarray(im.convert("RGB")), detector, pad)
        if face is not None:
            out[i] = face.landmarks
    return out


def measure_template(chips: np.ndarray, detector: FaceDetector, pad: float = 0.25) -> dict:
    """Median landmark positions (fractions of the side) over training chips (N, S, S, 3).

    Chips are tight crops, so each is padded with grey before detection to
    leave the detector some context; the most confident face of each is used.
    """
    side = chips.shape[1]
    found = [np.asarray(f.landmarks) / side for f in (detect_padded(c, detector, pad) for c in chips) if f]
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
        f = detect_padded(chip, detector, pad)
        if f:
            cx, cy, s = box_centre_size(f.box)
            rows.append([(side / 2 - cx) / s, (side / 2 - cy) / s, side / s])
    if not rows:
        raise RuntimeError("no face was detected on any training crop; cannot measure the crop framing")
    med = np.median(np.asarray(rows), 0).round(4)
    return {"dx": med[0].item(), "dy": med[1].item(), "side": med[2].item(), "chips_measured": len(chips), "chips_detected": len(rows)}
