"""Fit an age model's novelty bank: ``python -m train.novelty [--weights W] [--faces N]``.

Reads ``N`` training faces (a seeded sample of UTKFace train), each clean and once degraded
through real codecs as training degraded them, through the model; keeps their features on
their top principal directions as the bank (``dldl_core.novelty``), scales distances by clean
val's and writes the bank beside the weights (``age.safetensors`` -> ``age.novelty.safetensors``),
where ``AgePredictor`` finds it, and describes it in the card's ``novelty`` section.

With ``--widening B`` (the default 0.1) each face's temperature becomes the card's times
exp(B x its novelty) (``dldl_core.age.face_temperatures``), and the temperature is fitted again
with it, as ``train.age`` fits it: the lowest NLL on clean val and its seeded degraded copy among
the temperatures whose interval covers ``--coverage-band`` of each. Typical faces' intervals then
narrow to the nominal mass and unusual faces' widen (docs/models/age.md, "Wider where the face is
unusual"). The card's metrics are then read again at that readout, test too where ``train.age``
read it (its figures at its own temperature stay in the novelty section as ``metrics_before``),
so the card says what the shipped readout measures. A model trained without a UTKFace group
(``--hold-out-race``) keeps it out of the bank, val and test here too. Nothing is trained, and
nothing is chosen on test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys

import numpy as np
import torch

from dldl_core.age import NOVELTY_RANGE, face_temperatures
from dldl_core.checkpoint import card_path, read_card
from dldl_core.data import read_utkface
from dldl_core.degrade import degraded_copy
from dldl_core.images import load_image
from dldl_core.novelty import Novelty, novelty_path
from dldl_core.paths import shipped_weights
from dldl_core.predict import AgePredictor
from train.age import age_metrics, coverage_band, fit_temperature


def build(age: AgePredictor, data: str | None, faces: int, dims: int, k: int, hold_out_race: int, val: torch.Tensor) -> Novelty:
    """The bank of ``faces`` train faces (each clean and degraded), scaled by clean val's features ``val``."""
    train = read_utkface(data, "train", without_race=hold_out_race)
    rng = np.random.default_rng(1)
    rows = [train[i] for i in rng.choice(len(train), faces, replace=False)]
    chips = [load_image(r.path) for r in rows]
    bank = torch.cat([age.logits(chips, features=True)[1], age.logits([degraded_copy(c, rng) for c in chips], features=True)[1]])
    return Novelty.fit(bank, val, dims, k)


def refit_temperature(novelty: Novelty, sets: list[tuple[torch.Tensor, torch.Tensor]], ages: torch.Tensor, widening: float,
                      band: tuple[float, float] | None, level: float) -> float:
    """The temperature fitted with each face's widened by its novelty, on ``sets`` of (logits,
    features) of the faces aged ``ages`` (clean val and its degraded copy), as ``train.age`` fits it."""
    read = [(logits, novelty(feats).cpu()) for logits, feats in sets]
    return fit_temperature(lambda t: [age_metrics(x, ages, face_temperatures(t, widening, z), level) for x, z in read], band)


def read_metrics(age: AgePredictor, logits: torch.Tensor, features: torch.Tensor, ages: torch.Tensor) -> dict[str, float]:
    """``train.age``'s metrics of faces aged ``ages`` whose untempered logits and features are these,
    each face at the temperature ``age`` reads it at (``AgePredictor.temperatures``)."""
    return age_metrics(logits, ages, age.temperatures(features), age.level)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.novelty", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=None, help="age weights; default the shipped ones")
    p.add_argument("--data", default=None, help="data folder; default $DLDL_DATA or ../shared/data")
    p.add_argument("--faces", type=int, default=2000, help="training faces in the bank (each clean and degraded)")
    p.add_argument("--dims", type=int, default=128, help="principal directions kept")
    p.add_argument("--k", type=int, default=10, help="the neighbour whose distance is the score")
    p.add_argument("--device", default="auto")
    p.add_argument("--widening", type=float, default=0.1,
                   help="each face's temperature times exp(WIDENING x its novelty), the temperature fitted again with it; 0 = the card's "
                        "temperature for every face (docs/models/age.md, 'Wider where the face is unusual')")
    p.add_argument("--coverage-band", default="0.78,0.84",
                   help="with --widening: 'LO,HI', the temperature with the lowest NLL among those whose interval covers between "
                        "LO and HI of clean val and of its degraded copy; '' = the lowest NLL alone")
    args = p.parse_args(argv)
    if args.widening < 0:
        raise SystemExit(f"--widening must be 0 or more, got {args.widening}")
    band = coverage_band(args.coverage_band)
    weights = args.weights or str(shipped_weights("age"))
    card = read_card(weights)
    hold_out_race = int(card.training.get("config", {}).get("hold_out_race", -1))
    age = AgePredictor(weights, args.device)
    rows = read_utkface(args.data, "val", without_race=hold_out_race)
    chips = [load_image(r.path) for r in rows]
    val = [age.logits(chips, features=True)]
    novelty = build(age, args.data, args.faces, args.dims, args.k, hold_out_race, val[0][1])
    out = novelty_path(weights)
    command = shlex.join(["python", "-m", "train.novelty", *(sys.argv[1:] if argv is None else argv)])
    date = datetime.date.today().isoformat()
    novelty.save(out, {"command": command, "date": date})
    before = card.extra.get("novelty", {}).get("temperature_before", card.readout.temperature)  # train.age's own fit
    metrics_before = card.extra.get("novelty", {}).get("metrics_before", card.metrics)  # read at that temperature
    people = f"UTKFace train faces outside race group {hold_out_race}" if hold_out_race >= 0 else "UTKFace train faces"
    card.extra["novelty"] = {
        "file": out.name, "command": command, "date": date, "k": novelty.k, "dims": int(novelty.proj.shape[1]),
        "bank": f"{args.faces} {people} (seeded sample), each clean and once degraded through real codecs",
        "flag": round(novelty.flag, 4),
        "means": "distance to the k-th nearest bank face; 0 = clean val's median, 1 = its 90th percentile; "
                 "a face beyond flag (clean val's 99th percentile) is reported unusual",
    }
    card.readout.temperature, card.readout.widening, card.metrics = before, args.widening, metrics_before
    if args.widening > 0:
        rng = np.random.default_rng(0)
        val.append(age.logits([degraded_copy(c, rng) for c in chips], features=True))
        ages = torch.tensor([r.age for r in rows])
        card.readout.temperature = refit_temperature(novelty, val, ages, args.widening, band, age.level)
        # the card's metrics, read again as the predictor now reads: test too where train.age read it
        # (once, after its choices; nothing here is chosen on it)
        age.novelty, age.temperature, age.widening = novelty, card.readout.temperature, args.widening
        card.metrics = {"val": read_metrics(age, *val[0], ages)}
        if "test" in metrics_before:
            test = read_utkface(args.data, "test", without_race=hold_out_race)
            card.metrics["test"] = read_metrics(age, *age.logits([load_image(r.path) for r in test], features=True),
                                                torch.tensor([r.age for r in test]))
        card.extra["novelty"]["temperature_before"] = before
        card.extra["novelty"]["metrics_before"] = metrics_before
        card.extra["novelty"]["widening"] = (
            f"each face's temperature is readout.temperature x exp(readout.widening x its novelty clipped to {list(NOVELTY_RANGE)}), "
            "the temperature fitted with it by the lowest NLL on clean val and its seeded degraded copy"
            + (f" among those covering {args.coverage_band} of each" if band else "")
            + f"; the card's metrics are read at it (train.age's temperature alone: {before}, its metrics in metrics_before)")
    card_path(weights).write_text(json.dumps(card.to_json(), indent=2) + "\n")
    print(f"wrote {out}: {len(novelty.bank)} faces x {novelty.proj.shape[1]} dims, flag at novelty {novelty.flag:.2f}"
          + (f"; temperature {card.readout.temperature}, widened by exp({args.widening} x novelty)" if args.widening > 0 else ""))


if __name__ == "__main__":
    main()
