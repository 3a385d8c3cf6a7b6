"""Speed of the shipped models on this machine: ``python -m benchmarks.speed``.

Prints the median time (after warm-up) of MTCNN detection alone and of the
whole faces pipeline (detection, crops, age and pose) on a 640x480 photo with
one face, their ratio, the cost of each additional face, the throughput of
the batch command line on face crops, each model alone through PyTorch and
through its ONNX export in onnxruntime, and the training throughput recorded
in each shipped model's card.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.timing import machine, median_ms
from dldl_core.checkpoint import read_card
from dldl_core.cli import main as cli_main
from dldl_core.data import read_utkface
from dldl_core.examples import example_photos
from dldl_core.export import OnnxModel, export_onnx
from dldl_core.faces import FaceDetector
from dldl_core.images import load_image
from dldl_core.predict import WEIGHTS_DIR, AgePredictor, FacePipeline, PosePredictor, SegPredictor


def faces_photo(n: int) -> Image.Image:
    """A 1280x640 photo holding ``n`` (at most 8) copies of the astronaut portrait, 320 px each."""
    tile = load_image(example_photos()["astronaut"]).resize((320, 320), Image.BILINEAR)
    canvas = Image.new("RGB", (1280, 640), (120, 120, 120))
    for i in range(n):
        canvas.paste(tile, ((i % 4) * 320, (i // 4) * 320))
    return canvas


@torch.inference_mode()
def model_times(age: AgePredictor, pose: PosePredictor, runs: int) -> dict[str, tuple[float, float]]:
    """Median ms of each model through PyTorch (batch norm folded, channels-last, as the predictors
    run it) and through its ONNX export in onnxruntime, on the same input."""
    models = {"age, 8 face crops and their mirror images (16 x 128 px)": (age, torch.randn(16, 3, 128, 128)),
              "pose, 8 face crops and their mirror images (16 x 112 px)": (pose, torch.randn(16, 3, 112, 112))}
    seg = WEIGHTS_DIR / "seg.safetensors"
    if seg.is_file():
        models["segmentation, one 480x360 frame"] = (SegPredictor(seg, age.device), torch.randn(1, 3, 360, 480))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, x) in models.items():
            task = model.card["task"]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                onnx = OnnxModel(export_onnx(WEIGHTS_DIR / f"{task}.safetensors", Path(tmp) / f"{task}.onnx"))
            xt = x.to(model.device).contiguous(memory_format=torch.channels_last)
            out[name] = (median_ms(lambda: model.model(xt), runs), median_ms(lambda: onnx(x), runs))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per measurement (the median is shown)")
    ap.add_argument("--crops", type=int, default=1000, help="UTKFace test chips for the batch command line")
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    detector = FaceDetector(device=args.device)
    age, pose = AgePredictor(device=args.device), PosePredictor(device=args.device)
    pipeline = FacePipeline(age, pose, detector)

    photo = Image.new("RGB", (640, 480), (120, 120, 120))
    photo.paste(load_image(example_photos()["astronaut"]).resize((480, 480), Image.BILINEAR), (80, 0))
    assert len(detector.detect(photo)) == 1
    det = median_ms(lambda: detector.detect(photo), args.runs)
    full = median_ms(lambda: pipeline.analyze(photo), args.runs)

    one, eight = faces_photo(1), faces_photo(8)
    assert len(detector.detect(one)) == 1 and len(detector.detect(eight)) == 8
    models = {}
    for n, im in ((1, one), (8, eight)):
        faces = detector.detect(im)
        models[n] = median_ms(lambda: pipeline.describe(im, faces), args.runs)
    per_face = (models[8] - models[1]) / 7

    print(f"Speed ({machine(args.device)}; "
          f"medians of {args.runs} runs after warm-up)")
    print()
    print("| measurement | value |")
    print("|---|---|")
    print(f"| MTCNN detection alone, 640x480 photo, one face | {det:.1f} ms |")
    print(f"| faces pipeline (detection, crops, age, pose), same photo | {full:.1f} ms |")
    print(f"| **pipeline / detection** | **{full / det:.2f}x** |")
    print(f"| crops, age and pose of 1 face / of 8 faces (detected beforehand, 1280x640 photo) | {models[1]:.1f} / {models[8]:.1f} ms |")
    print(f"| **each additional face** | **{per_face:.1f} ms** |")

    rows = read_utkface(args.data, "test")[: args.crops]
    if rows:
        grid = Image.new("RGB", (1300, 650), (100, 100, 100))
        for i, row in enumerate(rows[::6][:50]):
            grid.paste(Image.open(row.path).convert("RGB").resize((120, 120)), (10 + (i % 10) * 129, 10 + (i // 10) * 129))
        found = len(pipeline.analyze(grid))
        fifty = median_ms(lambda: pipeline.analyze(grid), max(3, args.runs // 4), warmup=1)
        print(f"| faces pipeline on a 1300x650 photo of 50 faces ({found} found) | {fifty:.0f} ms |")
        paths = [str(r.path) for r in rows]
        for task in ("age", "pose"):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                cli_main(["predict", task, *paths, "--crops", "--device", args.device])
            rate = len(paths) / (time.perf_counter() - t0)
            print(f"| `predict {task} --crops` on {len(paths)} face crops (reading, model, JSON) | {rate:.0f} images/s |")

    print()
    print("| model alone, on normalised input (no reading, cropping or readouts) | PyTorch | onnxruntime |")
    print("|---|---|---|")
    for name, ms in model_times(age, pose, args.runs).items():
        print(f"| {name} | " + " | ".join(f"{v:.1f} ms" for v in ms) + " |")

    print()
    print("| training (from each shipped card) | device | processes | images/s |")
    print("|---|---|---|---|")
    for weights in sorted(Path(WEIGHTS_DIR).glob("*.safetensors")):
        card = read_card(weights)
        t = card.get("training", {})
        if t.get("history"):
            ips = statistics.median(h["images_per_s"] for h in t["history"])
            device = t.get("device", "not recorded")
            print(f"| `{t['command']}` | {device} | {t.get('processes', 1)} | {ips:.0f} |")


if __name__ == "__main__":
    main()
