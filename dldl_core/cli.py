"""Batch command line: ``python -m dldl_core predict {age,pose,faces,multilabel,seg,video} INPUT... [--out FILE.jsonl]``
and ``python -m dldl_core export onnx TASK`` (see ``dldl_core.export``); ``dldl`` after ``pip install -e .``.
Each task has its own options (``python -m dldl_core predict seg --help``).

One JSON line per input image: its faces, each with the readouts of the task's
model (``faces``: age and pose from one detection pass), for ``multilabel``
the class scores and the classes named present, for ``seg`` the share of the
image each class covers (and, with ``--out-dir``, the class map written as
DIR/<stem>.png, one 8-bit class index per pixel at the input's size). ``video``
writes one line per frame (each face with its track id, the frame's own age
and pose readouts and the track's fused ones) and then one line per track
(the fused age distribution, frames seen); ``--annotated`` also writes the
clip with every face boxed and labelled. An unreadable input gets an
``"error"`` field instead of stopping the run; the exit code is 0 only when
every input was read. A progress bar runs on standard error when it is a
terminal (not with ``--quiet``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from .checkpoint import WeightsError
from .clip import ClipAnalyzer, clip_labels
from .faces import FaceDetector
from .images import ImageReadError, list_images, load_image
from .novelty import novelty_path
from .paths import shipped_weights
from .plots import annotate_faces
from .predict import BACKEND_HELP, BACKENDS, AgePredictor, CropModel, FacePipeline, MultiLabelPredictor, PosePredictor, SegPredictor
from .video import VideoReadError, VideoWriter, read_video

TASKS = {
    "age": "age distributions of the faces found (or of face crops, with --crops)",
    "pose": "head-pose distributions of the faces found (or of face crops, with --crops)",
    "faces": "age and head pose of every face found, from one detection pass",
    "multilabel": "which of the 20 VOC classes are in each whole image",
    "seg": "a CamVid class distribution for every pixel",
    "video": "faces tracked through video clips, age fused and pose filtered per track",
}
FACE_MODELS = {"age": ("age",), "pose": ("pose",), "faces": ("age", "pose"), "video": ("age", "pose")}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dldl_core", description="Deep Label Distribution Learning toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="predict distributions for images, one JSON line each")
    tasks = pred.add_subparsers(dest="task", required=True, metavar="TASK", help=", ".join(TASKS))
    for task, what in TASKS.items():
        per = "one JSON line per frame and one per track" if task == "video" else "one JSON line per input image"
        t = tasks.add_parser(task, help=what, description=f"{what}; {per}")
        if task == "video":
            t.add_argument("inputs", nargs="+", help="video files (mp4, webm, avi, mov, mkv, ...)")
        else:
            t.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
        t.add_argument("--out", help="write JSON lines here instead of standard output (replaced only when the run ends)")
        t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
        t.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
        t.add_argument("--batch-size", type=int, default=64, help="images per batch (face crops, whole images)")
        t.add_argument("--quiet", action="store_true", help="no progress bar")
        # One --weights per model; faces and video have two models, so their flags carry the model's name.
        for model in FACE_MODELS.get(task, (task,)):
            flags = [f"--{model}-weights"] + (["--weights"] if len(FACE_MODELS.get(task, (task,))) == 1 else [])
            t.add_argument(*flags, dest=f"{model}_weights", default=str(shipped_weights(model)),
                           help=f"{model} weights (safetensors with its .json card beside)")
        if task in ("age", "pose"):
            t.add_argument("--crops", action="store_true", help="each image is one face, already framed like the model's training crops")
        if task == "seg":
            t.add_argument("--out-dir", help="write each class map here as <stem>.png (8-bit class index per pixel)")
            t.add_argument("--uncertainty", action="store_true", help="also write <stem>_uncertainty.png (entropy / ln C, 0-255); needs --out-dir")
        if task == "video":
            t.add_argument("--annotated", help="write the clip with every face boxed and labelled here (.mp4; one input only)")
            t.add_argument("--every", type=int, default=1, help="detect faces every N frames, reading the last ones in between")
    exp = sub.add_parser("export", help="export a model for other runtimes (its card is written beside it)")
    exp.add_argument("format", choices=["onnx"])
    exp.add_argument("task", choices=["age", "pose", "multilabel", "seg"])
    exp.add_argument("--weights", help="default weights/<task>.safetensors")
    exp.add_argument("--out", help="default exports/<task>.onnx")
    return parser


def _results(args: argparse.Namespace, progress: tqdm) -> Iterator[dict[str, Any]]:
    if args.task == "video":
        yield from _videos(args, progress)
        return
    skipped: Counter = Counter()
    paths = list_images(args.inputs, skipped)
    for reason, n in skipped.items():
        print(f"note: skipped {n} {reason} in the folders given", file=sys.stderr)
    progress.reset(total=len(paths))
    if args.task == "seg":
        yield from _segment(paths, args)
        return
    if args.task == "multilabel":
        model = MultiLabelPredictor(args.multilabel_weights, args.device, args.backend)
        for chunk in _chunks(paths, args.batch_size):
            yield from _isolated(chunk, lambda items: model.predict_images([im for _, im in items]), lambda r: r)
        return
    models: dict[str, CropModel] = {}
    if "age" in FACE_MODELS[args.task]:
        models["age"] = AgePredictor(args.age_weights, args.device, args.backend)
    if "pose" in FACE_MODELS[args.task]:
        models["pose"] = PosePredictor(args.pose_weights, args.device, args.backend)
    if getattr(args, "crops", False):
        ((name, crop_model),) = models.items()
        empty = {"box": None, "score": None, "landmarks": None}
        for chunk in _chunks(paths, args.batch_size):
            yield from _isolated(chunk, lambda items: crop_model.predict_crops([im for _, im in items]), lambda r: {"faces": [{**empty, name: r}]})
        return
    pipeline = FacePipeline(models.get("age"), models.get("pose"))
    for chunk in _chunks(paths, 1):
        yield from _isolated(chunk, lambda items: [{"size": list(im.size), "faces": pipeline.analyze(im)} for _, im in items], lambda r: r)


Chunk = list[tuple[dict[str, Any], Image.Image | None]]


def _videos(args: argparse.Namespace, progress: tqdm) -> Iterator[dict[str, Any]]:
    """Frame rows then track rows of each clip; a clip that cannot be read gets one error line."""
    age = AgePredictor(args.age_weights, args.device, args.backend)
    pose = PosePredictor(args.pose_weights, args.device, args.backend)
    detector = FaceDetector(device=age.device)
    for path in args.inputs:
        try:
            info, frames = read_video(path)
        except VideoReadError as exc:
            yield {"path": str(path), "error": str(exc)}
            continue
        progress.reset(total=info.frames or None)
        progress.set_description(Path(path).name)
        clip = ClipAnalyzer(age, pose, detector, every=args.every)
        writer = VideoWriter(args.annotated, info.fps, (info.width, info.height)) if args.annotated else None
        try:
            for frame in frames:
                row = clip.frame(frame.image)
                if writer:
                    writer.write(annotate_faces(frame.image, clip_labels(row)))
                yield {"path": str(path), "frame": row["frame"], "time": round(frame.time, 3), **row}
                progress.update()
        except VideoReadError as exc:
            yield {"path": str(path), "error": str(exc)}
            continue
        finally:
            if writer:
                writer.close()
        for track in clip.tracks():
            yield {"path": str(path), **track}


def _isolated(chunk: Chunk, run: Callable[[Chunk], list[dict[str, Any]]], shape: Callable[[dict], dict]) -> Iterator[dict[str, Any]]:
    """Rows of one chunk: ``run`` on its readable (row, image) pairs at once, each result given its
    row's fields by ``shape``; when that fails, image by image, so whatever fails (an allocation,
    the model) costs only its own input, with its own error line."""
    readable = [(row, im) for row, im in chunk if im is not None]
    error = None
    try:
        results = iter(run(readable) if readable else [])
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is reported on its own input's line
        if len(readable) > 1:
            for item in chunk:
                yield from _isolated([item], run, shape)
            return
        error = f"could not be processed: {type(exc).__name__}: {exc}"
    for row, im in chunk:
        if im is None:
            yield row
        else:
            yield {**row, "error": f"{row['path']}: {error}"} if error else {**row, **shape(next(results))}


def _segment(paths: list[Path], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    model = SegPredictor(args.seg_weights, args.device, args.backend)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()  # file names written, so no input's map overwrites another's

    def run(items: Chunk) -> list[dict[str, Any]]:
        ((source, image),) = items
        result = model.predict(image)
        row = {"size": list(image.size), "fractions": result["fractions"], "mean_uncertainty": result["mean_uncertainty"]}
        if out_dir:
            stem = _unique(Path(source["path"]).stem, taken, ["", "_uncertainty"] if args.uncertainty else [""])
            Image.fromarray(result["classes"]).save(out_dir / f"{stem}.png")
            row["mask"] = str(out_dir / f"{stem}.png")
            if args.uncertainty:
                Image.fromarray((result["uncertainty"] * 255 + 0.5).astype("uint8")).save(out_dir / f"{stem}_uncertainty.png")
                row["uncertainty"] = str(out_dir / f"{stem}_uncertainty.png")
        return [row]

    for chunk in _chunks(paths, 1):
        yield from _isolated(chunk, run, lambda r: r)


def _unique(stem: str, taken: set[str], suffixes: list[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... so that none of ``stem + suffix`` is a name already
    written (inputs from different folders may share a name; ``a_uncertainty`` may be an input too)."""
    name, k = stem, 1
    while any(name + s in taken for s in suffixes):
        k += 1
        name = f"{stem}-{k}"
    taken.update(name + s for s in suffixes)
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

    weights = args.weights or shipped_weights(args.task)
    try:
        out = export_onnx(weights, args.out or Path("exports") / f"{args.task}.onnx")
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bank = novelty_path(out)
    print(f"wrote {out} and {out.with_suffix('.json')}" + (f" and {bank}" if bank.is_file() else ""), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        return _export(args)
    _check_args(parser, args)
    try:
        return _write(args)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line usage errors (exit 2) for options that would otherwise fail later with a traceback."""
    if getattr(args, "uncertainty", False) and not args.out_dir:
        parser.error("--uncertainty writes images: give --out-dir too")
    if args.backend == "onnx" and args.device not in ("auto", "cpu"):
        parser.error("--backend onnx runs on the CPU: leave --device auto or cpu")
    if args.task == "video" and args.every < 1:
        parser.error(f"--every must be at least 1, not {args.every}")
    if getattr(args, "annotated", None) and len(args.inputs) > 1:
        parser.error("--annotated writes one clip: give one input video")
    if getattr(args, "annotated", None):
        annotated = Path(args.annotated)
        if not annotated.resolve().parent.is_dir():
            parser.error(f"--annotated {annotated}: the folder {annotated.resolve().parent} does not exist")
        if annotated.is_dir():
            parser.error(f"--annotated {annotated} is a folder; give a file name (.mp4)")
        if annotated.exists() and any(Path(p).exists() and Path(p).samefile(annotated) for p in args.inputs):
            parser.error(f"--annotated {annotated} is the input; it would be overwritten")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, not {args.batch_size}")
    try:
        device = torch.device(args.device) if args.device != "auto" else None
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device: use auto, cpu or cuda")
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here; use --device cpu (or auto)")
    if getattr(args, "out_dir", None) and Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        parser.error(f"--out-dir {args.out_dir} is a file, not a folder")
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            parser.error(f"--out {out} is a folder; give a file name")
        if not out.parent.is_dir():
            parser.error(f"--out {out}: the folder {out.parent} does not exist")
        if out.exists() and any(p.exists() and p.samefile(out) for p in list_images(args.inputs)):
            parser.error(f"--out {out} is one of the inputs; it would be overwritten")


def _write(args: argparse.Namespace) -> int:
    """Stream the rows to standard output, or into a temporary file beside ``--out`` that replaces
    it only at the end (an interrupted run leaves the previous file as it was)."""
    out = open(tmp := Path(args.out).with_name(f".{Path(args.out).name}.{os.getpid()}.tmp"), "w") if args.out else sys.stdout  # noqa: SIM115
    failed = total = 0
    what = "clips" if args.task == "video" else "images"
    quiet = args.quiet or not sys.stderr.isatty()
    progress = tqdm(disable=quiet, file=sys.stderr, unit="frame" if args.task == "video" else "image", leave=False)
    try:
        for row in _results(args, progress):
            # one input per row, except a video's: its frame 0 stands for the clip, its later frames and tracks for nothing
            total += "error" in row or (row.get("frame", 0) == 0 and "track" not in row)
            failed += "error" in row
            if "error" in row:
                progress.write(f"error: {row['error']}", file=sys.stderr)
            out.write(json.dumps(row, allow_nan=False) + "\n")
            out.flush()
            if args.task != "video":
                progress.update()
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()
        if args.out:
            out.close()
            if total:
                tmp.replace(args.out)
            else:
                tmp.unlink()
    if total == 0:
        print(f"error: no input {what} found", file=sys.stderr)
        return 1
    print(f"{total - failed} of {total} {what} read", file=sys.stderr)
    return 1 if failed else 0
