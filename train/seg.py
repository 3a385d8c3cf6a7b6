"""Train the segmentation model on CamVid (11 classes): ``python -m train.seg``.

Each pixel's one-hot label becomes a distribution that mixes the classes of
its neighbourhood (``dldl_core.distributions.boundary_distribution``), learned
with a per-pixel KL loss; void pixels take no part. ``--loss ce`` trains the
usual one-hot cross-entropy baseline instead, on the same model and budget.
Trains on ``train`` (367 images), keeps the epoch with the best validation
mean IoU and reports the test split (233 images) once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dldl_core.data import data_root, image_cache, read_camvid
from dldl_core.distributions import boundary_distribution
from dldl_core.losses import pixel_kl_from_logits
from dldl_core.metrics import confusion_matrix, iou_summary
from dldl_core.seg import CAMVID_CLASSES, CAMVID_COLOURS, CAMVID_VOID
from dldl_core.transforms import batches, color_jitter, normalize, random_scale_crop
from train.engine import Task, TrainConfig, fit, input_card, opt, parse_config

FRAME = (480, 360)  # CamVid frames, width x height


@dataclass
class SegConfig(TrainConfig):
    """Train the DLDL segmentation model (boundary-ambiguity labels) on CamVid."""

    out: str = opt("runs/seg", "run folder: last.pt, the best weights and their card")
    epochs: int = opt(50, "training epochs")
    batch_size: int = opt(8, "per process")
    lr: float = opt(2e-3, "peak learning rate (AdamW, linear warm-up then cosine decay)")
    warmup_epochs: float = opt(1.0, "epochs of linear learning-rate warm-up")
    dropout: float = opt(0.1, "dropout before the per-pixel classifier")
    backbone_lr_scale: float = opt(0.5, "the backbone's learning rate as a fraction of lr (the decoder starts from scratch)")
    loss: str = opt("kl", "kl (boundary label distribution) or ce (one-hot cross-entropy baseline)", ("kl", "ce"))
    window: int = opt(5, "side (pixels) of the Gaussian window that blurs the one-hot class maps")
    sigma: float = opt(1.0, "spread (pixels) of that window")
    width: int = opt(96, "channels of the decoder")
    crop_height: int = opt(240, "training crop height (pixels of the rescaled frame)")
    crop_width: int = opt(320, "training crop width")
    scale_min: float = opt(0.75, "smallest random rescale of a training frame")
    scale_max: float = opt(1.5, "largest random rescale")
    class_weight: float = opt(1.1, "pixel weight of class k is 1 / ln(c + frequency_k) (ENet's rule) with this c; 0 = unweighted")
    augment: bool = opt(True, "random rescale, crop, flip, brightness and contrast")


class SegTask(Task):
    name = "seg"
    higher_is_better = True

    def __init__(self, config: SegConfig):
        self.config = config
        self.classes = len(CAMVID_CLASSES)
        self.weights = torch.ones(self.classes)

    def heads(self) -> dict[str, Any]:
        return {"classes": {"classes": self.classes, "width": self.config.width}}

    def model_spec(self) -> dict[str, Any]:
        return {"architecture": "segmentation", **super().model_spec()}

    def load_split(self, split: str, limit: int = 0) -> tuple[np.ndarray, torch.Tensor]:
        rows = read_camvid(self.config.data, split)
        rows = rows[:limit] if limit else rows
        c = self.config
        images = image_cache([r.image for r in rows], FRAME, c.cache_dir)
        labels = torch.from_numpy(np.array(image_cache([r.mask for r in rows], FRAME, c.cache_dir, label_map=True)))
        return images, labels

    def statistics(self, images: np.ndarray, labels: torch.Tensor) -> None:
        self.weights = class_weights(labels, self.classes, self.config.class_weight)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        x, y = normalize(images), labels.long()
        if not c.augment:
            return x, y
        x, y = random_scale_crop(x, y, (c.crop_height, c.crop_width), (c.scale_min, c.scale_max), fill=CAMVID_VOID)
        return color_jitter(x), y

    def loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        logits = outputs["classes"].float()
        w = self.weights.to(logits.device)
        if self.config.loss == "ce":
            return F.cross_entropy(logits, labels, weight=w, ignore_index=CAMVID_VOID)
        pixel_weight = torch.cat([w, w.new_zeros(1)])[labels.clamp(0, self.classes)]  # void weighs 0
        return pixel_kl_from_logits(logits, boundary_distribution(labels, self.classes, self.config.window, self.config.sigma), pixel_weight)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> dict[str, float]:
        model.eval()
        conf = torch.zeros(self.classes, self.classes, dtype=torch.long)
        for i, x in zip(range(0, len(images), 8), batches(images, device, 8)):
            pred = model(x)["classes"].argmax(1).cpu()
            conf += confusion_matrix(pred, labels[i : i + 8], self.classes)
        summary = iou_summary(conf, CAMVID_CLASSES)
        return {"score": summary["miou"], **summary}

    def card(self) -> dict[str, Any]:
        c = self.config
        labels = (
            f"KL to per-pixel boundary distributions: one-hot maps blurred by a {c.window}x{c.window} Gaussian, sigma {c.sigma} px, renormalised"
            if c.loss == "kl"
            else "one-hot cross-entropy (baseline)"
        )
        return {
            "input": input_card(list(FRAME), {"kind": "whole image resized to this width x height (CamVid frames are 480 x 360)"}),
            "classes": list(CAMVID_CLASSES),
            "colours": [list(v) for v in CAMVID_COLOURS],
            "readout": {"class": "argmax per pixel", "uncertainty": "entropy of each pixel's distribution / ln(classes)"},
            "data": {
                "dataset": "CamVid (11-class SegNet version), ../shared/data/seg/camvid",
                "root": str(data_root(c.data)),
                "labels": labels,
                "class_weights": [round(float(v), 4) for v in self.weights],
                "void": "index 11, ignored in the loss and in mean IoU",
                "train": "split == train",
                "select": "split == val (best epoch by mean IoU)",
                "test": "split == test, evaluated once at the end",
            },
        }


def class_weights(labels: torch.Tensor, classes: int, c: float) -> torch.Tensor:
    """1 / ln(c + p_k) for each class's pixel frequency p_k (void left out), scaled so that the
    average labelled pixel weighs 1; all ones when ``c`` is 0."""
    if c <= 0:
        return torch.ones(classes)
    counts = torch.bincount(labels.flatten().long(), minlength=classes + 1)[:classes].double()
    p = counts / counts.sum()
    w = 1 / torch.log(c + p)
    return (w / (w * p).sum()).float()


def main(argv: list[str] | None = None) -> None:
    fit(SegTask(parse_config(SegConfig, argv, prog="python -m train.seg")))


if __name__ == "__main__":
    main()
