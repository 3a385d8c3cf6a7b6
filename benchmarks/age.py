"""Age model, in domain and out of it: ``python -m benchmarks.age [--weights W] [--held-out RUN ...]``.

Prints, for the shipped model (or ``--weights``):

- UTKFace test: MAE, CS(5) and 80%-interval coverage on every test chip, and through the
  full detect-and-align path on ``--detect`` of them (each chip pasted on a grey canvas, and the
  chip alone: a tight portrait whose aligned crop leaves the photo);
- degraded val: each val chip once through real codecs (JPEG 30-90, and with probability
  1/2 each grayscale, a 2-4x downscale, a blur; seeded), next to clean val, grayscale val,
  sharpened val (Pillow's unsharp mask, seeded), small faces (40 px and enlarged back), relit
  val (overexposed, dark, lit from one side or low contrast; seeded), smoothed val (skin
  smoothed with its edges kept, as beauty filters and makeup do; seeded), scanned val (an old
  print: toned toward sepia, faded, film grain; seeded) and framed val (flat strips along the
  chip's sides, as a plain backdrop or a padded photo puts them at a crop's edge; seeded);
- the age-balanced MAE: the mean of the MAEs of nine age groups (0-2, 3-9, 10-19, ..., 60-69,
  70+; like one of the in-the-wild collections) weighed alike, on test and on each val set:
  UTKFace's crowded twenties hide errors on the old and the young that a balanced set shows;
- encoding consistency: for ``--consistency`` val chips, the spread (max - min, years) of the
  predicted mean over PNG, JPEG q95/q75/q50, WebP and grayscale versions;
- the astronaut example (scikit-image's PNG, an adult in her thirties) through detection, as the
  PNG it ships as and re-encoded;
- faces unlike UTKFace's, without ages: AFLW's val photos (Flickr, in the wild) through detection,
  their 80% intervals against clean val's at the same predicted age: the interval should widen
  on faces unlike the training ones, and ``widen`` measures by how much;
- UTKFace weighted toward in-the-wild faces: test and val with each face weighed by how much more
  often its kind occurs among AFLW's faces (a classifier of the model's features, UTKFace train
  against AFLW train: ``toward_wild``), MAE, coverage, width and bias by age, the nearest thing to
  in-the-wild ages the shared data holds;
- unusual faces: with the model's novelty bank (``dldl_core.novelty``), the share of each set's
  faces flagged as unlike the training faces and, where ages are known, their MAE and coverage
  against the rest's;
- held-out groups: for each ``--held-out`` run (trained with ``--hold-out-race``), MAE and
  coverage on the group it never saw (its train and val rows; never test) against its own
  in-domain val. ``--record`` keeps those rows in ``benchmarks/records/`` so later runs print
  them without the run folders (marked "record").

``--validation W [W ...]`` prints only the table that chooses between candidate weights, one row
each, without reading test: the val sets' MAE and coverage, the age-balanced MAE, the encoding
spread, the gap between a face's reading and its mirror image's (on the same chips), clean val
weighted toward in-the-wild faces (weights from ``--weights``' features, the same for every
candidate) and the AFLW width ratio (``--wild`` photos, all faces and those read 20-39).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.timing import machine, per_face_ms
from dldl_core.data import read_pose, read_utkface
from dldl_core.degrade import ENCODINGS, degraded_copy, encode, framed_copy, relit_copy, scanned_copy, sharpened_copy, smoothed_copy
from dldl_core.examples import example_photos
from dldl_core.faces import Face, FaceDetector
from dldl_core.metrics import auroc, balanced_mae, cumulative_score, interval_coverage, mae
from dldl_core.paths import shipped_weights
from dldl_core.predict import AgePredictor, FacePipeline
from dldl_core.shift import DomainClassifier, effective_size, weighted_mean

RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}
AGE_GROUPS = ((0, 12), (13, 19), (20, 39), (40, 59), (60, 116))
BALANCED_STARTS = (0, 3, 10, 20, 30, 40, 50, 60, 70)  # nine groups 0-2 .. 70+, weighed alike
SET_HEADER = "| set | faces | MAE (years) | CS(5) | 80% interval coverage |\n|---|---|---|---|---|"
RECORDS = Path(__file__).parent / "records"


def _scores(out: list[dict], true: list[float]) -> tuple[float, float, float]:
    p, t = torch.tensor([o["mean"] for o in out]), torch.tensor(true)
    return mae(p, t), cumulative_score(p, t, 5), interval_coverage(torch.tensor([o["interval"] for o in out]), t)


def _balanced(out: list[dict], true: list[float]) -> float:
    return balanced_mae(torch.tensor([o["mean"] for o in out]), torch.tensor(true), BALANCED_STARTS)


def _row(name: str, out: list[dict], true: list[float]) -> str:
    m, cs, cov = _scores(out, true)
    return f"| {name} | {len(true)} | {m:.2f} | {cs:.3f} | {cov:.3f} |"


def _best_age(faces: list[dict]) -> dict:
    """The age readout of the most confident face the pipeline found."""
    return max(faces, key=lambda f: f["score"])["age"]


def _chips(rows) -> list[Image.Image]:
    return [Image.open(r.path).convert("RGB") for r in rows]


def _evenly(chips: list[Image.Image], n: int) -> list[Image.Image]:
    """``n`` evenly spaced chips (val's rows run by age)."""
    return chips[:: max(1, len(chips) // n)][:n]


def _encoding_means(age: AgePredictor, sub: list[Image.Image]) -> np.ndarray:
    """(len(ENCODINGS), len(sub)) predicted means of each chip after each of ``ENCODINGS``; the
    first, PNG, is lossless: the chips as they are."""
    return np.array([[o["mean"] for o in age.predict_crops([encode(c, e) for c in sub])] for e in ENCODINGS])


def _spread(means: np.ndarray) -> np.ndarray:
    """Spread (max - min, years) of each chip's predicted mean over the encodings of ``_encoding_means``."""
    return means.max(0) - means.min(0)


def _mirror_gap(age: AgePredictor, sub: list[Image.Image], as_is: np.ndarray) -> np.ndarray:
    """Gap (years) between each chip's predicted mean ``as_is`` and its mirror image's: a face reads
    its age, not its side; read without a mirrored test-time view the gap is two to three times
    as large (docs/models/age.md, "A third network")."""
    mirrored = [o["mean"] for o in age.predict_crops([c.transpose(Image.FLIP_LEFT_RIGHT) for c in sub])]
    return np.abs(as_is - np.array(mirrored))


def _small(chip: Image.Image, rng: np.random.Generator) -> Image.Image:
    return chip.resize((40, 40), Image.BILINEAR).resize(chip.size, Image.BILINEAR)


def _gray(chip: Image.Image, rng: np.random.Generator) -> Image.Image:
    return chip.convert("L").convert("RGB")


# Each val set is made chip by chip from clean val; the seeded ones draw from one stream in this order.
VAL_SETS = {
    "clean": None,
    "degraded (real codecs, seeded)": degraded_copy,
    "grayscale": _gray,
    "sharpened (unsharp mask, seeded)": sharpened_copy,
    "small (40 px)": _small,
    "relit (seeded)": relit_copy,
    "smoothed (seeded)": smoothed_copy,
    "scanned print (seeded)": scanned_copy,
    "framed (flat borders, seeded)": framed_copy,
}


def _val_sets(chips: list[Image.Image]) -> Iterator[tuple[str, list[Image.Image]]]:
    """``VAL_SETS`` one at a time (each about 0.3 GB): clean val, a seeded degraded copy through
    real codecs, grayscale val, a seeded sharpened copy (the camera-style sharpening of phone and
    studio photos, which UTKFace's soft chips lack), small faces: each chip at 40 pixels a side and
    enlarged back, as a face across a family photo is cut (smaller than the degraded copy's 2-4x
    downscale), a seeded relit copy (a flash's overexposure, a dark room, light from one side, a
    faded print: UTKFace's chips are evenly lit), a seeded smoothed copy (skin smoothed with its
    edges kept, as phones' noise reduction, beauty filters and makeup do), a seeded copy as an
    old print, scanned (toned toward sepia, faded, film grain: family albums) and a seeded framed
    copy (strips of 1-5% of the side along one to four sides in one flat colour: such a frame of 4 px
    in 200 read val a year younger, the middle-aged two years, children older)."""
    rng = np.random.default_rng(0)
    for name, make in VAL_SETS.items():
        yield name, chips if make is None else [make(c, rng) for c in chips]


def _unusual_row(name: str, out: list[dict], true: list[float] | None = None) -> str:
    """A row of the unusual faces' table: how many of ``out`` the novelty bank flags and, with ages,
    how the flagged faces' MAE and coverage compare with the rest's."""
    flag = np.array([o["unusual"] for o in out])
    row = f"| {name} | {len(out)} | {flag.mean():.1%} |"
    if true is None or not flag.any() or flag.all():
        return row + " - | - |"
    flagged, rest = (_scores([out[i] for i in np.flatnonzero(f)], [true[i] for i in np.flatnonzero(f)]) for f in (flag, ~flag))
    return row + f" {flagged[0]:.2f} / {rest[0]:.2f} | {flagged[2]:.3f} / {rest[2]:.3f} |"


def _widths(out: list[dict]) -> np.ndarray:
    return np.array([o["interval"][1] - o["interval"][0] for o in out], float)


def _temperature(temperature: float, widening: float) -> str:
    """A readout's temperature as printed: with a widening, each face's grows with its novelty z."""
    return f"{temperature} x exp({widening} z)" if widening else f"{temperature}"


def widen(wild: list[dict], val: list[dict]) -> list[tuple[str, int, float, float]]:
    """(band of predicted age, faces, mean 80% interval width of ``wild``, of ``val``) per band of
    ``AGE_GROUPS``, and a last row "all" whose val width is that of val's band for each wild face
    (matched on the predicted age, so that a set of older-looking faces does not widen by itself)."""
    starts = [lo for lo, _ in AGE_GROUPS]
    w_band, v_band = (np.digitize([o["mean"] for o in x], starts) - 1 for x in (wild, val))
    w_width, v_width = _widths(wild), _widths(val)
    rows, matched = [], np.full(len(wild), np.nan)
    for band, (lo, hi) in enumerate(AGE_GROUPS):
        w, v = w_band == band, v_band == band
        if w.any() and v.any():
            matched[w] = v_width[v].mean()
            rows.append((f"{lo}-{hi}", int(w.sum()), float(w_width[w].mean()), float(v_width[v].mean())))
    k = np.isfinite(matched)
    return rows + [("all", int(k.sum()), float(w_width[k].mean()), float(matched[k].mean()))]


def _detected(rows: list, n: int, device: str | torch.device) -> list[tuple[Image.Image, list[Face]]]:
    """Up to ``n`` evenly spaced photos of ``rows`` (AFLW's), each with the faces detection finds on
    it (photos where none is found are left out): detected once, then read by any age model."""
    detector = FaceDetector(device=device)
    out = []
    for r in rows[:: max(1, len(rows) // n)][:n]:
        with Image.open(r.path) as im:
            image = im.convert("RGB")
        faces = detector.detect(image)
        if faces:
            out.append((image, faces))
    return out


def _wild(age: AgePredictor, photos: list[tuple[Image.Image, list[Face]]]) -> list[dict]:
    """Age readouts of the most confident face of each photo of ``_detected``, as the pipeline reads it."""
    pipe = FacePipeline(age)
    return [_best_age(pipe.describe(image, faces)) for image, faces in photos]


def _best_crops(age: AgePredictor, photos: list[tuple[Image.Image, list[Face]]]) -> list[Image.Image]:
    """The aligned crop of the most confident face of each photo of ``_detected``."""
    return [age.crop(image, max(faces, key=lambda f: f.score)) for image, faces in photos]


def _features(age: AgePredictor, crops: list[Image.Image]) -> torch.Tensor:
    return age.read(crops, features=True)[1]


def toward_wild(age: AgePredictor, val: torch.Tensor, wild_val: list[tuple[Image.Image, list[Face]]],
                data: str | None, n: int) -> tuple[DomainClassifier, torch.Tensor, str]:
    """Importance weights toward AFLW's in-the-wild faces (``dldl_core.shift``): a classifier of
    ``age``'s features of ``n`` UTKFace train chips against the faces of up to ``n`` AFLW train
    photos (through detection); the weights of the val faces whose features are ``val``; and a
    line that says how well it tells them from ``wild_val``'s faces (AUC) and what the weighted
    val is worth (effective faces)."""
    train = read_utkface(data, "train")
    source = _features(age, _chips(train[:: max(1, len(train) // n)][:n]))
    target = _features(age, _best_crops(age, _detected(read_pose("aflw", data, "train"), n, age.device)))
    clf = DomainClassifier.fit(source, target)
    wild = clf.logit(_features(age, _best_crops(age, wild_val)))
    score = auroc(torch.cat([clf.logit(val), wild]), torch.cat([torch.zeros(len(val)), torch.ones(len(wild))]))
    weights = clf.weights(val)
    note = (f"a classifier of {len(source)} UTKFace train chips against {len(target)} AFLW train faces, "
            f"AUC {score:.3f} on val against {len(wild)} AFLW val faces; val weighted is worth {effective_size(weights):.0f} faces")
    return clf, weights, note


def _weighted(out: list[dict], true: list[float], weights: torch.Tensor) -> tuple[float, float, float]:
    """MAE, 80% coverage and mean 80% interval width with each face weighed by ``weights``."""
    t = torch.tensor(true)
    iv = torch.tensor([o["interval"] for o in out], dtype=torch.float)
    err = (torch.tensor([o["mean"] for o in out]) - t).abs()
    inside = ((t >= iv[:, 0]) & (t <= iv[:, 1])).float()
    return weighted_mean(err, weights), weighted_mean(inside, weights), weighted_mean(iv[:, 1] - iv[:, 0], weights)


def _weighted_bias(out: list[dict], true: list[float], weights: torch.Tensor) -> list[float]:
    """The weighted mean of predicted - true age in each of ``AGE_GROUPS`` (by true age)."""
    t = torch.tensor(true)
    err = torch.tensor([o["mean"] for o in out]) - t
    return [weighted_mean(err[k], weights[k]) for k in ((t >= lo) & (t <= hi) for lo, hi in AGE_GROUPS)]


def validation(weights: list[str], data: str | None, device: str, n_spread: int, n_wild: int, reference: str) -> str:
    """The table that chooses between candidate models: val only (``VAL_SETS``, the age-balanced
    MAE, the encoding spread, the mirror gap) and, with ``n_wild`` AFLW photos, clean val weighted toward
    in-the-wild faces (``toward_wild`` on the ``reference`` model's features, the same weights for
    every candidate) and the in-the-wild width ratio (``widen``: all faces, and those read 20-39),
    which a candidate must not lower (a model surer of in-the-wild faces relative to UTKFace's,
    where the reports found intervals too narrow already); test is never read."""
    val = read_utkface(data, "val")
    chips, true = _chips(val), [float(r.age) for r in val]
    models = [AgePredictor(w, device) for w in weights]
    cells: list[list[str]] = [[] for _ in models]
    balanced: list[list[float]] = [[] for _ in models]
    clean: list[list[dict]] = [[] for _ in models]
    clean_feats: list[torch.Tensor | None] = [None] * len(models)
    for name, images in _val_sets(chips):
        for i, age in enumerate(models):
            probs, feats = age.read(images, features=name == "clean")
            out = age.readouts(probs, feats)
            m, _, cov = _scores(out, true)
            cells[i].append(f"{m:.2f} / {cov:.3f}")
            balanced[i].append(_balanced(out, true))
            if name == "clean":
                clean[i], clean_feats[i] = out, feats
    lines = [f"UTKFace val ({len(true)} faces; spread on {n_spread}): MAE / 80% coverage", ""]
    if n_wild:
        photos = _detected(read_pose("aflw", data, "val"), n_wild, device)
        # the reference is usually a candidate too: its model and clean val features are at hand
        same = [i for i, w in enumerate(weights) if Path(w).resolve() == Path(reference).resolve()]
        ref = models[same[0]] if same else AgePredictor(reference, device)
        ref_feats = clean_feats[same[0]] if same else _features(ref, chips)
        _, toward, note = toward_wild(ref, ref_feats, photos, data, n_wild)
        lines = [lines[0] + f"; clean val weighted toward in-the-wild faces ({note}); "
                 f"AFLW width ratio on {len(photos)} AFLW val photos' faces", ""]
    lines += ["| weights | T / blur | " + " | ".join(VAL_SETS) + " | age-balanced MAE clean / degraded | spread median / p90 | mirror gap median / p90 |"
              + (" val weighted toward the wild | AFLW width ratio all / 20-39 |" if n_wild else ""),
              "|---|---|" + "---|" * len(VAL_SETS) + "---|---|---|" + ("---|---|" if n_wild else "")]
    sub = _evenly(chips, n_spread)
    for w, age, row, bal, out in zip(weights, models, cells, balanced, clean):
        means = _encoding_means(age, sub)
        spread, mirror = _spread(means), _mirror_gap(age, sub, means[0])
        line = (f"| {w} | {_temperature(age.temperature, age.widening)} / {age.readout.blur} | " + " | ".join(row)
                + f" | {bal[0]:.2f} / {bal[1]:.2f} | {np.median(spread):.2f} / {np.percentile(spread, 90):.2f}"
                + f" | {np.median(mirror):.2f} / {np.percentile(mirror, 90):.2f} |")
        if n_wild:
            m, cov, _ = _weighted(out, true, toward)
            ratio = {band: a / v for band, _, a, v in widen(_wild(age, photos), out)}
            line += f" {m:.2f} / {cov:.3f} | {ratio['all']:.2f} / {ratio.get('20-39', float('nan')):.2f} |"
        lines.append(line)
    return "\n".join(lines)


def held_out(weights: str, data: str | None, device: str) -> dict:
    """A leave-one-group-out run's scores: the held-out group (train + val rows) vs its in-domain val."""
    age = AgePredictor(weights, device)
    race = int(age.card.training["config"]["hold_out_race"])
    group = [r for r in read_utkface(data) if r.race == race and r.split in ("train", "val")]
    inside = read_utkface(data, "val", without_race=race)
    g_mae, _, g_cov = _scores(age.predict_crops(_chips(group)), [r.age for r in group])
    v_mae, _, v_cov = _scores(age.predict_crops(_chips(inside)), [r.age for r in inside])
    return {"race": race, "faces": len(group), "mae": g_mae, "coverage": g_cov, "val_mae": v_mae, "val_coverage": v_cov,
            "command": age.card.training["command"], "temperature": age.temperature, "widening": age.widening,
            "blur": age.readout.blur}


def _held_out_rows(args: argparse.Namespace) -> list[dict]:
    """The ``--held-out`` runs scored (and, with ``--record``, kept in benchmarks/records/)."""
    held = [held_out(w, args.data, args.device) for w in args.held_out]
    if args.record:
        RECORDS.mkdir(exist_ok=True)
        for h in held:
            (RECORDS / f"age_held_out_{h['race']}.json").write_text(json.dumps(h, indent=2) + "\n")
    return held


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(shipped_weights("age")))
    ap.add_argument("--data", default=None, help="data folder (default $DLDL_DATA or ../shared/data)")
    ap.add_argument("--detect", type=int, default=300, help="test chips to also run through detection (0 = none)")
    ap.add_argument("--consistency", type=int, default=500, help="val chips for the encoding-consistency spread (0 = none)")
    ap.add_argument("--wild", type=int, default=2000, help="AFLW val photos (no ages) for the interval widths in the wild, and as many AFLW train photos and UTKFace train chips for the weights toward them, also with --validation (0 = none)")
    ap.add_argument("--held-out", nargs="*", default=[], help="weights of runs trained with --hold-out-race")
    ap.add_argument("--record", action="store_true", help="write the held-out rows to benchmarks/records/age_held_out_<race>.json")
    ap.add_argument("--held-out-only", action="store_true", help="only score the --held-out runs (with --record, to keep their rows)")
    ap.add_argument("--validation", nargs="*", metavar="WEIGHTS",
                    help=f"only the validation table (val {', '.join(VAL_SETS)}; the age-balanced MAE, the encoding spread, the mirror gap) "
                         "and the AFLW width ratio (--wild) for these weights (default: the shipped ones)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.validation is not None:
        print(validation(args.validation or [args.weights], args.data, args.device, args.consistency, args.wild, args.weights))
        return
    if args.held_out_only:
        for h in _held_out_rows(args):
            print(json.dumps(h))
        return

    age = AgePredictor(args.weights, args.device)
    print(f"Age ({machine(age.device)})")
    print(f"weights: {os.path.relpath(args.weights)} (trained {age.card.training['date']}, tta_flip={age.tta_flip}, "
          f"T={_temperature(age.temperature, age.widening)}, blur={age.readout.blur})")
    print()
    print(SET_HEADER)

    rows = read_utkface(args.data, "test")
    chips, true = _chips(rows), [float(r.age) for r in rows]
    probs, test_feats = age.read(chips, features=True)
    out = age.readouts(probs, test_feats)
    print(_row("UTKFace test, chips (--crops)", out, true))
    det_ms: list[float] = []
    if args.detect:
        pipe = FacePipeline(age)
        sub = list(range(0, len(rows), max(1, len(rows) // args.detect)))[: args.detect]
        found, t_sub, missed = [], [], 0
        tight, t_tight = [], []  # the chip alone as the photo: a portrait whose face fills it, the crop leaving it
        for i in sub:
            canvas = Image.new("RGB", (480, 400), (128, 128, 128))
            canvas.paste(chips[i], (140, 100))
            t0 = time.perf_counter()
            faces = pipe.analyze(canvas)
            det_ms.append((time.perf_counter() - t0) * 1000)
            alone = pipe.analyze(chips[i])
            if alone:
                tight.append(_best_age(alone)), t_tight.append(true[i])
            if not faces:
                missed += 1
                continue
            found.append(_best_age(faces)), t_sub.append(true[i])
        print(_row(f"UTKFace test, detect + align ({missed} of {len(sub)} missed)", found, t_sub))
        print(_row(f"UTKFace test, the chip alone as a tight portrait ({len(sub) - len(tight)} missed)", tight, t_tight))
        print(_row("UTKFace test, chips, same subset", [out[i] for i in sub], [true[i] for i in sub]))

    print()
    print("UTKFace test by true age: bias is the mean of predicted - true (regression to the middle shows as + for the young, - for the old)")
    print()
    print("| true age | faces | MAE | bias | 80% coverage |")
    print("|---|---|---|---|---|")
    for lo, hi in AGE_GROUPS:
        idx = [i for i, t in enumerate(true) if lo <= t <= hi]
        m, _, cov = _scores([out[i] for i in idx], [true[i] for i in idx])
        bias = sum(out[i]["mean"] - true[i] for i in idx) / len(idx)
        print(f"| {lo}-{hi} | {len(idx)} | {m:.2f} | {bias:+.2f} | {cov:.3f} |")
    print()
    print(SET_HEADER)

    val = read_utkface(args.data, "val")
    val_chips, val_true = _chips(val), [float(r.age) for r in val]
    balanced = {"UTKFace test, chips": _balanced(out, true)}
    unusual = [_unusual_row("UTKFace test, chips", out, true)] if age.novelty is not None else []
    clean_val: list[dict] = []
    for name, images in _val_sets(val_chips):
        probs, feats = age.read(images, features=True)
        val_out = age.readouts(probs, feats)
        if name == "clean":
            clean_val, val_feats = val_out, feats
        print(_row(f"UTKFace val, {name}", val_out, val_true))
        balanced[f"UTKFace val, {name}"] = _balanced(val_out, val_true)
        if age.novelty is not None:
            unusual.append(_unusual_row(f"UTKFace val, {name}", val_out, val_true))
    print()
    print("Age-balanced MAE: nine age groups (0-2, 3-9, 10-19, ..., 60-69, 70+) weighed alike")
    print()
    print("| set | age-balanced MAE |")
    print("|---|---|")
    for name, value in balanced.items():
        print(f"| {name} | {value:.2f} |")

    if args.wild:
        photos = _detected(read_pose("aflw", args.data, "val"), args.wild, age.device)
        wild = _wild(age, photos)
        print()
        print(f"Faces unlike UTKFace's: {len(wild)} AFLW val photos (in the wild, no ages) through detection; "
              "their mean 80% interval width against clean val's, by predicted age")
        print()
        print("| predicted age | AFLW faces | AFLW width | val width | ratio |")
        print("|---|---|---|---|---|")
        for band, n, w, v in widen(wild, clean_val):
            print(f"| {band} | {n} | {w:.1f} | {v:.1f} | {w / v:.2f} |")
        if age.novelty is not None:
            unusual.append(_unusual_row("AFLW val photos (no ages)", wild))
        clf, toward, note = toward_wild(age, val_feats, photos, args.data, args.wild)
        toward_test = clf.weights(test_feats)
        print()
        print(f"UTKFace weighted toward in-the-wild faces: each face weighed by how much more often its kind occurs "
              f"among AFLW's ({note}; test weighted is worth {effective_size(toward_test):.0f} faces); bias by true age, weighted")
        print()
        print("| set | MAE plain / weighted | 80% coverage plain / weighted | 80% width plain / weighted | "
              + " | ".join(f"bias {lo}-{hi}" for lo, hi in AGE_GROUPS) + " |")
        print("|---|---|---|---|" + "---|" * len(AGE_GROUPS))
        for name, o, t, wt in (("UTKFace test, chips", out, true, toward_test), ("UTKFace val, clean", clean_val, val_true, toward)):
            plain, weighted = _weighted(o, t, torch.ones(len(t))), _weighted(o, t, wt)
            print(f"| {name} | " + " | ".join(f"{a:.{d}f} / {b:.{d}f}" for a, b, d in zip(plain, weighted, (2, 3, 1)))
                  + " | " + " | ".join(f"{b:+.2f}" for b in _weighted_bias(o, t, wt)) + " |")
    if unusual:
        print()
        print(f"Unusual faces: novelty (distance to the nearest training faces) beyond clean val's 99th percentile ({age.novelty.flag:.2f})")
        print()
        print("| set | faces | unusual | MAE unusual / rest | 80% coverage unusual / rest |")
        print("|---|---|---|---|---|")
        print("\n".join(unusual))

    held = _held_out_rows(args)
    shown = {h["race"] for h in held}
    for path in sorted(RECORDS.glob("age_held_out_*.json")):
        h = json.loads(path.read_text())
        if h["race"] not in shown:
            held.append({**h, "from_record": True})
    if held:
        print()
        print("Leave one group out (trained without the group; its train + val rows scored, never test)")
        print()
        print("| held-out group | T / blur | faces | MAE | 80% coverage | in-domain val MAE | in-domain val coverage | MAE gap |")
        print("|---|---|---|---|---|---|---|---|")
        for h in held:
            name = RACES[h["race"]] + (" (record)" if h.get("from_record") else "")
            print(f"| {name} | {_temperature(h['temperature'], h.get('widening', 0.0))} / {h['blur']} | {h['faces']} | {h['mae']:.2f} | {h['coverage']:.3f} | {h['val_mae']:.2f} | {h['val_coverage']:.3f} | {h['mae'] - h['val_mae']:+.2f} |")

    if args.consistency:
        spread = _spread(_encoding_means(age, _evenly(val_chips, args.consistency)))
        print()
        print(f"Encoding consistency on {len(spread)} val chips ({', '.join(ENCODINGS)}): spread of the predicted mean, years")
        print()
        print("| median | 90th percentile | max |")
        print("|---|---|---|")
        print(f"| {np.median(spread):.2f} | {np.percentile(spread, 90):.2f} | {spread.max():.2f} |")

    photo = example_photos().get("astronaut")
    if photo is not None:
        pipe = FacePipeline(age)
        print()
        print("The astronaut example (an adult in her thirties), through detection")
        print()
        print("| encoding | mean | 80% interval |")
        print("|---|---|---|")
        original = Image.open(photo).convert("RGB")
        for e in ("png", "jpeg92", "jpeg75", "webp"):
            faces = pipe.analyze(encode(original, e))
            a = _best_age(faces) if faces else None
            print(f"| {e} | {a['mean']:.1f} | {a['interval'][0]:.0f}-{a['interval'][1]:.0f} |" if a else f"| {e} | no face | |")

    batched_ms, single_ms = per_face_ms(age.predict_crops, chips)
    print()
    print("| speed | ms |")
    print("|---|---|")
    print(f"| age model, per face in batches of 64 | {batched_ms:.1f} |")
    print(f"| age model, one face (median) | {single_ms:.1f} |")
    if det_ms:
        print(f"| full pipeline on a 480x400 photo, one face (median) | {statistics.median(det_ms):.1f} |")


if __name__ == "__main__":
    main()
