"""Predictors: image -> faces -> crops -> model -> distributions -> readouts.

``AgePredictor`` turns aligned face crops into age distributions,
``PosePredictor`` upright square crops into head-pose distributions;
``FacePipeline`` runs detection once and every face model on each face found.
``MultiLabelPredictor`` turns whole images into class distributions,
``SegPredictor`` into a class distribution per pixel (class map, uncertainty map).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .age import age_logits, age_probs, face_temperatures
from .checkpoint import WeightsError, load_checkpoint
from .crops import aligned_crop, box_square, square_crop
from .export import OnnxModel, cached_export
from .faces import Face, FaceDetector
from .images import resize_square
from .models import fold_batchnorm
from .multilabel import has_detail, image_scores, name_present, split_none
from .novelty import Novelty, backbones, captured_features, embed, novelty_path
from .paths import resolve_device, shipped_weights
from .pose import pose_probs, summarize_pose
from .readouts import summarize
from .seg import class_fractions, class_map, uncertainty
from .transforms import batches

MAX_ASPECT = 20  # segmentation: the most elongated image shape accepted
BACKENDS = ("auto", "torch", "onnx")
BACKEND_HELP = ("how the models run: auto (the default) is onnxruntime on a CPU and PyTorch on a GPU, the faster "
                "path on each (the ONNX export is made on first use, 8-15 s a model, and cached in ~/.cache/dldl/onnx); "
                "torch or onnx (CPU only) choose one")


class ShippedModel:
    """A shipped model, ready for inference (batch norm folded, channels-last), and its card.

    ``backend="onnx"`` runs the model through its ONNX export in onnxruntime instead (CPU only;
    the export is made on first use and cached): faster for every model on a CPU, with the same
    distributions within 1e-4 (docs/speed.md). ``"auto"`` (the command line's and the app's
    default) is onnxruntime on a CPU and PyTorch on a GPU; where the export or onnxruntime fails,
    it warns and stays with PyTorch.
    """

    task = ""  # the card's task this predictor reads

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "auto", backend: str = "torch"):
        """``weights`` default to the task's shipped weights."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        weights = weights or shipped_weights(self.task)
        self.device = resolve_device("cpu" if backend == "onnx" and str(device) == "auto" else device)
        fallback = backend == "auto"
        if fallback:
            backend = "onnx" if self.device.type == "cpu" else "torch"
        self.model, self.card = load_checkpoint(weights, self.device)
        if self.card.task != self.task:
            raise WeightsError(f"{weights} holds a {self.card.task!r} model, not a {self.task!r} one")
        try:
            self.read_card()
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise WeightsError(f"the model card of {weights} is incomplete or malformed ({type(exc).__name__}: {exc})") from exc
        if backend == "onnx":
            if self.device.type != "cpu":
                raise ValueError("the onnx backend runs on the CPU; use the torch backend on a GPU")
            try:
                self.model = OnnxModel(cached_export(weights))  # the export folds batch norm itself
            except Exception as exc:
                if not fallback:
                    raise
                warnings.warn(f"the {self.task} model runs in PyTorch: its ONNX export failed ({type(exc).__name__}: {exc})", stacklevel=2)
                backend = "torch"
        if backend == "torch":
            self.model = fold_batchnorm(self.model).to(memory_format=torch.channels_last)
        self.backend = backend

    def read_card(self) -> None:
        """What the predictor needs from the card (a missing or malformed field raises here, at load time)."""
        if self.card.input is None:
            raise ValueError("the card has no input section")
        self.input = self.card.input
        self.mean, self.std = tuple(float(v) for v in self.input.mean), tuple(float(v) for v in self.input.std)
        self.readout = self.card.readout

    def _check_head(self, name: str, size: object, what: str) -> None:
        head = self.card.head(name)
        if head != size and not (isinstance(head, dict) and size in (head.get("shape"), head.get("classes"))):
            raise ValueError(f"the card gives {size} {what} but the model's {name!r} head is {head}")


class CropModel(ShippedModel):
    """A model fed square crops: crops -> normalised batches at the card's input size."""

    def read_card(self) -> None:
        super().read_card()
        self.size = int(self.input.size)
        self.tta_flip = self.readout.tta_flip

    def batches(self, crops: list[Image.Image], batch_size: int) -> Iterator[torch.Tensor]:
        """Normalised channels-last batches of crops of any size (resized to the input size)."""
        for i in range(0, len(crops), batch_size):
            arr = np.stack([np.asarray(resize_square(c, self.size)) for c in crops[i : i + batch_size]])
            yield from batches(arr, self.device, batch_size, self.mean, self.std)


class AgePredictor(CropModel):
    """Age distributions from face crops framed like the training chips."""

    task = "age"

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "auto", backend: str = "torch"):
        """Also loads the model's novelty bank where one sits beside the weights (``novelty_path``):
        every readout then says how unlike the training faces its face is, and where the card says
        so (``readout.widening``) its interval widens with that (``temperatures``)."""
        super().__init__(weights, device, backend)
        path = novelty_path(weights or shipped_weights(self.task))
        self.novelty = Novelty.load(path).to(self.device) if path.is_file() and backbones(self.model) else None
        if self.widening and self.novelty is None:
            warnings.warn(f"{path.name} is missing: every age interval is read at the temperature of a typical face, "
                          "none widened for an unusual one", stacklevel=2)
            self.widening = 0.0

    def read_card(self) -> None:
        super().read_card()
        self.bins = self.card.bins["age"].grid()
        crop = self.input.crop
        if crop is None or crop.template is None:
            raise ValueError("the card's input section has no crop template")
        self.template = crop.template
        # Crops are cut at the training chips' own size, then resized like the chips were.
        self.crop_size = int(crop.size or self.size)
        self.temperature = self.readout.temperature
        self.widening = self.readout.widening
        self.level = self.readout.level
        self._check_head("age", len(self.bins), "age bins")

    def crop(self, image: Image.Image, face: Face) -> Image.Image:
        """The aligned crop of ``face``, framed and sized like a training chip."""
        return aligned_crop(image, face.landmarks, self.template, self.crop_size)

    @torch.inference_mode()
    def logits(self, crops: list[Image.Image], batch_size: int = 64, features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, bins) untempered age logits (the test-time views averaged) and, with ``features``,
        each face's (N, D) backbone features (``novelty.embed``; taken from the same forward pass)."""
        out, feats = [], []
        for x in self.batches(crops, batch_size):
            with captured_features(self.model) if features else nullcontext() as seen:
                out.append(age_logits(self.model, x, self.tta_flip, self.readout.tta_gray, self.mean, self.std, self.readout.blur).cpu())
            if features:
                passes = [torch.cat(f) for f in seen]  # the views age_logits read, stacked view after view
                feats.append(embed(passes, len(passes[0]) // len(x)))
        logits = torch.cat(out) if out else torch.zeros(0, len(self.bins))
        return logits, torch.cat(feats) if feats else None

    def temperatures(self, features: torch.Tensor | None) -> float | torch.Tensor:
        """The temperature of each face whose features are ``features``: the card's, widened by the
        face's novelty where the card says so and the bank is here (``age.face_temperatures``)."""
        if not self.widening or features is None:
            return self.temperature
        return face_temperatures(self.temperature, self.widening, self.novelty(features)).cpu()

    def read(self, crops: list[Image.Image], batch_size: int = 64, features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, bins) age distributions and, with ``features`` or a novelty bank, each face's (N, D)
        backbone features (``novelty.embed``; taken from the same forward pass)."""
        logits, feats = self.logits(crops, batch_size, features or self.novelty is not None)
        return age_probs(logits, self.temperatures(feats)), feats

    def probs(self, crops: list[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """(N, bins) age distributions."""
        return self.read(crops, batch_size)[0]

    def predict_crops(self, crops: list[Image.Image]) -> list[dict[str, Any]]:
        """Readouts (mean, mode, std, interval, probs) for each crop; with a novelty bank also
        ``novelty`` (0 = val's median face, 1 = its 90th percentile) and ``unusual`` (beyond val's
        99th percentile: such faces err two to three times as much as the rest)."""
        if not crops:
            return []
        return self.readouts(*self.read(crops))

    def readouts(self, probs: torch.Tensor, feats: torch.Tensor | None) -> list[dict[str, Any]]:
        """``predict_crops``' readouts from what ``read`` returned, for a caller that also wants the features."""
        rows = summarize(probs, self.bins, self.level)
        if self.novelty is not None:
            for row, extra in zip(rows, self.novelty.readouts(feats)):
                row.update(extra)
        return rows


class PosePredictor(CropModel):
    """Head-pose distributions (joint yaw x pitch, and roll) from upright square face crops."""

    task = "pose"

    def read_card(self) -> None:
        super().read_card()
        self.step = float(self.card.bins["yaw"].step)
        self.bins = self.card.bins["yaw"].grid()
        crop = self.input.crop
        if crop is None or crop.from_detector is None or crop.from_box is None:
            raise ValueError("the card's input section has no square framing (from_detector, from_box)")
        self.framing = crop
        self._check_head("yaw_pitch", [len(self.bins)] * 2, "yaw x pitch bins")
        self._check_head("roll", len(self.bins), "roll bins")

    def crop(self, image: Image.Image, face: Face) -> Image.Image:
        """The square around a detected face, placed as the training crops sat around the detector's box."""
        centre, side = box_square(face.box, self.framing.from_detector)
        return square_crop(image, centre, side, self.size)

    def crop_from_box(self, image: Image.Image, box: list[float]) -> Image.Image:
        """The square around an annotated face box (the AFLW2000 protocol), framed like the training crops."""
        centre, side = box_square(box, self.framing.from_box)
        return square_crop(image, centre, side, self.size)

    @torch.inference_mode()
    def probs(self, crops: list[Image.Image], batch_size: int = 64) -> dict[str, torch.Tensor]:
        """``yaw_pitch`` (N, Y, P) and ``roll`` (N, R) distributions."""
        parts = [pose_probs(self.model, x, self.tta_flip) for x in self.batches(crops, batch_size)]
        n = len(self.bins)
        if not parts:
            return {"yaw_pitch": torch.zeros(0, n, n), "roll": torch.zeros(0, n)}
        return {k: torch.cat([p[k] for p in parts]).cpu() for k in ("yaw_pitch", "roll")}

    def predict_crops(self, crops: list[Image.Image]) -> list[dict[str, Any]]:
        """Readouts (yaw, pitch, roll, cov, roll_std, grid, probs) for each crop."""
        return summarize_pose(self.probs(crops), self.bins, self.step) if crops else []


class MultiLabelPredictor(CropModel):
    """Per-class scores (the predicted distribution over the classes) for whole images."""

    task = "multilabel"

    def read_card(self) -> None:
        super().read_card()
        self.classes = list(self.card.classes)
        self.activation = self.readout.activation or "softmax"
        self.threshold = self.readout.threshold if self.readout.threshold is not None else 0.5
        self.none_class = bool(self.readout.none_class)
        self._check_head("classes", len(self.classes) + self.none_class, "classes" + (" and 'none of these'" if self.none_class else ""))

    def scores(self, images: list[Image.Image], batch_size: int = 32) -> torch.Tensor:
        """(N, C) scores, C counting "none of these" last where the model has it; images of any size
        are resized to the input square, as in training."""
        if not images:
            return torch.zeros(0, len(self.classes) + self.none_class)
        return image_scores(self.model, self.batches(images, batch_size), self.activation)

    def predict_images(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        """``{"scores": {class: score, ...}, "labels": [classes named present, best first]}`` per image,
        and ``"none"``, the score of "none of these", where the model has that output."""
        s, none = split_none(self.scores(images), len(self.classes))
        named = name_present(s, self.threshold)
        out = []
        for k, (image, row, keep) in enumerate(zip(images, s, named)):
            order = torch.argsort(row, descending=True).tolist()
            result = {
                "scores": {c: round(float(v), 4) for c, v in zip(self.classes, row)},
                "labels": [self.classes[i] for i in order if keep[i]],
            }
            if none is not None:
                result["none"] = round(float(none[k]), 4)
            if not has_detail(image):
                result["labels"] = []
                result["note"] = "the image has no detail (one colour, or under 8 pixels a side): no class is named"
            out.append(result)
        return out


class SegPredictor(ShippedModel):
    """A class distribution for every pixel of a whole image: the class map, an uncertainty map
    (normalised entropy) and the share of the image each class covers.

    An image of any size and shape is resized, keeping its aspect ratio, to about as many pixels
    as the training frames (480 x 360); the maps are brought back to the image's own size.
    """

    task = "seg"

    def read_card(self) -> None:
        super().read_card()
        self.classes = list(self.card.classes)
        self.colours = [tuple(c) for c in self.card.colours]
        self.frame = tuple(int(v) for v in self.input.size)  # width, height
        self._check_head("classes", len(self.classes), "classes")

    def network_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the network sees for an image of ``size``: the frame's pixel count, same aspect.

        Images more than ``MAX_ASPECT`` times wider than tall (or taller than wide) are refused: the
        network's side of at least 32 px would make the other side, and the memory, unbounded."""
        if max(size) > MAX_ASPECT * min(size):
            raise ValueError(f"the image is {size[0]}x{size[1]} px: an aspect ratio beyond {MAX_ASPECT}:1 is not supported")
        scale = (self.frame[0] * self.frame[1] / (size[0] * size[1])) ** 0.5
        return max(32, round(size[0] * scale)), max(32, round(size[1] * scale))

    @torch.inference_mode()
    def probs(self, image: Image.Image) -> torch.Tensor:
        """(C, h, w) per-pixel distributions at the network's resolution (``network_size``)."""
        arr = np.asarray(image.convert("RGB").resize(self.network_size(image.size), Image.BILINEAR))[None]
        x = next(batches(arr, self.device, 1, self.mean, self.std))
        return torch.softmax(self.model(x)["classes"].float(), dim=1)[0].cpu()

    def predict(self, image: Image.Image) -> dict[str, Any]:
        """``classes`` (H, W) uint8 class indices and ``uncertainty`` (H, W) float32 in [0, 1], both at
        the image's size, plus ``fractions`` (class -> share of the pixels) and ``mean_uncertainty``."""
        p = self.probs(image)
        small = class_map(p[None])[0]
        u = uncertainty(p[None])[0]
        classes = np.asarray(Image.fromarray(small.numpy().astype(np.uint8)).resize(image.size, Image.NEAREST))
        unc = np.asarray(Image.fromarray(u.numpy().astype(np.float32), mode="F").resize(image.size, Image.BILINEAR)).clip(0, 1)
        return {
            "classes": classes,
            "uncertainty": unc,
            "fractions": class_fractions(classes, self.classes),
            "mean_uncertainty": round(float(unc.mean()), 4),
        }


class FacePipeline:
    """Detect every face once, then run each face model on all of them as one batch."""

    def __init__(self, age: AgePredictor | None = None, pose: PosePredictor | None = None, detector: FaceDetector | None = None):
        if age is None and pose is None:
            raise ValueError("FacePipeline needs at least one face model")
        self.models = {k: m for k, m in (("age", age), ("pose", pose)) if m is not None}
        self.detector = detector or FaceDetector(device=next(iter(self.models.values())).device)

    def analyze(self, image: Image.Image) -> list[dict[str, Any]]:
        """One dict per face: box, score, landmarks and each model's readouts."""
        return self.describe(image, self.detector.detect(image))

    def describe(self, image: Image.Image, faces: list[Face]) -> list[dict[str, Any]]:
        """The readouts of every face model for faces already detected in ``image``."""
        rows = [f.to_json() for f in faces]
        for name, model in self.models.items():
            for row, result in zip(rows, model.predict_crops([model.crop(image, f) for f in faces])):
                row[name] = result
        return rows
