"""Speed of the shipped models on this machine: ``python -m benchmarks.speed``.

Prints the median time (after warm-up) of MTCNN detection alone and of the
whole faces pipeline (detection, crops, age and pose) on a 640x480 photo with
one face, their ratio, the cost of each additional face, the throughput of
the batch command line on face crops, each model alone through PyTorch (as
shipped, channels-first, after ``torch.compile``, under bf16 autocast) and through its ONNX
export in onnxruntime, and the training throughput of each task's training
command on ``--device``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from benchmarks.timing import interleaved_median_ms, machine, median_ms
from dldl_core.cli import main as cli_main
from dldl_core.data import read_utkface
from dldl_core.examples import example_photos
from dldl_core.faces import FaceDetector
from dldl_core.images import load_image
from dldl_core.models import output_distributions
from dldl_core.paths import shipped_weights
from dldl_core.predict import BACKEND_HELP, BACKENDS, AgePredictor, FacePipeline, MultiLabelPredictor, PosePredictor, SegPredictor
from train.age import AgeConfig, AgeTask
from train.engine import Task, TrainConfig, fit, parse_config
from train.multilabel import MultiLabelConfig, MultiLabelTask
from train.pose import PoseConfig, PoseTask
from train.seg import SegConfig, SegTask


def faces_photo(n: int) -> Image.Image:
    """A 1280x640 photo holding ``n`` (at most 8) copies of the astronaut portrait, 320 px each."""
    tile = load_image(example_photos()["astronaut"]).resize((320, 320), Image.BILINEAR)
    canvas = Image.new("RGB", (1280, 640), (120, 120, 120))
    for i in range(n):
        canvas.paste(tile, ((i % 4) * 320, (i // 4) * 320))
    return canvas


def _bf16(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


def _native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX). Without it autocast emulates
    bf16 and a model takes seconds instead of milliseconds: no speed path to time."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _distributions(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """A model's outputs as probabilities, flattened per example (heads side by side): a softmax
    over each head's whole distribution, or over the classes of each pixel for a (N, C, H, W) head,
    as the ONNX export applies them."""
    return torch.cat([v.flatten(1) for v in output_distributions(out).values()], 1)


@torch.inference_mode()
def model_times(runs: int, compile_tasks: list[str] | None = None) -> dict[str, tuple[str, list[float | None], float | None, float]]:
    """Per model: its task, and the median ms on the CPU through PyTorch (batch norm folded,
    channels-last, as the predictors run it), in the default channels-first layout, after
    ``torch.compile`` (for ``compile_tasks`` only), under bf16 autocast (None where the CPU has no
    native bf16) and through its ONNX export in onnxruntime; the seconds the compiled model's first
    call took (the compilation), and the largest change bf16 makes to a probability."""
    inputs = {AgePredictor: ("age, 8 face crops and their mirror images", 16),
              PosePredictor: ("pose, 8 face crops and their mirror images", 16),
              MultiLabelPredictor: ("multi-label, 8 whole images", 8),
              SegPredictor: ("segmentation, one 480x360 frame", 1)}
    out, native_bf16 = {}, _native_bf16()
    for predictor, (name, n) in inputs.items():
        if not (shipped_weights(predictor.task)).is_file():
            continue
        shipped = predictor(device="cpu")
        size = getattr(shipped, "size", None)
        x = torch.randn((n, 3, size, size) if size else (n, 3, 360, 480))
        xt = x.contiguous(memory_format=torch.channels_last)
        model = shipped.model
        channels_first = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        compiled, compile_s = None, None
        if predictor.task in (compile_tasks or []):
            t0 = time.perf_counter()
            # Static shapes: the models share forward code, and dynamo would otherwise turn the input
            # size dynamic once a second model reaches it with another shape (then the multi-label
            # model's compilation ran for more than 10 minutes on this CPU).
            compiled = torch.compile(model, dynamic=False)
            compiled(xt)  # compiles on the first call
            compile_s = time.perf_counter() - t0
        onnx_model = predictor(device="cpu", backend="onnx").model

        bf16 = partial(_bf16, model, xt)
        change = float((_distributions(bf16()) - _distributions(model(xt))).abs().max())
        times = [median_ms(partial(model, xt), runs), median_ms(partial(channels_first, x), runs),
                 median_ms(partial(compiled, xt), runs) if compiled is not None else None,
                 median_ms(bf16, runs) if native_bf16 else None, median_ms(partial(onnx_model, x), runs)]
        out[name + (f" ({n} x {size} px)" if size else "")] = (predictor.task, times, compile_s, change)
    return out


# Per task: its task and config classes, and options that keep the measuring before training short.
TRAINING: dict[str, tuple[type[Task], type[TrainConfig], list[str]]] = {
    "age": (AgeTask, AgeConfig, ["--template-chips", "20"]),
    "pose": (PoseTask, PoseConfig, ["--framing-chips", "20"]),
    "multilabel": (MultiLabelTask, MultiLabelConfig, []),
    "seg": (SegTask, SegConfig, []),
}


def training_throughput(task: str, device: str, data: str | None, steps: int, tmp: Path) -> tuple[str, str, int, float]:
    """Train ``task`` for ``steps`` + 1 batches of its default size, its options parsed and trained
    as ``python -m train.TASK`` does (the shared engine); returns what was trained, the device
    the card records, the batch size and the images per second the engine measured after the first step."""
    task_class, config_class, quick = TRAINING[task]
    batch = config_class().batch_size
    # Random initial weights: the rate does not depend on them, and no ImageNet file is needed.
    argv = ["--epochs", "1", "--limit", str(batch * (steps + 1)), "--val-limit", "16", "--skip-test", "--no-pretrained",
            "--device", device, "--out", str(tmp / task), *quick, *(["--data", data] if data else [])]
    with contextlib.redirect_stderr(io.StringIO()):
        card = fit(task_class(parse_config(config_class, argv)))
    config = card.training["config"]
    size = config.get("image_size") or f"{config['crop_width']}x{config['crop_height']}"
    what = f"`train.{task}` ({card.model['backbone']}, {size} px)"
    return what, card.training["device"], batch, card.training["history"][0]["images_per_s"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per measurement (the median is shown)")
    ap.add_argument("--crops", type=int, default=1000, help="UTKFace test chips for the batch command line")
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    ap.add_argument("--train", nargs="*", choices=list(TRAINING), default=list(TRAINING),
                    help="tasks whose training throughput is measured (none: skip)")
    ap.add_argument("--train-steps", type=int, default=10, help="timed training steps per task (after one untimed step)")
    ap.add_argument("--compile", nargs="*", default=[], choices=list(TRAINING),
                    help="also time these tasks' models after torch.compile (each takes seconds to minutes to compile)")
    args = ap.parse_args(argv)

    detector = FaceDetector(device=args.device)
    age, pose = AgePredictor(device=args.device, backend=args.backend), PosePredictor(device=args.device, backend=args.backend)
    pipeline = FacePipeline(age, pose, detector)

    photo = Image.new("RGB", (640, 480), (120, 120, 120))
    photo.paste(load_image(example_photos()["astronaut"]).resize((480, 480), Image.BILINEAR), (80, 0))
    assert len(detector.detect(photo)) == 1
    det, full = interleaved_median_ms([lambda: detector.detect(photo), lambda: pipeline.analyze(photo)], args.runs)

    one, eight = faces_photo(1), faces_photo(8)
    assert len(detector.detect(one)) == 1 and len(detector.detect(eight)) == 8
    faces1, faces8 = detector.detect(one), detector.detect(eight)
    models = dict(zip((1, 8), interleaved_median_ms([lambda: pipeline.describe(one, faces1), lambda: pipeline.describe(eight, faces8)], args.runs)))
    per_face = (models[8] - models[1]) / 7

    print(f"Speed ({machine(args.device)}, {age.backend} backend{' (auto)' if args.backend == 'auto' else ''}; "
          f"medians of {args.runs} runs after warm-up, paired measurements timed in turn)")
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
        chip = Image.open(rows[0].path).convert("RGB")
        refined, one_pass = interleaved_median_ms([lambda: detector.detect(chip), lambda: detector.detect(chip, refine=False)], args.runs)
        print(f"| MTCNN detection of a tight portrait (a 200-px test chip as the photo): landmarks measured again on a chip / one pass | {refined:.1f} / {one_pass:.1f} ms |")
        found = len(pipeline.analyze(grid))
        fifty = median_ms(lambda: pipeline.analyze(grid), max(3, args.runs // 4), warmup=1)
        print(f"| faces pipeline on a 1300x650 photo of 50 faces ({found} found) | {fifty:.0f} ms |")
        paths = [str(r.path) for r in rows]
        for task in ("age", "pose"):
            t0, c0 = time.perf_counter(), time.process_time()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                cli_main(["predict", task, *paths, "--crops", "--device", args.device, "--backend", args.backend])
            wall = time.perf_counter() - t0
            busy = (time.process_time() - c0) / wall  # CPU seconds of all threads per second
            print(f"| `predict {task} --crops` on {len(paths)} face crops (reading, model, JSON) | {len(paths) / wall:.0f} images/s, {busy:.1f} cores busy |")

    print()
    print("| model alone, on normalised input (no reading, cropping or readouts) | PyTorch | PyTorch, channels-first | torch.compile "
          "| bf16 autocast | onnxruntime | bf16: largest probability change |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="dldl_inductor_") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # a fresh inductor cache: the compile time a first run pays
        times = model_times(args.runs, args.compile)
    for name, (task, ms, compile_s, change) in times.items():
        cells = [f"{v:.1f} ms" for v in ms[:2]]
        cells.append(f"not run (--compile {task})" if compile_s is None else f"{ms[2]:.1f} ms (compiled in {compile_s:.0f} s)")
        cells.append(f"{ms[3]:.1f} ms" if ms[3] is not None else "not run (no native bf16 on this CPU)")
        cells.append(f"{ms[4]:.1f} ms")
        print(f"| {name} | " + " | ".join(cells) + f" | {change:.1e} |")

    if args.train:
        print()
        print(f"| training, {args.train_steps} timed steps after a warm-up step | device | batch | images/s |")
        print("|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for task in args.train:
                what, device, batch, ips = training_throughput(task, args.device, args.data, args.train_steps, Path(tmp))
                print(f"| {what} | {device} | {batch} | {ips:.0f} |")


if __name__ == "__main__":
    main()
