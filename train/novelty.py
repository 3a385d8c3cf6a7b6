"""Fit an age model's novelty bank: ``python -m train.novelty [--weights W] [--faces N]``.

Reads ``N`` training faces (a seeded sample of UTKFace train), each clean and once degraded
through real codecs as training degraded them, through the model; keeps their features on
their top principal directions as the bank (``dldl_core.novelty``), scales distances by clean
val's and writes the bank beside the weights (``age.safetensors`` -> ``age.novelty.safetensors``),
where ``AgePredictor`` finds it, and describes it in the card's ``novelty`` section. Nothing is
trained; test is never read.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys

import numpy as np
import torch

from dldl_core.checkpoint import card_path, read_card
from dldl_core.data import read_utkface
from dldl_core.degrade import degraded_copy
from dldl_core.images import load_image
from dldl_core.novelty import Novelty, novelty_path
from dldl_core.paths import shipped_weights
from dldl_core.predict import AgePredictor


def build(weights: str, data: str | None, faces: int, dims: int, k: int, device: str) -> Novelty:
    """The bank of ``faces`` train faces (each clean and degraded) and its scale on clean val."""
    age = AgePredictor(weights, device)
    train = read_utkface(data, "train")
    rng = np.random.default_rng(1)
    rows = [train[i] for i in rng.choice(len(train), faces, replace=False)]
    chips = [load_image(r.path) for r in rows]
    bank = torch.cat([age.read(chips, features=True)[1], age.read([degraded_copy(c, rng) for c in chips], features=True)[1]])
    val = age.read([load_image(r.path) for r in read_utkface(data, "val")], features=True)[1]
    return Novelty.fit(bank, val, dims, k)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.novelty", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=None, help="age weights; default the shipped ones")
    p.add_argument("--data", default=None, help="data folder; default $DLDL_DATA or ../shared/data")
    p.add_argument("--faces", type=int, default=2000, help="training faces in the bank (each clean and degraded)")
    p.add_argument("--dims", type=int, default=128, help="principal directions kept")
    p.add_argument("--k", type=int, default=10, help="the neighbour whose distance is the score")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    weights = args.weights or str(shipped_weights("age"))
    novelty = build(weights, args.data, args.faces, args.dims, args.k, args.device)
    out = novelty_path(weights)
    command = shlex.join(["python", "-m", "train.novelty", *(sys.argv[1:] if argv is None else argv)])
    date = datetime.date.today().isoformat()
    novelty.save(out, {"command": command, "date": date})
    card = read_card(weights)
    card.extra["novelty"] = {
        "file": out.name, "command": command, "date": date, "k": novelty.k, "dims": int(novelty.proj.shape[1]),
        "bank": f"{args.faces} UTKFace train faces (seeded sample), each clean and once degraded through real codecs",
        "flag": round(novelty.flag, 4),
        "means": "distance to the k-th nearest bank face; 0 = clean val's median, 1 = its 90th percentile; "
                 "a face beyond flag (clean val's 99th percentile) is reported unusual",
    }
    card_path(weights).write_text(json.dumps(card.to_json(), indent=2) + "\n")
    print(f"wrote {out}: {len(novelty.bank)} faces x {novelty.proj.shape[1]} dims, flag at novelty {novelty.flag:.2f}")


if __name__ == "__main__":
    main()
