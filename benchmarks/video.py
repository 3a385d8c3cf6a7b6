"""Faces through video: ``python -m benchmarks.video [--split test|val] [--clips N] [--skip-speed]``.

There is no face video with true ages here, so clips are built from labelled
stills, each frame changed the way a hand-held camera changes it:

- **age**: a UTKFace face (``--split``; choose settings on ``val``, report
  ``test``) placed in a 640x480 frame for 30-60 frames, with camera motion,
  changing scale and brightness, JPEG at a quality drawn per frame (35-95),
  occasional blur and sensor noise. Reported: the single-frame MAE and 80%
  coverage, the fused MAE and coverage at the end of the clip and over every
  frame shown (each a mean over clips, a clip counting once), the
  frame-to-frame jitter of the shown age (standard deviation of successive
  differences) raw and fused, and the fused coverage for several
  frame correlations (the tempering of the pooled evidence), and the error of
  the plain average of a clip's frame means: the part of the error that every
  frame of a clip shares, which no fusion of its frames removes.
- **pose, still**: AFLW2000 faces held still for 30 frames under the same
  changes; the jitter of yaw, pitch and roll raw and filtered, for several
  motion settings of the filter.
- **pose, turn**: AFLW2000 faces (|yaw| < 30) still for 10 frames, then turned
  in the image plane by 3 degrees a frame for 20 frames; how many frames the
  filtered roll trails the frame's own roll.
- **speed**: frames per second of the whole path (decode an MP4, detect, read
  age and pose, fuse) on a one-face 640x480 clip, with detection every frame
  and every few frames, for the torch and ONNX backends.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from benchmarks.timing import machine
from dldl_core.clip import ClipAnalyzer
from dldl_core.data import read_pose, read_utkface
from dldl_core.faces import Face, FaceDetector
from dldl_core.fusion import AgeEvidence, PoseFilter
from dldl_core.predict import AgePredictor, PosePredictor
from dldl_core.readouts import credible_interval, expectation, joint_moments
from dldl_core.video import VideoWriter, read_video

SIZE = (640, 480)
CORRELATIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0)
MOTIONS = (0.5, 1.0, 2.0, 3.0, 5.0)


def camera(image: Image.Image, rng: np.random.Generator, frames: int, side: float, turn: float = 0.0, still: int = 0):
    """Frames of ``image`` (scaled to ``side`` pixels on its longer side) in a 640x480 grey frame,
    with camera motion, scale and brightness drift, JPEG, blur and noise drawn per frame; from frame
    ``still`` on it turns ``turn`` degrees a frame counter-clockwise. Yields (frame, paste box, degrees)."""
    pos = np.array([SIZE[0] / 2, SIZE[1] / 2]) + rng.uniform(-60, 60, 2)
    light = rng.uniform(0.7, 1.2)
    for k in range(frames):
        pos += rng.normal(0, 2.0, 2)
        scale = side * (1 + 0.04 * np.sin(k / 7) + rng.normal(0, 0.01)) / max(image.size)
        w, h = round(image.width * scale), round(image.height * scale)
        canvas = Image.new("RGB", SIZE, (110, 110, 110))
        x0, y0 = round(pos[0] - w / 2), round(pos[1] - h / 2)
        canvas.paste(image.resize((w, h), Image.BILINEAR), (x0, y0))
        degrees = turn * max(0, k - still)
        if degrees:
            canvas = canvas.rotate(degrees, resample=Image.BILINEAR, center=tuple(pos), fillcolor=(110, 110, 110))
        canvas = ImageEnhance.Brightness(canvas).enhance(light * (1 + rng.normal(0, 0.03)))
        if rng.random() < 0.15:
            canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
        noisy = np.asarray(canvas, np.float32) + rng.normal(0, rng.uniform(0, 5), (SIZE[1], SIZE[0], 3))
        canvas = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=int(rng.integers(35, 96)))
        yield Image.open(buf).convert("RGB"), (x0, y0, x0 + w, y0 + h), degrees


def the_face(faces: list[Face], box: tuple[int, int, int, int]) -> Face | None:
    """The most confident detection whose centre lies in the pasted image (clips hold one face)."""
    inside = [f for f in faces if box[0] <= (f.box[0] + f.box[2]) / 2 <= box[2] and box[1] <= (f.box[1] + f.box[3]) / 2 <= box[3]]
    return max(inside, key=lambda f: f.score) if inside else None


def jitter(values: np.ndarray) -> float:
    """Standard deviation of successive differences along the first axis (mean over other axes)."""
    return float(np.diff(values, axis=0).std(0).mean()) if len(values) > 2 else float("nan")


def age_clips(split: str, clips: int, data: str | None, seed: int) -> None:
    detector = FaceDetector()
    age = AgePredictor(None, "cpu")
    analyzer = ClipAnalyzer(age, None, detector)
    rows = read_utkface(data, split)
    rng = np.random.default_rng(seed)
    chosen = [rows[i] for i in rng.choice(len(rows), clips, replace=False)]
    # Every figure is a mean over clips (a clip counts once, however many frames it has), so that
    # the per-frame rows and the fused rows weigh the same faces alike.
    clips_read, missed = [], 0  # per clip (frames, 1 + correlations, 3): the shown mean, its error, covered
    for r in chosen:
        chip = Image.open(r.path).convert("RGB")
        evidence = AgeEvidence(len(age.bins))
        reads = []
        for frame, box, _ in camera(chip, rng, int(rng.integers(30, 61)), rng.uniform(150, 260)):
            face = the_face(detector.detect(frame), box)
            if face is None:
                continue
            probs, _, _ = analyzer.distributions(frame, [face])
            evidence.add(probs[0])
            shown = torch.stack([probs[0], *(evidence.fused(c) for c in CORRELATIONS)])  # the frame's own, then fused
            m = expectation(shown, age.bins)
            lo, hi = credible_interval(shown, age.bins, age.level).unbind(1)
            reads.append(torch.stack([m, m - r.age, ((lo <= r.age) & (r.age <= hi)).to(m)], 1).numpy())
        if not reads:
            missed += 1
            continue
        clips_read.append(np.array(reads, float))

    def every_frame(j: int) -> tuple[float, float, float]:
        """Column ``j`` (0: each frame on its own, k: fused with ``CORRELATIONS[k - 1]``) over every frame
        shown: MAE, coverage and jitter, each a mean over clips."""
        per_clip = [(np.abs(c[:, j, 1]).mean(), c[:, j, 2].mean(), jitter(c[:, j, 0])) for c in clips_read]
        return tuple(np.nanmean(per_clip, 0))

    def at_end(j: int) -> tuple[float, float]:
        """Column ``j`` at each clip's last frame: MAE and coverage."""
        return np.abs([c[-1, j, 1] for c in clips_read]).mean(), np.mean([c[-1, j, 2] for c in clips_read])

    default = analyzer.correlation
    k = 1 + CORRELATIONS.index(default)
    print(f"\n## Age: {len(chosen)} UTKFace {split} faces, 30-60 frames each ({missed} never detected)\n")
    print("| shown age | MAE (years) | 80% interval coverage | jitter (years, frame to frame) |")
    print("|---|---|---|---|")
    err, cov, jit = every_frame(0)
    print(f"| each frame on its own | {err:.2f} | {cov:.3f} | {jit:.2f} |")
    err, cov = at_end(k)
    print(f"| fused, at the clip's end (correlation {default}) | {err:.2f} | {cov:.3f} | |")
    err, cov, jit = every_frame(k)
    print(f"| fused, every frame shown (correlation {default}) | {err:.2f} | {cov:.3f} | {jit:.3f} |")
    plain = np.mean([abs(c[:, 0, 1].mean()) for c in clips_read])  # mean(frame means) - age = mean(frame errors)
    print(f"| the plain average of the clip's frame means (no interval) | {plain:.2f} | | |")
    print("\nFused at the clip's end, by the frame correlation assumed in the pooling:\n")
    print("| correlation | effective frames of 45 | MAE | coverage | jitter |")
    print("|---|---|---|---|---|")
    for j, c in enumerate(CORRELATIONS, 1):
        err, cov = at_end(j)
        print(f"| {c}{' (default)' if c == default else ''} | {45 / (1 + 44 * c):.1f} | {err:.2f} | {cov:.3f} | {every_frame(j)[2]:.3f} |")


def pose_clips(clips: int, data: str | None, seed: int) -> None:
    detector = FaceDetector()
    pose = PosePredictor(None, "cpu")
    analyzer = ClipAnalyzer(None, pose, detector)
    rows = [r for r in read_pose("aflw2000", data) if abs(r.pose[0]) < 30]
    rng = np.random.default_rng(seed)
    chosen = [rows[i] for i in rng.choice(len(rows), clips, replace=False)]

    def run(image: Image.Image, frames: int, turn: float, still: int) -> list[tuple[torch.Tensor, torch.Tensor, float]] | None:
        seen = []
        for frame, box, degrees in camera(image, rng, frames, 300, turn, still):
            face = the_face(detector.detect(frame), box)
            if face is not None:
                _, _, probs = analyzer.distributions(frame, [face])
                seen.append((probs["yaw_pitch"][0], probs["roll"][0], degrees))
        return seen if len(seen) > frames * 0.8 else None

    def angles(joint: torch.Tensor, roll: torch.Tensor) -> list[float]:
        (mean,), _ = joint_moments(joint[None], pose.bins, pose.bins)
        return [*mean.tolist(), float(expectation(roll[None], pose.bins)[0])]

    def filtered(seen, motion: float) -> np.ndarray:
        f = PoseFilter(pose.step, motion)
        return np.array([angles(*f.update(j, r)) for j, r, _ in seen])

    still_raw, still_f = [], {m: [] for m in MOTIONS}
    lags: dict[float, list] = {m: [] for m in MOTIONS}
    turn = 3.0
    for r in chosen:
        image = Image.open(r.path).convert("RGB")
        seen = run(image, 30, 0.0, 0)
        if seen:
            still_raw.append(jitter(np.array([angles(j, ro) for j, ro, _ in seen])))
            for m in MOTIONS:
                still_f[m].append(jitter(filtered(seen, m)))
        seen = run(image, 30, turn, 10)
        if seen:
            raw = np.array([angles(j, ro) for j, ro, _ in seen])[:, 2]
            ramp = np.array([d for *_, d in seen]) > 5 * turn  # well into the turn
            for m in MOTIONS:
                lags[m].append(float(np.mean((filtered(seen, m)[:, 2] - raw)[ramp]) / turn))
    default = analyzer.motion
    print(f"\n## Head pose: {len(chosen)} AFLW2000 faces (|yaw| < 30), 30 frames each\n")
    print(f"Still faces ({len(still_raw)} clips): jitter of yaw, pitch and roll (degrees, frame to frame, their mean) "
          f"raw {np.mean(still_raw):.2f}. Turning faces ({len(lags[default])} clips, {turn:g} degrees a frame): "
          "frames by which the filtered roll trails the frame's own.\n")
    print("| filter motion (degrees a frame) | still jitter | times lower than raw | lag on a turn (frames) |")
    print("|---|---|---|---|")
    for m in MOTIONS:
        j = np.mean(still_f[m])
        print(f"| {m}{' (default)' if m == default else ''} | {j:.3f} | {np.mean(still_raw) / j:.1f}x | {np.mean(lags[m]):.1f} |")


def speed(data: str | None) -> None:
    rows = read_utkface(data, "test")
    rng = np.random.default_rng(0)
    chip = Image.open(rows[0].path).convert("RGB")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "one_face.mp4"
        with VideoWriter(clip, 30, SIZE) as w:
            for frame, _, _ in camera(chip, rng, 60, 220):
                w.write(frame)
        print(f"\n## Speed: a 60-frame 640x480 one-face clip, decode + detect + age + pose + fusion ({machine('cpu')})\n")
        print("| backend | detection | frames per second | ms per frame |")
        print("|---|---|---|---|")
        detector = FaceDetector()
        for backend in ("torch", "onnx"):
            age, pose = AgePredictor(None, "cpu", backend), PosePredictor(None, "cpu", backend)
            for every in (1, 3, 5):
                analyzer = ClipAnalyzer(age, pose, detector, every=every)
                _, frames = read_video(clip)
                first = next(frames)
                analyzer.frame(first.image)  # warm-up, untimed
                start, n = time.perf_counter(), 0
                for f in frames:
                    analyzer.frame(f.image)
                    n += 1
                dt = time.perf_counter() - start
                print(f"| {backend} | every {'frame' if every == 1 else f'{every} frames'} | {n / dt:.1f} | {1000 * dt / n:.0f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="test", choices=["test", "val"], help="UTKFace split of the age clips (choose on val)")
    ap.add_argument("--clips", type=int, default=100, help="age clips (pose clips: half as many)")
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--only", choices=["age", "pose", "speed"], help="run one part only")
    args = ap.parse_args(argv)
    if args.only in (None, "age"):
        age_clips(args.split, args.clips, args.data, args.seed)
    if args.only in (None, "pose"):
        pose_clips(max(1, args.clips // 2), args.data, args.seed)
    if args.only in (None, "speed") and not args.skip_speed:
        speed(args.data)


if __name__ == "__main__":
    main()
