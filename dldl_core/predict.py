"""Predictors: image -> faces -> crops -> model -> distributions -> readouts.

``AgePredictor`` turns face crops into age distributions; ``FacePipeline``
runs detection once and every face model on each face found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .checkpoint import load_checkpoint
from .data import PROJECT_ROOT, resize_square
from .distributions import bin_grid
from .faces import Face, FaceDetector, aligned_crop
from .readouts import summarize
from .transforms import normalize

WEIGHTS_DIR = PROJECT_ROOT / "weights"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means CUDA when a GPU is present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class AgePredictor:
    """Age distributions from face crops framed like the training chips."""

    def __init__(self, weights: str | Path = WEIGHTS_DIR / "age.safetensors", device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.model, self.card = load_checkpoint(weights, self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        b = self.card["bins"]["age"]
        self.bins = bin_grid(b["start"], b["stop"], b["step"])
        inp = self.card["input"]
        self.size = int(inp["size"])
        self.mean, self.std = tuple(inp["mean"]), tuple(inp["std"])
        self.template = inp["crop"]["template"]
        # Crops are cut at the training chips' own size, then resized like the chips were.
        self.crop_size = int(inp["crop"].get("size", self.size))
        readout = self.card.get("readout", {})
        self.temperature = float(readout.get("temperature", 1.0))
        self.tta_flip = bool(readout.get("tta_flip", False))
        self.level = float(readout.get("level", 0.8))

    def crop(self, image: Image.Image, face: Face) -> Image.Image:
        """The aligned crop of ``face``, framed and sized like a training chip."""
        return aligned_crop(image, face.landmarks, self.template, self.crop_size)

    @torch.inference_mode()
    def probs(self, crops: list[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """(N, bins) age distributions for crops of any size (resized to the input size)."""
        out = []
        for i in range(0, len(crops), batch_size):
            arr = np.stack([np.asarray(resize_square(c, self.size)) for c in crops[i : i + batch_size]])
            x = normalize(torch.from_numpy(arr).to(self.device), self.mean, self.std).contiguous(memory_format=torch.channels_last)
            z = self.model(x)["age"].float()
            if self.tta_flip:
                z = 0.5 * (z + self.model(x.flip(3))["age"].float())
            out.append(torch.softmax(z / self.temperature, dim=1).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.bins))

    def predict_crops(self, crops: list[Image.Image]) -> list[dict[str, Any]]:
        """Readouts (mean, mode, std, interval, probs) for each crop."""
        return summarize(self.probs(crops), self.bins, self.level) if crops else []


class FacePipeline:
    """Detect every face once, then run each face model on all of them as one batch."""

    def __init__(self, age: AgePredictor, detector: FaceDetector | None = None):
        self.age = age
        self.detector = detector or FaceDetector(device=age.device)

    def analyze(self, image: Image.Image) -> list[dict[str, Any]]:
        """One dict per face: box, score, landmarks and the age readouts."""
        faces = self.detector.detect(image)
        ages = self.age.predict_crops([self.age.crop(image, f) for f in faces])
        return [{**f.to_json(), "age": a} for f, a in zip(faces, ages)]
