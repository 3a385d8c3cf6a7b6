"""Age model on the UTKFace test split: ``python -m benchmarks.age [--weights W] [--detect N]``.

Prints MAE, CS(5), 80%-interval coverage and speed for the shipped model on
every test chip, and the same accuracy through the full detect-and-align path
on N of them (each chip pasted on a grey canvas, as a photo would hold it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from PIL import Image

from benchmarks.timing import machine, per_face_ms
from dldl_core.data import read_utkface
from dldl_core.metrics import cumulative_score, interval_coverage, mae
from dldl_core.predict import WEIGHTS_DIR, AgePredictor, FacePipeline


def _row(name: str, pred: list[float], iv: list[list[float]], true: list[float]) -> str:
    p, t = torch.tensor(pred), torch.tensor(true)
    return f"| {name} | {len(true)} | {mae(p, t):.2f} | {cumulative_score(p, t, 5):.3f} | {interval_coverage(torch.tensor(iv), t):.3f} |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", default=str(WEIGHTS_DIR / "age.safetensors"))
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--detect", type=int, default=300, help="test chips to also run through detection (0 = none)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    rows = read_utkface(args.data, "test")
    age = AgePredictor(args.weights, args.device)
    chips = [Image.open(r.path).convert("RGB") for r in rows]
    true = [float(r.age) for r in rows]

    out = age.predict_crops(chips)
    batched_ms, single_ms = per_face_ms(age.predict_crops, chips)

    print(f"Age on UTKFace test ({machine(age.device)})")
    print(f"weights: {os.path.relpath(args.weights)} (trained {age.card['training']['date']}, tta_flip={age.tta_flip}, T={age.temperature})")
    print()
    print("| path | faces | MAE (years) | CS(5) | 80% interval coverage |")
    print("|---|---|---|---|---|")
    print(_row("chips (--crops)", [o["mean"] for o in out], [o["interval"] for o in out], true))
    if args.detect:
        pipe = FacePipeline(age)
        step = max(1, len(rows) // args.detect)
        sub = list(range(0, len(rows), step))[: args.detect]
        pred, iv, t_sub, missed, det_ms = [], [], [], 0, []
        for i in sub:
            canvas = Image.new("RGB", (480, 400), (128, 128, 128))
            canvas.paste(chips[i], (140, 100))
            t0 = time.perf_counter()
            faces = pipe.analyze(canvas)
            det_ms.append((time.perf_counter() - t0) * 1000)
            if not faces:
                missed += 1
                continue
            f = max(faces, key=lambda f: f["score"])
            pred.append(f["age"]["mean"]), iv.append(f["age"]["interval"]), t_sub.append(true[i])
        print(_row(f"detect + align ({missed} of {len(sub)} missed)", pred, iv, t_sub))
        same = [true[i] for i in sub]
        print(_row("chips, same subset", [out[i]["mean"] for i in sub], [out[i]["interval"] for i in sub], same))
    print()
    print("| speed | ms |")
    print("|---|---|")
    print(f"| age model, per face in batches of 64 | {batched_ms:.1f} |")
    print(f"| age model, one face (median) | {single_ms:.1f} |")
    if args.detect:
        print(f"| full pipeline on a 480x400 photo, one face (median) | {statistics.median(det_ms):.1f} |")


if __name__ == "__main__":
    main()
