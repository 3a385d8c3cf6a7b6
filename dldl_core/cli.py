"""Batch command line: ``python -m dldl_core predict {age,pose,faces,multilabel,seg} INPUT... [--out FILE.jsonl]``
and ``python -m dldl_core export onnx TASK`` (see ``dldl_core.export``).

One JSON line per input image: its faces, each with the readouts of the task's
model (``faces``: age and pose from one detection pass), for ``multilabel``
the class scores and the classes named present, for ``seg`` the share of the
image each class covers (and, with ``--out-dir``, the class map written as
DIR/<stem>.png, one 8-bit class index per pixel at the input's size). An unreadable
input gets an ``"error"`` field instead of stopping the run; the exit code is
0 only when every input was read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from .checkpoint import WeightsError
from .images import ImageReadError, list_images, load_image
from .predict import WEIGHTS_DIR, AgePredictor, CropModel, FacePipeline, MultiLabelPredictor, PosePredictor, SegPredictor


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dldl_core", description="Deep Label Distribution Learning toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="predict distributions for images, one JSON line each")
    pred.add_argument("task", choices=["age", "pose", "faces", "multilabel", "seg"],
                      help="age, head pose, faces (both, sharing one detection), multilabel (objects in the whole image) "
                      "or seg (a class for every pixel)")
    pred.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    pred.add_argument("--crops", action="store_true", help="each image is one face, already framed like the task's training crops (age or pose)")
    pred.add_argument("--out", help="write JSON lines here instead of standard output")
    pred.add_argument("--age-weights", default=str(WEIGHTS_DIR / "age.safetensors"), help="age weights (safetensors with its .json card beside)")
    pred.add_argument("--pose-weights", default=str(WEIGHTS_DIR / "pose.safetensors"), help="head-pose weights (safetensors with its .json card beside)")
    pred.add_argument("--multilabel-weights", default=str(WEIGHTS_DIR / "multilabel.safetensors"), help="multi-label weights (with its .json card)")
    pred.add_argument("--seg-weights", default=str(WEIGHTS_DIR / "seg.safetensors"), help="segmentation weights (with its .json card)")
    pred.add_argument("--out-dir", help="seg: write each class map here as <stem>.png (8-bit class index per pixel)")
    pred.add_argument("--uncertainty", action="store_true", help="seg: also write <stem>_uncertainty.png (entropy / ln C, 0-255)")
    pred.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    pred.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                      help="onnx: run the models through their ONNX export in onnxruntime (CPU; exported on first use and cached)")
    pred.add_argument("--batch-size", type=int, default=64, help="images per batch with --crops and for multilabel")
    exp = sub.add_parser("export", help="export a model for other runtimes (its card is written beside it)")
    exp.add_argument("format", choices=["onnx"])
    exp.add_argument("task", choices=["age", "pose", "multilabel", "seg"])
    exp.add_argument("--weights", help="default weights/<task>.safetensors")
    exp.add_argument("--out", help="default exports/<task>.onnx")
    return parser


def _results(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    paths = list_images(args.inputs)
    if args.task == "seg":
        yield from _segment(paths, args)
        return
    if args.task == "multilabel":
        model = MultiLabelPredictor(args.multilabel_weights, args.device, args.backend)
        for chunk in _chunks(paths, args.batch_size):
            results = iter(model.predict_images([im for _, im in chunk if im is not None]))
            yield from (row if im is None else {**row, **next(results)} for row, im in chunk)
        return
    models: dict[str, CropModel] = {}
    if args.task in ("age", "faces"):
        models["age"] = AgePredictor(args.age_weights, args.device, args.backend)
    if args.task in ("pose", "faces"):
        models["pose"] = PosePredictor(args.pose_weights, args.device, args.backend)
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


def _segment(paths: list[Path], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    model = SegPredictor(args.seg_weights, args.device, args.backend)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    stems: set[str] = set()
    for (row, image), in _chunks(paths, 1):
        if image is None:
            yield row
            continue
        result = model.predict(image)
        row = {**row, "size": list(image.size), "fractions": result["fractions"], "mean_uncertainty": result["mean_uncertainty"]}
        if out_dir:
            stem = _unique(Path(row["path"]).stem, stems)
            Image.fromarray(result["classes"]).save(out_dir / f"{stem}.png")
            row["mask"] = str(out_dir / f"{stem}.png")
            if args.uncertainty:
                Image.fromarray((result["uncertainty"] * 255 + 0.5).astype("uint8")).save(out_dir / f"{stem}_uncertainty.png")
                row["uncertainty"] = str(out_dir / f"{stem}_uncertainty.png")
        yield row


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... when inputs from different folders share a name."""
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


def _read(path: Path) -> tuple[dict[str, Any], Image.Image | None]:
    try:
        return {"path": str(path)}, load_image(path)
    except ImageReadError as exc:
        return {"path": str(path), "error": str(exc)}, None


def _chunks(paths: list[Path], size: int) -> Iterator[list[tuple[dict[str, Any], Image.Image | None]]]:
    """Inputs ``size`` at a time, each as (its output row, the image or None when unreadable).

    The next chunk is decoded on a thread pool while the caller runs the model on this one
    (decoding releases the GIL), so reading does not leave the model waiting.
    """
    groups = [paths[i : i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        pending = [pool.submit(_read, p) for p in groups[0]] if groups else []
        for k in range(len(groups)):
            current = pending
            pending = [pool.submit(_read, p) for p in groups[k + 1]] if k + 1 < len(groups) else []
            yield [f.result() for f in current]


def _export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    weights = args.weights or WEIGHTS_DIR / f"{args.task}.safetensors"
    try:
        out = export_onnx(weights, args.out or Path("exports") / f"{args.task}.onnx")
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        return _export(args)
    if args.crops and args.task == "faces":
        parser.error("--crops needs one task (age or pose): the two models are framed differently")
    if args.crops and args.task in ("multilabel", "seg"):
        parser.error(f"--crops is for face models (age or pose); {args.task} reads whole images")
    if (args.out_dir or args.uncertainty) and args.task != "seg":
        parser.error("--out-dir and --uncertainty are for seg")
    if args.uncertainty and not args.out_dir:
        parser.error("--uncertainty writes images: give --out-dir too")
    if args.backend == "onnx" and args.device not in ("auto", "cpu"):
        parser.error("--backend onnx runs on the CPU: leave --device auto or cpu")
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
