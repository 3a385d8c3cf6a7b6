"""Batch command line: ``python -m dldl_core predict {age,pose,faces,multilabel} INPUT... [--out FILE.jsonl]``.

One JSON line per input image: its faces, each with the readouts of the task's
model (``faces``: age and pose from one detection pass), or for
``multilabel`` the class scores and the classes named present. An unreadable
input gets an ``"error"`` field instead of stopping the run; the exit code is
0 only when every input was read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from .checkpoint import WeightsError
from .images import ImageReadError, list_images, load_image
from .predict import WEIGHTS_DIR, AgePredictor, CropModel, FacePipeline, MultiLabelPredictor, PosePredictor


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dldl_core", description="Deep Label Distribution Learning toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="predict distributions for images, one JSON line each")
    pred.add_argument("task", choices=["age", "pose", "faces", "multilabel"],
                      help="age, head pose, faces (both, sharing one detection) or multilabel (objects in the whole image)")
    pred.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    pred.add_argument("--crops", action="store_true", help="each image is one face, already framed like the task's training crops (age or pose)")
    pred.add_argument("--out", help="write JSON lines here instead of standard output")
    pred.add_argument("--age-weights", default=str(WEIGHTS_DIR / "age.safetensors"), help="age weights (safetensors with its .json card beside)")
    pred.add_argument("--pose-weights", default=str(WEIGHTS_DIR / "pose.safetensors"), help="head-pose weights (safetensors with its .json card beside)")
    pred.add_argument("--multilabel-weights", default=str(WEIGHTS_DIR / "multilabel.safetensors"), help="multi-label weights (with its .json card)")
    pred.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    pred.add_argument("--batch-size", type=int, default=64, help="images per batch with --crops and for multilabel")
    return parser


def _results(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    paths = list_images(args.inputs)
    if args.task == "multilabel":
        model = MultiLabelPredictor(args.multilabel_weights, args.device)
        for chunk in _chunks(paths, args.batch_size):
            results = iter(model.predict_images([im for _, im in chunk if im is not None]))
            yield from (row if im is None else {**row, **next(results)} for row, im in chunk)
        return
    models: dict[str, CropModel] = {}
    if args.task in ("age", "faces"):
        models["age"] = AgePredictor(args.age_weights, args.device)
    if args.task in ("pose", "faces"):
        models["pose"] = PosePredictor(args.pose_weights, args.device)
    if args.crops:
        ((name, crop_model),) = models.items()
        for chunk in _chunks(paths, args.batch_size):
            results = iter(crop_model.predict_crops([im for _, im in chunk if im is not None]))
            empty = {"box": None, "score": None, "landmarks": None}
            yield from (row if im is None else {**row, "faces": [{**empty, name: next(results)}]} for row, im in chunk)
        return
    pipeline = FacePipeline(models.get("age"), models.get("pose"))
    for (row, image), in _chunks(paths, 1):
        yield row if image is None else {**row, "size": list(image.size), "faces": pipeline.analyze(image)}


def _chunks(paths: list[Path], size: int) -> Iterator[list[tuple[dict[str, Any], Image.Image | None]]]:
    """Inputs ``size`` at a time, each as (its output row, the image or None when unreadable)."""
    for i in range(0, len(paths), size):
        chunk = []
        for p in paths[i : i + size]:
            try:
                chunk.append(({"path": str(p)}, load_image(p)))
            except ImageReadError as exc:
                chunk.append(({"path": str(p), "error": str(exc)}, None))
        yield chunk


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.crops and args.task == "faces":
        parser.error("--crops needs one task (age or pose): the two models are framed differently")
    out = open(args.out, "w") if args.out else sys.stdout
    failed = total = 0
    try:
        for row in _results(args):
            total += 1
            failed += "error" in row
            if "error" in row:
                print(f"error: {row['error']}", file=sys.stderr)
            out.write(json.dumps(row) + "\n")
            out.flush()
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.out:
            out.close()
    if total == 0:
        print("error: no input images found", file=sys.stderr)
        return 1
    print(f"{total - failed} of {total} images read", file=sys.stderr)
    return 1 if failed else 0
