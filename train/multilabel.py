"""Train the multi-label model on COCO tiny (VOC classes): ``python -m train.multilabel``.

An image's labels become a distribution over the 20 VOC classes: each class
present gets mass 1, a class seen only through ambiguous objects (crowd
regions, tiny objects; VOC's "difficult" with ``--voc``) gets
``ambiguous_weight``, and the row is normalised. The network learns it with
KL. ``--loss bce`` trains the usual per-class binary cross-entropy baseline
instead (ambiguous classes count as present), on the same backbone and budget.
Trains on ``train`` and reports on ``val`` (the set has no test split), keeping the
last epoch; ``--folds K --fold k`` trains on part of ``train`` and validates on its
k-th fold instead, which is how ``benchmarks.multilabel`` chooses the learning rate
without looking at ``val``.

With 189 training images, fine-tuning the whole network loses more than it
gains (validation mAP fell from 0.52 after one epoch to about 0.45), so by
default the backbone stays frozen at its ImageNet weights and only the class
head learns, starting from the ImageNet classifier's matching classes. The
defaults (EfficientNet-Lite0 at 320 px, the learning rate) are what
``benchmarks.multilabel`` chose by cross-validation on train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dldl_core.backbones import imagenet_classifier
from dldl_core.data import VOC_CLASSES, MultiLabelRecord, data_root, image_cache, read_coco_multilabel, read_voc
from dldl_core.distributions import multilabel_distribution
from dldl_core.losses import kl_from_logits
from dldl_core.metrics import mean_average_precision
from dldl_core.multilabel import image_scores, name_present, split_none
from dldl_core.transforms import batches, color_jitter, normalize, random_affine
from train.engine import Task, TrainConfig, fit, input_card, opt, parse_config


@dataclass
class MultiLabelConfig(TrainConfig):
    """Train the DLDL multi-label classifier (20 VOC classes) on COCO tiny or a VOC folder."""

    out: str = opt("runs/multilabel", "run folder: last.pt, the best weights and their card")
    backbone: str = opt("efficientnet_lite0", "backbone name (dldl_core.backbones.BACKBONES)")
    epochs: int = opt(15, "training epochs")
    batch_size: int = opt(32, "per process")
    lr: float = opt(1e-3, "peak learning rate (AdamW, linear warm-up then cosine decay)")
    warmup_epochs: float = opt(2.0, "epochs of linear learning-rate warm-up")
    backbone_lr_scale: float = opt(0.0, "the backbone's lr as a fraction of lr; 0 (default) trains the head only on frozen ImageNet features")
    freeze_bn: bool = opt(True, "keep batch-norm statistics fixed (ImageNet's) while training")
    skip_test: bool = opt(True, "COCO tiny has no test split: val is where the model is reported")
    keep: str = opt("last", "the weights kept: the last epoch (default: val, the only held-out split, then only reports) or the best on val", ("best", "last"))
    voc: str | None = opt(None, "train on a PASCAL VOC folder (Annotations, ImageSets/Main, JPEGImages) instead")
    image_size: int = opt(320, "network input side in pixels (images are resized to a square)")
    loss: str = opt("kl", "kl (label distribution) or bce (per-class baseline)", ("kl", "bce"))
    ambiguous_weight: float = opt(0.5, "mass of a class seen only through ambiguous objects, before normalising")
    small_area: float = opt(32 * 32, "COCO objects smaller than this (pixels of the stored image) are ambiguous")
    imagenet_head: bool = opt(True, "start the class head from the ImageNet classifier's matching classes (IMAGENET_CLASSES)")
    augment: bool = opt(True, "random flip, rotation, scale, shift, brightness and contrast")
    folds: int = opt(0, "cross-validation on train: with K > 1 folds, train on the other folds of train and validate on --fold (val is not read)")
    fold: int = opt(0, "the held-out fold of train, 0..folds-1")
    none_class: bool = opt(False, "kl: add a 21st class, \"none of these\", and train on the images without any VOC object "
                           "too (their whole mass on it), so that the distribution can say the photo holds none of the classes")


# ImageNet-1k class indices that are instances of each VOC class (person has none). With 189
# training images, rare classes (2-4 images) are learnt far better from these than from scratch.
IMAGENET_CLASSES: dict[str, list[int]] = {
    "aeroplane": [404, 895],
    "bicycle": [444, 671],
    "bird": [*range(7, 25), *range(80, 101), *range(127, 147)],
    "boat": [472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 871, 914],
    "bottle": [440, 720, 737, 898, 907],
    "bus": [654, 779, 874],
    "car": [436, 468, 511, 609, 627, 656, 661, 717, 751, 817],
    "cat": [*range(281, 286)],
    "chair": [423, 559, 765, 857],
    "cow": [345],
    "diningtable": [532],
    "dog": [*range(151, 269)],
    "horse": [339, 603],
    "motorbike": [665, 670],
    "pottedplant": [738],
    "sheep": [348],
    "sofa": [831],
    "train": [466, 547, 565, 705, 820, 829],
    "tvmonitor": [527, 664, 782, 851],
}


def init_from_imagenet(head: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Each VOC class starts as the mean of its ImageNet classes' weights, its bias raised by
    log(count) (a log-sum over them); a class without any starts at zero weight and mean bias."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(float(bias.mean()))
        for c, name in enumerate(VOC_CLASSES):
            idx = IMAGENET_CLASSES.get(name)
            if idx:
                head.weight[c] = weight[idx].mean(0)
                head.bias[c] = bias[idx].mean() + math.log(len(idx))


class MultiLabelTask(Task):
    name = "multilabel"
    higher_is_better = True

    def __init__(self, config: MultiLabelConfig):
        if config.loss not in ("kl", "bce"):
            raise ValueError(f"unknown loss {config.loss!r}; choose kl or bce")
        if config.none_class and (config.loss != "kl" or config.voc):
            raise SystemExit("--none-class needs --loss kl and COCO tiny (its images without VOC objects are the none class)")
        self.config = config
        self.threshold = 0.5

    def heads(self) -> dict[str, Any]:
        return {"classes": len(VOC_CLASSES) + self.config.none_class}

    def build_model(self, pretrained: bool) -> nn.Module:
        model = super().build_model(pretrained)
        if pretrained and self.config.imagenet_head:
            init_from_imagenet(model.heads["classes"], *imagenet_classifier(self.config.backbone))
        return model

    def records(self, split: str) -> list[MultiLabelRecord]:
        c = self.config
        if c.folds > 1 and split in ("train", "val"):  # cross-validation: both come from train
            rows = read_voc(c.voc, "train") if c.voc else read_coco_multilabel(c.data, "train", c.small_area, c.none_class)
            return [r for i, r in enumerate(rows) if (i % c.folds == c.fold) == (split == "val")]
        return read_voc(c.voc, split) if c.voc else read_coco_multilabel(c.data, split, c.small_area, c.none_class)

    def load_split(self, split: str, limit: int = 0) -> tuple[np.ndarray, torch.Tensor]:
        rows = self.records(split)
        rows = rows[:limit] if limit else rows
        images = image_cache([r.path for r in rows], self.config.image_size, self.config.cache_dir)
        return images, label_masks(rows)

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalize(images)
        return (color_jitter(random_affine(x, scale=(0.8, 1.2), max_shift=0.1)) if self.config.augment else x), labels

    def loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        z = outputs["classes"]
        present, ambiguous = labels[:, 0] > 0, labels[:, 1] > 0
        if self.config.loss == "bce":
            return F.binary_cross_entropy_with_logits(z.float(), (present | ambiguous).float())
        return kl_from_logits(z, multilabel_distribution(present, ambiguous, self.config.ambiguous_weight, self.config.none_class))

    def scores(self, model: nn.Module, images: np.ndarray, device: torch.device) -> torch.Tensor:
        return image_scores(model.eval(), batches(images, device, 64), self.activation)

    @property
    def activation(self) -> str:
        return "sigmoid" if self.config.loss == "bce" else "softmax"

    def _metrics(self, scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict[str, float]:
        """mAP and F1 over the VOC classes (with ``none_class`` over every image, those without
        any VOC object included: negatives for every class)."""
        scores, _ = split_none(scores, len(VOC_CLASSES))
        truth = positives(labels)
        m, per = mean_average_precision(scores, truth)
        named = name_present(scores, threshold)
        tp = (named & truth).sum().item()
        f1 = 2 * tp / max(1, named.sum().item() + truth.sum().item())
        metrics = {"score": m, "map": m, "f1": f1, "classes_evaluated": float(sum(a is not None for a in per))}
        metrics.update({f"ap_{n}": a for n, a in zip(VOC_CLASSES, per) if a is not None})
        return metrics

    def evaluate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> dict[str, float]:
        return self._metrics(self.scores(model, images, device), labels, self.threshold)

    def calibrate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> None:
        """The naming threshold with the best F1 on val (mAP, the reported figure, does not depend on it)."""
        s = self.scores(model, images, device)
        grid = [round(t, 2) for t in np.arange(0.05, 0.96, 0.05)]
        self.threshold = max(grid, key=lambda t: self._metrics(s, labels, t)["f1"])

    def card(self) -> dict[str, Any]:
        c = self.config
        return {
            "input": input_card(c.image_size, {"kind": "whole image resized to a square"}),
            "classes": list(VOC_CLASSES),
            "readout": {"activation": self.activation, "threshold": self.threshold,
                        "none_class": c.none_class,
                        "rule": "a class is named present when its score reaches the threshold (best F1 on val)"},
            "data": {
                "dataset": f"PASCAL VOC folder {c.voc}" if c.voc else "COCO tiny, ../shared/data/multilabel/coco_tiny, COCO names mapped to the 20 VOC classes",
                "root": str(c.voc or data_root(c.data)),
                "labels": "KL to the label distribution: present classes 1, classes seen only through ambiguous objects "
                f"{c.ambiguous_weight}, normalised" + ("; images without any VOC object: all mass on 'none of these'" if c.none_class else "")
                if c.loss == "kl" else "per-class binary cross-entropy (baseline)",
                "ambiguous": "VOC difficult flags" if c.voc else f"iscrowd or area < {c.small_area:g} px",
                "train": "split == train" + (", the images without any VOC object included" if c.none_class else ""),
                "select": (f"fold {c.fold} of {c.folds} of train (cross-validation)" if c.folds > 1 else "split == val")
                + (" (best epoch by mAP" if c.keep == "best" else " (last epoch kept, val only reported") + "; naming threshold by F1)",
                "test": "none: val is the reported split",
            },
        }


def label_masks(rows: list[MultiLabelRecord]) -> torch.Tensor:
    """(N, 2, C): row 0 marks the classes present, row 1 those seen only through ambiguous objects."""
    out = torch.zeros(len(rows), 2, len(VOC_CLASSES))
    index = {n: i for i, n in enumerate(VOC_CLASSES)}
    for k, r in enumerate(rows):
        for n in r.present:
            out[k, 0, index[n]] = 1
        for n in r.ambiguous:
            out[k, 1, index[n]] = 1
    return out


def positives(masks: torch.Tensor) -> torch.Tensor:
    """(N, C) ground truth for evaluation: every class with an object in the image, ambiguous ones included."""
    return (masks[:, 0] > 0) | (masks[:, 1] > 0)


def main(argv: list[str] | None = None) -> None:
    fit(MultiLabelTask(parse_config(MultiLabelConfig, argv, prog="python -m train.multilabel")))


if __name__ == "__main__":
    main()
