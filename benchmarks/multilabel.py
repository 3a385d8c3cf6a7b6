"""Multi-label DLDL against a BCE baseline on COCO tiny: ``python -m benchmarks.multilabel``.

Trains the label-distribution model (KL) and the per-class binary
cross-entropy baseline in the same run, with the same backbone, schedule and
budget, each with the learning rate that 3-fold cross-validation on ``train``
prefers (``val`` is not used to choose anything, and the last epoch is kept),
then prints per-class average precision on ``val`` for both and for
the shipped weights (scored through ``MultiLabelPredictor``, the path the
command line and the app use). ``--ship`` copies the KL model into weights/.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from PIL import Image

from benchmarks.timing import machine
from dldl_core.checkpoint import card_path, read_card
from dldl_core.data import VOC_CLASSES, read_coco_multilabel
from dldl_core.metrics import mean_average_precision
from dldl_core.predict import WEIGHTS_DIR, MultiLabelPredictor
from train.engine import fit
from train.multilabel import MultiLabelConfig, MultiLabelTask, label_masks, positives


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--out", default="runs/bench_multilabel", help="run folders kl/ and bce/ go here")
    ap.add_argument("--epochs", type=int, default=MultiLabelConfig.epochs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cv", type=int, default=3, help="choose each model's learning rate by K-fold cross-validation on train (0: the default rate)")
    ap.add_argument("--lrs", default="3e-3,1e-2,3e-2", help="learning rates to choose from")
    ap.add_argument("--no-train", action="store_true", help="reuse the models already in --out")
    ap.add_argument("--ship", action="store_true", help="copy the KL model and its card to weights/")
    args = ap.parse_args(argv)

    lrs = [float(v) for v in args.lrs.split(",")]
    cv: dict[str, dict[float, float]] = {}
    runs = {}
    for loss in ("kl", "bce"):
        lr = MultiLabelConfig.lr
        if args.cv > 1:  # the learning rate is chosen on folds of train; val stays unseen until the end
            cv[loss] = {}
            for lr_k in lrs:
                maps = []
                for k in range(args.cv):
                    cfg = MultiLabelConfig(data=args.data, out=str(Path(args.out) / "cv" / f"{loss}_lr{lr_k:g}_fold{k}"), loss=loss,
                                           lr=lr_k, epochs=args.epochs, seed=args.seed, folds=args.cv, fold=k)
                    card = read_card(Path(cfg.out) / "multilabel.safetensors") if args.no_train else fit(MultiLabelTask(cfg))
                    maps.append(card["metrics"]["val"]["map"])
                cv[loss][lr_k] = sum(maps) / len(maps)
            lr = max(cv[loss], key=cv[loss].get)
        cfg = MultiLabelConfig(data=args.data, out=str(Path(args.out) / loss), loss=loss, lr=lr, epochs=args.epochs, seed=args.seed)
        t0 = time.time()
        if not args.no_train:
            fit(MultiLabelTask(cfg))
        runs[loss] = (Path(cfg.out) / "multilabel.safetensors", time.time() - t0, lr)
    if args.ship:
        for src in (runs["kl"][0], card_path(runs["kl"][0])):
            shutil.copy(src, WEIGHTS_DIR / src.name)

    rows = read_coco_multilabel(args.data, "val")
    images = [Image.open(r.path).convert("RGB") for r in rows]
    truth = positives(label_masks(rows))
    columns = {name: run[0] for name, run in runs.items()}
    if (WEIGHTS_DIR / "multilabel.safetensors").is_file():
        columns["shipped"] = WEIGHTS_DIR / "multilabel.safetensors"
    results, speed = {}, {}
    for name, weights in columns.items():
        model = MultiLabelPredictor(weights, "cpu")
        model.scores(images[:8])  # warm-up
        t0 = time.perf_counter()
        results[name] = mean_average_precision(model.scores(images), truth)
        speed[name] = (time.perf_counter() - t0) / len(images) * 1000

    print(f"Multi-label on COCO tiny val ({len(rows)} images with VOC objects; {machine('cpu')}); "
          f"both models trained here for {args.epochs} epochs from ImageNet weights, last epoch kept")
    print()
    if cv:
        print(f"Learning rate chosen by {args.cv}-fold cross-validation on train (mean mAP over the held-out folds):")
        print()
        print("| lr | " + " | ".join(f"CV mAP {n}" for n in cv) + " |")
        print("|---|" + "---|" * len(cv))
        for lr_k in lrs:
            print(f"| {lr_k:g} | " + " | ".join(f"{cv[n][lr_k]:.3f}" + (" (chosen)" if runs[n][2] == lr_k else "") for n in cv) + " |")
        print()
    print("| class | val images | " + " | ".join(f"AP {n}" for n in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for c, name in enumerate(VOC_CLASSES):
        if truth[:, c].any():
            print(f"| {name} | {int(truth[:, c].sum())} | " + " | ".join(f"{results[n][1][c]:.3f}" for n in columns) + " |")
    print("| **mAP** | | " + " | ".join(f"**{results[n][0]:.3f}**" for n in columns) + " |")
    print("| ms per image (batches of 32) | | " + " | ".join(f"{speed[n]:.1f}" for n in columns) + " |")
    if not args.no_train:
        print("| training time (s) | | " + " | ".join(f"{runs[n][1]:.0f}" if n in runs else "" for n in columns) + " |")


if __name__ == "__main__":
    main()
