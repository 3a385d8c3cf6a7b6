"""Segmentation on CamVid test: ``python -m benchmarks.seg``.

Evaluates the shipped weights (and, with ``--baseline``, other weights such as
the one-hot cross-entropy model from ``python -m train.seg --loss ce``) on the
233 test frames at 480 x 360: per-class IoU, mean IoU (void ignored), pixel
accuracy, accuracy on the pixels within 2 px of a class boundary and in the
interiors, the mean uncertainty (normalised entropy) of each, and ms per frame.
The cross-entropy ablation trained for the shipped model is read from its
recorded card (``benchmarks/records/seg_ce.json``: same model, data and
budget) and printed beside it.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.timing import machine, median_ms
from dldl_core.card import ModelCard
from dldl_core.distributions import boundary_distribution
from dldl_core.metrics import confusion_matrix, iou_summary
from dldl_core.paths import shipped_weights
from dldl_core.predict import SegPredictor
from dldl_core.seg import CAMVID_CLASSES, uncertainty
from train.seg import FRAME, SegConfig, SegTask

RECORD = Path(__file__).resolve().parent / "records" / "seg_ce.json"


@torch.inference_mode()
def evaluate(model: SegPredictor, images: np.ndarray, labels: torch.Tensor) -> dict[str, float]:
    """Per-class IoU, mean IoU, pixel accuracy overall / at boundaries / in interiors, uncertainty at each."""
    classes = len(model.classes)
    conf = torch.zeros(classes, classes, dtype=torch.long)
    sums = {k: 0.0 for k in ("edge_hits", "edge_n", "in_hits", "in_n", "edge_u", "in_u")}
    for image, truth in zip(images, labels):
        p = model.probs(Image.fromarray(image))[None]
        pred, unc = p.argmax(1), uncertainty(p)
        conf += confusion_matrix(pred, truth[None], classes)
        q = boundary_distribution(truth[None], classes, window=5, sigma=1.0)
        labelled = q.sum(1) > 0
        edge = labelled & (q.max(1).values < 1)  # another class within 2 px
        inner = labelled & ~edge
        hit = pred == truth[None].long()
        for name, mask in (("edge", edge), ("in", inner)):
            sums[f"{name}_hits"] += float(hit[mask].sum())
            sums[f"{name}_n"] += float(mask.sum())
            sums[f"{name}_u"] += float(unc[mask].sum())
    out = iou_summary(conf, model.classes)
    out["boundary_accuracy"] = sums["edge_hits"] / sums["edge_n"]
    out["interior_accuracy"] = sums["in_hits"] / sums["in_n"]
    out["boundary_uncertainty"] = sums["edge_u"] / sums["edge_n"]
    out["interior_uncertainty"] = sums["in_u"] / sums["in_n"]
    return out


def _loss(card: ModelCard) -> str:
    return {"kl": "DLDL (KL)", "ce": "one-hot CE"}[card.training["config"]["loss"]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--weights", default=str(shipped_weights("seg")), help="the model to evaluate")
    ap.add_argument("--baseline", action="append", default=[], help="more weights to evaluate in the same run (repeatable)")
    ap.add_argument("--record", default=str(RECORD), help="card of the recorded cross-entropy ablation ('' for none)")
    ap.add_argument("--limit", type=int, default=0, help="first N test frames only (0 = all 233)")
    args = ap.parse_args(argv)

    images, labels = SegTask(SegConfig(data=args.data)).load_split("test", args.limit)  # as training evaluates it

    columns: dict[str, dict[str, float]] = {}
    speed: dict[str, str] = {}
    for path in [args.weights, *args.baseline]:
        model = SegPredictor(path, "cpu")
        name = f"{_loss(model.card)}: {Path(path).parent.name}/{Path(path).name}"
        columns[name] = evaluate(model, images, labels)
        frame = Image.fromarray(np.asarray(images[0]))
        speed[name] = f"{median_ms(partial(model.probs, frame), 20):.0f}"
    if args.record and Path(args.record).is_file() and not args.limit:
        card = ModelCard.from_json(json.loads(Path(args.record).read_text()))
        name = f"{_loss(card)}: recorded card of `{card.training['command']}`"
        columns[name] = card.metrics["test"]
        speed[name] = ""

    print(f"CamVid test ({len(images)} frames at {FRAME[0]}x{FRAME[1]}, 11 classes, void ignored; {machine('cpu')})")
    print()
    names = list(columns)
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))

    def row(label: str, key: str, fmt: str = "{:.1%}", bold: bool = False) -> None:
        cells = [(fmt.format(columns[n][key]) if columns[n].get(key) is not None else "") for n in names]
        cells = [f"**{c}**" if bold and c else c for c in cells]
        print(f"| {label} | " + " | ".join(cells) + " |")

    for c in CAMVID_CLASSES:
        row(f"IoU {c}", f"iou_{c}")
    row("**mean IoU**", "miou", bold=True)
    row("pixel accuracy", "pixel_accuracy")
    row("accuracy within 2 px of a boundary", "boundary_accuracy")
    row("accuracy elsewhere", "interior_accuracy")
    row("mean uncertainty within 2 px of a boundary", "boundary_uncertainty", "{:.3f}")
    row("mean uncertainty elsewhere", "interior_uncertainty", "{:.3f}")
    print("| ms per 480x360 frame (one image, median of 20) | " + " | ".join(speed[n] for n in names) + " |")


if __name__ == "__main__":
    main()
