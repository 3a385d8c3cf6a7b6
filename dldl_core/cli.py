"""Batch command line: ``python -m dldl_core predict age INPUT... [--crops] [--out FILE.jsonl]``.

One JSON line per input image. An unreadable input gets an ``"error"`` field
instead of stopping the run; the exit code is 0 only when every input was read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

from .checkpoint import WeightsError
from .images import ImageReadError, list_images, load_image
from .predict import WEIGHTS_DIR, AgePredictor, FacePipeline


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dldl_core", description="Deep Label Distribution Learning toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="predict distributions for images, one JSON line each")
    pred.add_argument("task", choices=["age"], help="what to predict")
    pred.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    pred.add_argument("--crops", action="store_true", help="each image is one face, already framed like the training crops")
    pred.add_argument("--out", help="write JSON lines here instead of standard output")
    pred.add_argument("--weights", default=str(WEIGHTS_DIR / "age.safetensors"), help="age weights (safetensors with its .json card beside)")
    pred.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    pred.add_argument("--batch-size", type=int, default=64, help="crops per batch with --crops")
    return parser


def _results(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    paths = list_images(args.inputs)
    age = AgePredictor(args.weights, args.device)
    if args.crops:
        for i in range(0, len(paths), args.batch_size):
            chunk = paths[i : i + args.batch_size]
            read, rows = [], []
            for p in chunk:
                try:
                    read.append(load_image(p))
                    rows.append({"path": str(p)})
                except ImageReadError as exc:
                    rows.append({"path": str(p), "error": str(exc)})
            ages = iter(age.predict_crops(read))
            for row in rows:
                if "error" not in row:
                    row["faces"] = [{"box": None, "score": None, "landmarks": None, "age": next(ages)}]
                yield row
        return
    pipeline = FacePipeline(age)
    for p in paths:
        try:
            image = load_image(p)
        except ImageReadError as exc:
            yield {"path": str(p), "error": str(exc)}
            continue
        yield {"path": str(p), "size": list(image.size), "faces": pipeline.analyze(image)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
