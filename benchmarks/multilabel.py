"""Multi-label DLDL against a BCE baseline on COCO tiny: ``python -m benchmarks.multilabel``.

Trains the label-distribution model (``kl``), the same with a learned "none of
these" class (``kl+none``: a 21st class that takes the whole mass of the training
images without any VOC object) and the per-class binary cross-entropy baseline
(``bce``) in the same run, with the same backbone, schedule and budget, each with
the backbone, input size and learning rate that 3-fold cross-validation on
``train`` prefers (``val`` is not used to choose anything, and the last epoch is
kept), then prints per-class average precision on ``val`` for them and for the
shipped weights (scored through ``MultiLabelPredictor``, the path the command line
and the app use), over the val images with VOC objects and over all of them.
``--ship`` copies the KL model into weights/ (``kl+none`` is measured, not shipped:
docs/models/multilabel.md).
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image

from benchmarks.timing import machine
from dldl_core.card import ModelCard
from dldl_core.checkpoint import card_path, read_card
from dldl_core.data import VOC_CLASSES, read_coco_multilabel
from dldl_core.metrics import auroc, mean_average_precision
from dldl_core.multilabel import MIN_DETAIL_SIDE, has_detail, split_none
from dldl_core.paths import WEIGHTS_DIR, shipped_weights
from dldl_core.predict import MultiLabelPredictor
from train.engine import fit
from train.multilabel import MultiLabelConfig, MultiLabelTask, label_masks, positives

# Backbone and input size candidates, compared before any training by the ImageNet-initialised head
# alone on train (which that head has never seen): how the backbone of the grid was picked.
ZERO_SHOT = (("mobilenet_v2", 224), ("mobilenet_v2", 320), ("efficientnet_lite0", 224), ("efficientnet_lite0", 320))


# The models the benchmark can train, by name: the loss and whether a "none of these" class is learnt.
VARIANTS = {"kl": {"loss": "kl"}, "kl+none": {"loss": "kl", "none_class": True}, "bce": {"loss": "bce"}}


def _folder(name: str) -> str:
    return name.replace("+", "_")


def zero_shot_map(data: str | None, backbone: str, size: int) -> float:
    """mAP on train of the untrained model: ImageNet backbone and the head initialised from the
    ImageNet classifier's matching classes."""
    task = MultiLabelTask(MultiLabelConfig(data=data, backbone=backbone, image_size=size))
    return task.evaluate(task.build_model(pretrained=True), *task.load_split("train"), torch.device("cpu"))["map"]


def _fit_or_reuse(cfg: MultiLabelConfig) -> ModelCard:
    """Train ``cfg``, or read the card of a finished run in ``cfg.out`` trained with the same
    configuration (so an interrupted benchmark, or one split over processes, picks up its runs)."""
    weights = Path(cfg.out) / "multilabel.safetensors"
    if weights.is_file():
        card = read_card(weights)
        if card.training["config"] == asdict(cfg) and len(card.training["history"]) == cfg.epochs:  # finished
            return card
    return fit(MultiLabelTask(cfg))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--out", default="runs/bench_multilabel", help="run folders kl/, kl_none/, bce/ and cv/ go here; finished runs with the same configuration are reused")
    ap.add_argument("--epochs", type=int, default=MultiLabelConfig.epochs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--losses", default="kl,kl+none,bce",
                    help="the models to train: kl (DLDL), kl+none (DLDL with a learned 'none of these' class), bce (the baseline)")
    ap.add_argument("--cv", type=int, default=3, help="choose each model's configuration by K-fold cross-validation on train (0: the defaults)")
    ap.add_argument("--backbones", default="efficientnet_lite0", help="backbones to choose from")
    ap.add_argument("--sizes", default="320", help="input sizes to choose from")
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3,1e-2", help="learning rates to choose from")
    ap.add_argument("--ship", action="store_true", help="copy the KL model and its card to weights/")
    args = ap.parse_args(argv)
    names = args.losses.split(",")
    if unknown := set(names) - set(VARIANTS):
        ap.error(f"unknown model {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    if args.ship and "kl" not in names:
        ap.error("--ship copies the KL model: include kl in --losses")

    grid = [{"backbone": b, "image_size": int(s), "lr": float(lr)}
            for b in args.backbones.split(",") for s in args.sizes.split(",") for lr in args.lrs.split(",")]
    cv: dict[str, list[float]] = {}
    runs = {}
    for loss in names:
        chosen = {"backbone": MultiLabelConfig.backbone, "image_size": MultiLabelConfig.image_size, "lr": MultiLabelConfig.lr}
        if args.cv > 1:  # the configuration is chosen on folds of train; val stays unseen until the end
            cv[loss] = []
            for g in grid:
                maps = []
                for k in range(args.cv):
                    name = f"{_folder(loss)}_{g['backbone']}_{g['image_size']}_lr{g['lr']:g}_fold{k}"
                    cfg = MultiLabelConfig(data=args.data, out=str(Path(args.out) / "cv" / name), **VARIANTS[loss],
                                           epochs=args.epochs, seed=args.seed, folds=args.cv, fold=k, **g)
                    maps.append(_fit_or_reuse(cfg)["metrics"]["val"]["map"])
                cv[loss].append(sum(maps) / len(maps))
            chosen = grid[max(range(len(grid)), key=cv[loss].__getitem__)]
        cfg = MultiLabelConfig(data=args.data, out=str(Path(args.out) / _folder(loss)), **VARIANTS[loss], epochs=args.epochs, seed=args.seed, **chosen)
        card = _fit_or_reuse(cfg)
        runs[loss] = (Path(cfg.out) / "multilabel.safetensors", card.training["history"][-1]["images_per_s"], chosen)
    if args.ship:
        for src in (runs["kl"][0], card_path(runs["kl"][0])):
            shutil.copy(src, WEIGHTS_DIR / src.name)

    rows = read_coco_multilabel(args.data, "val", keep_empty=True)  # with the images that hold no VOC object
    images = [Image.open(r.path).convert("RGB") for r in rows]
    truth_all = positives(label_masks(rows))
    has_object = truth_all.any(1)
    truth = truth_all[has_object]
    columns = {name: run[0] for name, run in runs.items()}
    if (shipped_weights("multilabel")).is_file():
        columns["shipped"] = shipped_weights("multilabel")
    results, results_all, named_empty, separation, speed = {}, {}, {}, {}, {}
    for name, weights in columns.items():
        model = MultiLabelPredictor(weights, "cpu")
        model.scores(images[:8])  # warm-up
        t0 = time.perf_counter()
        scores, none = split_none(model.scores(images), len(VOC_CLASSES))
        speed[name] = (time.perf_counter() - t0) / len(images) * 1000
        results[name] = mean_average_precision(scores[has_object], truth)
        results_all[name] = mean_average_precision(scores, truth_all)
        named_empty[name] = int((scores[~has_object] >= model.threshold).any(1).sum())
        separation[name] = auroc(none if none is not None else -scores.max(1).values, ~has_object)

    print(f"Multi-label on COCO tiny val ({int(has_object.sum())} images with VOC objects; {machine('cpu')}); "
          f"the models trained here for {args.epochs} epochs from ImageNet weights, last epoch kept")
    print()
    print("Before training: the ImageNet backbone with the head initialised from the ImageNet classifier, mAP on train:")
    print()
    print("| backbone | size | mAP on train, untrained |")
    print("|---|---|---|")
    for backbone, size in ZERO_SHOT:
        print(f"| {backbone} | {size} | {zero_shot_map(args.data, backbone, size):.3f} |")
    print()
    if cv:
        print(f"Backbone, input size and learning rate chosen by {args.cv}-fold cross-validation on train (mean mAP over the held-out folds):")
        print()
        print("| backbone | size | lr | " + " | ".join(f"CV mAP {n}" for n in cv) + " |")
        print("|---|---|---|" + "---|" * len(cv))
        for i, g in enumerate(grid):
            print(f"| {g['backbone']} | {g['image_size']} | {g['lr']:g} | "
                  + " | ".join(f"{cv[n][i]:.3f}" + (" (chosen)" if runs[n][2] == g else "") for n in cv) + " |")
        print()
    print("| class | val images | " + " | ".join(f"AP {n}" for n in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for c, name in enumerate(VOC_CLASSES):
        if truth[:, c].any():
            print(f"| {name} | {int(truth[:, c].sum())} | " + " | ".join(f"{results[n][1][c]:.3f}" for n in columns) + " |")
    print("| **mAP** | | " + " | ".join(f"**{results[n][0]:.3f}**" for n in columns) + " |")
    print("| ms per image (batches of 32) | | " + " | ".join(f"{speed[n]:.1f}" for n in columns) + " |")
    print("| training images/s | | " + " | ".join(f"{runs[n][1]:.0f}" if n in runs else "" for n in columns) + " |")
    print()
    empty = int((~has_object).sum())
    print(f"All {len(rows)} val images, the {empty} without any VOC object included (negatives for every class):")
    print()
    print("| | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    print("| **mAP, all val images** | " + " | ".join(f"**{results_all[n][0]:.3f}**" for n in columns) + " |")
    print(f"| images without VOC objects that get a class named (of {empty}) | " + " | ".join(str(named_empty[n]) for n in columns) + " |")
    print("| AUROC, images without VOC objects vs the rest, by the \"none\" score (else the top class score, low) | "
          + " | ".join(f"{separation[n]:.3f}" for n in columns) + " |")
    print()
    print(f"Val images without detail (one colour or under {MIN_DETAIL_SIDE} px; answered with no class before the model): "
          f"{sum(not has_detail(im) for im in images)} of {len(images)}.")


if __name__ == "__main__":
    main()
