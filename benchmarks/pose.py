"""Head-pose model on AFLW2000: ``python -m benchmarks.pose [--weights W] [--limit N]``.

Prints, for the shipped model on the 1,969 AFLW2000 images, the mean absolute
error of yaw, pitch and roll, their mean and the fraction of faces within 10
degrees on both yaw and pitch, twice: cropped from the given face boxes (the
standard protocol) and through MTCNN detection (what users get; a face counts
as found when a detected box overlaps the given box with IoU >= 0.3), and the
faces the detector invents on face-free photos (every CamVid frame and the
COCO-tiny photos without people), with stock MTCNN's settings and the shipped
ones (``dldl_core.faces.FaceDetector``). Then speed per face.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from PIL import Image

from benchmarks.timing import machine, per_face_ms
from dldl_core.crops import box_iou
from dldl_core.data import data_root, read_camvid, read_pose
from dldl_core.faces import Face, FaceDetector
from dldl_core.paths import shipped_weights
from dldl_core.pose import rotate_in_plane
from dldl_core.predict import PosePredictor


def errors(out: list[dict], true: np.ndarray) -> np.ndarray:
    pred = np.array([[o["yaw"], o["pitch"], o["roll"]] for o in out])
    return np.abs(pred - true)


def _row(name: str, err: np.ndarray, total: int) -> str:
    mae = err.mean(0)
    within = (err[:, :2] <= 10).all(1).mean()
    return (
        f"| {name} | {len(err)} of {total} ({len(err) / total:.1%}) | {mae[0]:.2f} | {mae[1]:.2f} | {mae[2]:.2f} | "
        f"**{mae.mean():.2f}** | {within:.3f} |"
    )


def face_free_images(data: str | None) -> list:
    """Photos without a face: every CamVid frame (street scenes) and the COCO-tiny images without a person."""
    root = data_root(data)
    coco = json.loads((root / "multilabel" / "coco_tiny" / "instances.json").read_text())
    person = {a["image_id"] for a in coco["annotations"] if a["category_id"] == 1}
    return [r.image for r in read_camvid(data)] + [root / "multilabel" / "coco_tiny" / "images" / im["file_name"]
                                                    for im in coco["images"] if im["id"] not in person]


def detectors(device: str | torch.device = "cpu") -> dict[str, FaceDetector]:
    """The detectors the tables compare: stock MTCNN and the shipped settings."""
    return {"stock MTCNN (score >= 0.9)": FaceDetector.stock(device), "shipped detector settings": FaceDetector(device)}


def labelled_face(faces: list[Face], box: list[float], min_iou: float = 0.3) -> Face | None:
    """The detected face that overlaps the labelled ``box`` most, if it overlaps by ``min_iou``."""
    best = max(faces, key=lambda f: box_iou(f.box, box), default=None)
    return best if best is not None and box_iou(best.box, box) >= min_iou else None


def false_detections(data: str | None, compared: dict[str, FaceDetector]) -> str:
    """A table of the faces each detector finds on face-free photos."""
    paths = face_free_images(data)
    counts = {name: sum(len(d.detect(Image.open(p).convert("RGB"))) for p in paths) for name, d in compared.items()}
    rows = "\n".join(f"| {name} | {n} |" for name, n in counts.items())
    return f"| false faces on {len(paths)} face-free photos (CamVid frames, COCO without people) | count |\n|---|---|\n{rows}"


def validation(weights: list[str], data: str | None, degrees: float = 30.0, agree: float = 5.0) -> str:
    """A table of each model's MAE on AFLW val (never AFLW2000) to the two teachers' mean, on the
    faces where they agree within ``agree`` degrees: upright, and turned ``degrees`` either way in the
    image plane with the labels turned the same way (``pose.rotate_in_plane``): tilted heads are
    rarer in AFLW than in photos."""
    rows = [r for r in read_pose("aflw", data, "val") if np.abs(np.subtract(*r.teachers[:2])).max() <= agree]
    truth = torch.tensor(np.array([np.mean(r.teachers[:2], 0) for r in rows]), dtype=torch.float32)
    images = [Image.open(r.path).convert("RGB") for r in rows]
    lines = [f"AFLW val, {len(rows)} faces where the teachers agree within {agree:g}°: MAE (°) to their mean", "",
             f"| weights | upright | turned ±{degrees:g}° in the image | roll, turned |", "|---|---|---|---|"]
    for w in weights:
        model = PosePredictor(w, "cpu")
        upright = errors(model.predict_crops([model.crop_from_box(im, list(r.box)) for im, r in zip(images, rows)]), truth.numpy())
        turned = []
        for d in (degrees, -degrees):
            crops = [model.crop_from_box(im.rotate(d, resample=Image.BILINEAR, center=((r.box[0] + r.box[2]) / 2, (r.box[1] + r.box[3]) / 2)), list(r.box))
                     for im, r in zip(images, rows)]
            turned.append(errors(model.predict_crops(crops), rotate_in_plane(truth, torch.full((len(rows),), d)).numpy()))
        turned = np.concatenate(turned)
        lines.append(f"| {os.path.relpath(w)} | {upright.mean():.2f} | {turned.mean():.2f} | {turned[:, 2].mean():.2f} |")
    return "\n".join(lines)


def detection_validation(data: str | None, compared: dict[str, FaceDetector]) -> str:
    """How many AFLW val faces (never AFLW2000) each detector finds (``labelled_face``): where the
    detector's defaults were chosen, with the false faces of ``false_detections``."""
    rows = read_pose("aflw", data, "val")
    images = [Image.open(r.path).convert("RGB") for r in rows]
    lines = ["| detector | AFLW val faces found |", "|---|---|"]
    for name, d in compared.items():
        found = sum(labelled_face(d.detect(im), list(r.box)) is not None for im, r in zip(images, rows))
        lines.append(f"| {name} | {found} of {len(rows)} ({found / len(rows):.1%}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(shipped_weights("pose")))
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all 1,969)")
    ap.add_argument("--no-detect", action="store_true", help="skip the detection path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--validation", nargs="*", metavar="WEIGHTS",
                    help="only the validation tables: AFLW val, upright and turned, for these weights (default: the shipped ones), "
                    "the faces the detector finds there, and its false faces")
    args = ap.parse_args(argv)
    if args.validation is not None:
        print(validation(args.validation or [args.weights], args.data))
        print()
        compared = detectors()
        print(detection_validation(args.data, compared))
        print()
        print(false_detections(args.data, compared))
        return

    rows = read_pose("aflw2000", args.data)
    rows = rows[: args.limit] if args.limit else rows
    pose = PosePredictor(args.weights, args.device)
    images = [Image.open(r.path).convert("RGB") for r in rows]
    true = np.array([r.pose for r in rows])

    crops = [pose.crop_from_box(im, list(r.box)) for im, r in zip(images, rows)]
    out = pose.predict_crops(crops)
    batched_ms, single_ms = per_face_ms(pose.predict_crops, crops)

    print(f"Head pose on AFLW2000 ({machine(pose.device)})")
    print(f"weights: {os.path.relpath(args.weights)} (trained {pose.card.training['date']}, labels: {pose.card.data['labels']})")
    print()
    print("| crops from | faces | yaw | pitch | roll | mean MAE (°) | yaw and pitch within 10° |")
    print("|---|---|---|---|---|---|---|")
    print(_row("given boxes", errors(out, true), len(rows)))
    if not args.no_detect:
        compared = detectors(pose.device)
        detector = compared["shipped detector settings"]
        found, det_out = [], []
        for i, (im, r) in enumerate(zip(images, rows)):
            best = labelled_face(detector.detect(im), list(r.box))
            if best is not None:
                found.append(i)
                det_out.append(pose.crop(im, best))
        det_pred = pose.predict_crops(det_out)
        print(_row("MTCNN detections", errors(det_pred, true[found]), len(rows)))
        print(_row("given boxes, same faces", errors([out[i] for i in found], true[found]), len(found)))
        print()
        print(false_detections(args.data, compared))
    print()
    print("| speed | ms |")
    print("|---|---|")
    print(f"| pose model, per face in batches of 64 | {batched_ms:.1f} |")
    print(f"| pose model, one face (median) | {single_ms:.1f} |")


if __name__ == "__main__":
    main()
