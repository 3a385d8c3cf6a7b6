"""Train the age model on UTKFace: ``python -m train.age [--epochs N ...]``.

Each age becomes a discretised Gaussian over 0..age_max years; the network
learns it with KL (plus DLDL-v2's expectation L1 when ``lam`` > 0). Trains on
``split == train``, keeps the epoch with the best validation MAE, fits a
softmax temperature on validation so that the credible intervals are
calibrated, and reports the test split once at the end.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from dldl_core.age import age_probs, image_age_logits
from dldl_core.crops import aligned_crop
from dldl_core.data import cached_array, data_root, decode_resized, image_cache, read_pose, read_utkface
from dldl_core.degrade import degraded_copy, luma, random_degrade
from dldl_core.distributions import bin_grid, density_weights, gaussian_1d, nearest_bin
from dldl_core.faces import CHIP_SIZE, FaceDetector, chip_landmarks, measure_template
from dldl_core.images import resize_square
from dldl_core.losses import dldl_loss, js_consistency
from dldl_core.metrics import cumulative_score, interval_coverage, mae
from dldl_core.readouts import credible_interval, expectation
from dldl_core.transforms import color_jitter, normalize, random_affine, random_erase, random_frame
from train.engine import Task, TrainConfig, fit, input_card, opt, parse_config


@dataclass
class AgeConfig(TrainConfig):
    """Train the DLDL age model on UTKFace."""

    out: str = opt("runs/age", "run folder: last.pt, the best weights and their card")
    epochs: int = opt(12, "training epochs")
    image_size: int = opt(128, "network input side in pixels")
    age_max: int = opt(100, "bins 0..age_max years, step 1; older ages fall in the last bin")
    sigma: float = opt(1.5, "spread (years) of the label distribution at age 0")
    sigma_slope: float = opt(0.05, "growth of the spread per year of age: sigma + sigma_slope * age (older ages are more ambiguous)")
    lam: float = opt(1.0, "weight of DLDL-v2's expectation L1 term (0 = plain DLDL)")
    augment: bool = opt(True, "random flip, rotation, scale, shift, brightness and contrast while training")
    degrade: float = opt(1.0, "strength of random photo degradations while training (JPEG, low resolution, blur, noise, "
                         "grayscale, white balance, gamma; dldl_core.degrade); 0 = none")
    sharpen: float = opt(0.0, "with degrade: the probability that a face not blurred is sharpened (an unsharp mask, as cameras "
                         "and phones sharpen photos); 0 = never")
    lighting: float = opt(0.0, "with degrade: the probability that a face is relit (light from one side, an exposure of "
                          "0.35-2x clipped at white, lower contrast; dldl_core.degrade.relight); 0 = never")
    smooth: float = opt(0.0, "with degrade: the probability that a face not blurred is smoothed by an edge-preserving filter "
                        "(phone noise reduction, beauty filters, makeup: skin texture fades, edges stay; "
                        "dldl_core.degrade.bilateral); 0 = never")
    scan: float = opt(0.0, "with degrade: the probability that a face looks like an old print, scanned (toned toward sepia, "
                      "faded, blacks lifted, film grain; dldl_core.degrade.scanned_print); 0 = never")
    consistency: float = opt(0.0, "weight of a Jensen-Shannon term between two differently degraded views of each face "
                             "(half the batch's faces, two views each); 0 = off")
    consistency_gray: float = opt(0.0, "with consistency: the probability that a pair's second view is also turned grayscale "
                                  "(color and gray views of one face then have to agree)")
    consistency_framing: bool = opt(False, "with consistency: each view of a pair gets its own flip, rotation, scale and shift "
                                    "(the face framed as two detections would frame it) instead of sharing one")
    erase: float = opt(0.0, "random erasing: the probability that a training face gets a rectangle of 2-20% of its area "
                       "painted in one colour (an occluder); with consistency each view of a pair is erased on its own; 0 = off")
    frame: float = opt(0.0, "flat borders: the probability that a training face has strips of 1-12% of its side along one to "
                       "four sides made one colour or its edge repeated (plain backdrops, padded photos, crops that leave "
                       "the photo); with consistency each view of a pair is framed on its own; 0 = off")
    mixup: float = opt(0.0, "mixup: blend each face with another of the batch by a weight drawn from Beta(a, a) and train on "
                       "the same blend of their label distributions; a = this value (0.2 is gentle), 0 = off")
    balance: float = opt(0.0, "weigh each face's loss by the density of its age among the training faces (smoothed by a "
                         "Gaussian of 2 years) to the power -balance, against regression to UTKFace's crowded middle ages; "
                         "0 = off, 0.5 = inverse square root")
    teacher: str = opt("", "age weights (.safetensors) that label in-the-wild faces without ages for training: AFLW's train "
                       "faces (pose/aflw), aligned like the chips, each learned as the teacher's distribution of it "
                       "(noisy-student self-training: the student sees them degraded); '' = none")
    teacher_temperature: float = opt(0.0, "with teacher: the temperature its distributions are read at; 0 = the teacher's "
                                     "own calibrated one, 1 = its untempered output (wider where that temperature is below 1)")
    teacher_max_yaw: float = opt(45.0, "with teacher: leave out AFLW faces turned further than this (degrees of yaw, AFLW's label)")
    hold_out_race: int = opt(-1, "leave this UTKFace race group (0-4) out of train and val, for out-of-domain validation; -1 = none")
    calibrate_on: str = opt("val+degraded", "the temperature's fitting set: val, or val plus a degraded copy of it", ("val", "val+degraded"))
    coverage_band: str = opt("", "'LO,HI': the temperature with the lowest NLL among those whose interval covers between LO "
                             "and HI of each fitting set (val; its degraded copy), e.g. 0.78,0.84; '' = the lowest NLL alone")
    tta_flip: bool = opt(True, "average the distribution of the face and its mirror image")
    tta_gray: bool = opt(False, "see the second test-time view (the mirror image) in grayscale")
    blur: float = opt(0.0, "read every face through a Gaussian blur of this sigma (input pixels) at evaluation, calibration "
                      "and in the card's readout (not in training); 0 = none")
    level: float = opt(0.8, "credible interval mass")
    template_chips: int = opt(500, "training chips used to measure the landmark template")


def coverage_band(text: str) -> tuple[float, float] | None:
    """``--coverage-band``'s 'LO,HI' as two fractions, or None when empty."""
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--coverage-band takes two fractions as LO,HI (e.g. 0.78,0.84), not {text!r}") from None
    if not 0 <= lo < hi <= 1:
        raise SystemExit(f"--coverage-band needs 0 <= LO < HI <= 1, got {text!r}")
    return lo, hi


def age_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float | torch.Tensor, level: float) -> dict[str, float]:
    """MAE, CS(5), the ``level`` interval's coverage and the NLL of ages ``labels`` read from
    ``logits`` at ``temperature`` (one, or each face's); ages past the last bin count in it."""
    bins = torch.arange(logits.shape[1], dtype=torch.float32)
    probs = age_probs(logits, temperature)
    pred = expectation(probs, bins)
    iv = credible_interval(probs, bins, level)
    nll = -torch.log(probs.gather(1, labels.clamp(max=len(bins) - 1).long()[:, None]) + 1e-12).mean()
    return {
        "score": mae(pred, labels),
        "mae": mae(pred, labels),
        "cs5": cumulative_score(pred, labels, 5),
        "coverage": interval_coverage(iv, labels),
        "nll": float(nll),
    }


# steps of 2%: a pool whose logits are scaled down (an ensemble nested in one) is fitted as finely
TEMPERATURES = [round(float(t), 3) for t in np.geomspace(0.3, 6.0, 152)]


def fit_temperature(scores: Callable[[float], list[dict[str, float]]], band: tuple[float, float] | None) -> float:
    """The temperature of ``TEMPERATURES`` with the lowest NLL over the fitting sets, ``scores(t)``
    giving each set's ``age_metrics`` at t (the same faces in every set, val and its degraded copy,
    so their mean NLL is the pooled one). With ``band`` (LO, HI) only temperatures whose interval
    covers within it on every set compete: the NLL alone leaves the in-domain intervals wider than
    their nominal mass."""
    table = {t: scores(t) for t in TEMPERATURES}
    allowed = [t for t in TEMPERATURES if band is None or all(band[0] <= s["coverage"] <= band[1] for s in table[t])]
    if not allowed:
        print(f"warning: no temperature covers {band[0]}-{band[1]} of every fitting set; fitting by NLL alone", file=sys.stderr)
    best = min(allowed or TEMPERATURES, key=lambda t: float(np.mean([s["nll"] for s in table[t]])))
    if best in (TEMPERATURES[0], TEMPERATURES[-1]):
        print(f"warning: the fitted temperature {best} is at the edge of its search grid", file=sys.stderr)
    return best


class AgeTask(Task):
    name = "age"

    def __init__(self, config: AgeConfig):
        if config.mixup > 0 and config.consistency > 0:
            raise SystemExit("choose --mixup or --consistency: mixing would break the consistency term's pairs of views")
        if config.teacher and (config.mixup > 0 or config.balance > 0):
            raise SystemExit("--teacher's faces have distributions, not ages: it does not combine with --mixup or --balance")
        if config.teacher_temperature < 0:
            raise SystemExit(f"--teacher-temperature must be positive (or 0 for the teacher's own), got {config.teacher_temperature}")
        self.config = config
        self.band = coverage_band(config.coverage_band)
        self.bins = bin_grid(0, config.age_max, 1)
        self.template: dict[str, Any] = {}
        self.temperature = 1.0
        self.age_weight: torch.Tensor | None = None
        self.taught = torch.zeros(0, len(self.bins))  # the teacher's distribution of each in-the-wild face

    def heads(self) -> dict[str, Any]:
        return {"age": len(self.bins)}

    def load_split(self, split: str, limit: int = 0) -> tuple[np.ndarray, torch.Tensor]:
        rows = read_utkface(self.config.data, split, without_race=self.config.hold_out_race)
        rows = rows[:limit] if limit else rows
        images = image_cache([r.path for r in rows], self.config.image_size, self.config.cache_dir)
        ages = torch.tensor([r.age for r in rows], dtype=torch.float32)
        if split != "train" or not self.config.teacher:
            return images, ages
        wild, self.taught = self._taught_faces(limit)
        # an in-the-wild face's label is -1 - its row in self.taught (ages are never negative)
        return np.concatenate([images, wild]), torch.cat([ages, -1 - torch.arange(len(wild), dtype=torch.float32)])

    def _taught_faces(self, limit: int) -> tuple[np.ndarray, torch.Tensor]:
        """AFLW's train faces aligned onto the teacher's template like UTKFace's chips, at the input
        size (faces MTCNN misses left out), and the teacher's distribution of each; both cached."""
        from dldl_core.predict import AgePredictor

        c = self.config
        rows = [r for r in read_pose("aflw", c.data, "train") if abs(r.pose[0]) <= c.teacher_max_yaw]
        rows = rows[: limit or None]
        paths = [r.path for r in rows]
        landmarks = cached_array("landmarks_aflw", "\n".join(map(str, paths)), lambda: chip_landmarks(paths), c.cache_dir)
        found = [i for i in range(len(rows)) if np.isfinite(landmarks[i]).all()]
        teacher = AgePredictor(c.teacher, c.device)
        if c.teacher_temperature > 0:
            teacher.temperature = c.teacher_temperature
        if len(teacher.bins) != len(self.bins):
            raise SystemExit(f"the teacher {c.teacher} reads {len(teacher.bins)} age bins, this model {len(self.bins)}")

        def align(i: int) -> Image.Image:
            with Image.open(paths[i]) as im:
                return aligned_crop(im.convert("RGB"), landmarks[i].tolist(), teacher.template, teacher.crop_size)

        desc = "\n".join(str(paths[i]) for i in found) + f"|{teacher.template}|{teacher.crop_size}|edge-filled"
        crops = cached_array(f"images_aflw_{teacher.crop_size}", desc, lambda: np.stack([np.asarray(align(i)) for i in found]), c.cache_dir)
        with open(c.teacher, "rb") as f:
            teacher_key = hashlib.sha1(f.read()).hexdigest()
        readout = f"|T{teacher.temperature}" + (f"|w{teacher.widening}" if teacher.widening else "")  # widened by novelty
        taught = cached_array("teacher_age", desc + teacher_key + readout,
                              lambda: teacher.probs([Image.fromarray(np.asarray(x)) for x in crops]).numpy(), c.cache_dir)
        images = np.stack([np.asarray(resize_square(Image.fromarray(np.asarray(x)), c.image_size)) for x in crops])
        return images, torch.from_numpy(np.array(taught, dtype=np.float32))

    def statistics(self, images: np.ndarray, labels: torch.Tensor) -> None:
        if self.config.balance > 0:
            self.age_weight = density_weights(labels, self.bins, self.config.balance)

    def prepare(self, images: np.ndarray) -> None:
        rows = read_utkface(self.config.data, "train")
        step = max(1, len(rows) // self.config.template_chips)
        chips = np.stack([decode_resized(r.path, CHIP_SIZE) for r in rows[::step][: self.config.template_chips]])
        self.template = measure_template(chips, FaceDetector())

    def extra_state(self) -> dict[str, Any]:
        return {"template": self.template}

    def load_extra(self, extra: dict[str, Any]) -> None:
        self.template = extra["template"]

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``consistency`` every other face of the batch comes back twice, as two views that share
        their geometry (unless ``consistency_framing``) and differ in their degradations (the loss
        pairs the halves). Every other face, not the first half: the engine sorts a batch's rows, and
        UTKFace's rows run by age."""
        c = self.config
        if not c.augment:
            return normalize(images), labels
        raw = images.permute(0, 3, 1, 2).float().div_(255)
        x = random_affine(raw)
        if c.consistency > 0:
            second = random_affine(raw[::2]) if c.consistency_framing else x[::2]
            x, labels = torch.cat([x[::2], second]), labels[::2].repeat(2)
        if c.erase > 0:
            x = random_erase(x, c.erase)
        if c.frame > 0:
            x = random_frame(x, c.frame)
        if c.degrade > 0:
            x = random_degrade(x, c.degrade, c.sharpen, c.lighting, c.smooth, c.scan)
        if c.consistency > 0 and c.consistency_gray > 0:
            second = torch.arange(len(x), device=x.device) >= len(x) // 2
            turn = second & (torch.rand(len(x), device=x.device) < c.consistency_gray)
            x[turn] = luma(x[turn]).expand(-1, 3, -1, -1)
        if c.mixup > 0:
            x, labels = self._mix(x, labels)
        return color_jitter(normalize(x.mul_(255))), labels

    def _mix(self, x: torch.Tensor, ages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup: each face blended with a random other one of the batch; the labels become rows of
        (age, other age, weight) so that the loss can blend the two label distributions alike."""
        other = torch.randperm(len(x), device=x.device)
        w = torch.distributions.Beta(self.config.mixup, self.config.mixup).sample((len(x),)).to(x.device)
        w = torch.maximum(w, 1 - w)  # the first face always dominates: the blend stays a blend of *it*
        x = x * w[:, None, None, None] + x[other] * (1 - w[:, None, None, None])
        return x, torch.stack([ages, ages[other], w], 1)

    def _target(self, ages: torch.Tensor) -> torch.Tensor:
        return gaussian_1d(ages, self.bins, self.config.sigma + self.config.sigma_slope * ages.clamp(min=0))

    def _taught(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Label distributions and ages of a batch that may hold in-the-wild faces (negative labels):
        theirs are the teacher's distribution and its mean."""
        target = self._target(labels.clamp(min=0))
        wild = labels < 0
        if wild.any():
            self.taught = self.taught.to(labels.device)  # moved once, on the first batch
            taught = self.taught[(-1 - labels[wild]).long()]
            target[wild] = taught
            labels = labels.clone()
            labels[wild] = expectation(taught, self.bins.to(labels.device))
        return target, labels

    def loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2:  # mixup rows: (age, other age, weight)
            a, b, w = labels.unbind(1)
            target = w[:, None] * self._target(a) + (1 - w[:, None]) * self._target(b)
            labels = w * a + (1 - w) * b
        else:
            target, labels = self._taught(labels)
        weight = None
        if self.age_weight is not None:
            self.age_weight = self.age_weight.to(labels.device)  # moved once, on the first batch
            weight = self.age_weight[nearest_bin(labels, self.bins)]
        loss = dldl_loss(outputs["age"], target, self.bins, labels, self.config.lam, weight)
        if self.config.consistency > 0:
            first, second = outputs["age"].chunk(2)
            loss = loss + self.config.consistency * js_consistency(first, second)
        return loss

    def logits(self, model: nn.Module, images: np.ndarray, device: torch.device) -> torch.Tensor:
        return image_age_logits(model, images, device, self.config.tta_flip, self.config.tta_gray, blur=self.config.blur)

    def evaluate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> dict[str, float]:
        return age_metrics(self.logits(model, images, device), labels, self.temperature, self.config.level)

    def calibrate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> None:
        """Temperature scaling: the softmax temperature with the lowest NLL on val (and, with
        ``calibrate_on = val+degraded``, on a seeded degraded copy of val through real codecs too,
        so the intervals stay honest on photos worse than the chips). With ``coverage_band`` only
        temperatures whose interval covers within the band of each of those sets compete: the NLL
        alone leaves the in-domain intervals wider than their nominal mass."""
        sets = [(self.logits(model, images, device), labels)]
        if self.config.calibrate_on == "val+degraded":
            rng = np.random.default_rng(0)
            worse = np.stack([np.asarray(degraded_copy(Image.fromarray(np.asarray(im)), rng)) for im in images])
            sets.append((self.logits(model, worse, device), labels))
        self.temperature = fit_temperature(lambda t: [age_metrics(x, y, t, self.config.level) for x, y in sets], self.band)

    def card(self) -> dict[str, Any]:
        c = self.config
        return {
            "input": input_card(
                c.image_size,
                {
                    "kind": "aligned",
                    "size": CHIP_SIZE,
                    "description": "similarity transform of the 5 MTCNN landmarks onto the template "
                    "(fractions of the crop side), as UTKFace's aligned 200x200 chips are framed",
                    "template": self.template.get("landmarks"),
                    "template_measurement": {k: v for k, v in self.template.items() if k != "landmarks"},
                },
            ),
            "bins": {"age": {"start": 0, "stop": c.age_max, "step": 1}},
            "readout": {"temperature": self.temperature, "tta_flip": c.tta_flip, "tta_gray": c.tta_gray, "blur": c.blur,
                        "level": c.level},
            "data": {
                "dataset": "UTKFace (aligned and cropped), ../shared/data/age/utkface",
                "root": str(data_root(c.data)),
                "train": "split == train" + (f", race != {c.hold_out_race}" if c.hold_out_race >= 0 else "")
                + (f"; and {len(self.taught)} AFLW train faces (pose/aflw, |yaw| <= {c.teacher_max_yaw}) without ages, each "
                   f"learned as the distribution {c.teacher} gives it"
                   + (f" at temperature {c.teacher_temperature}" if c.teacher_temperature > 0 else "") if c.teacher else ""),
                "select": "split == val" + (f", race != {c.hold_out_race}" if c.hold_out_race >= 0 else "")
                + " (best epoch by MAE; temperature by NLL on " + c.calibrate_on
                + (f", its interval covering {c.coverage_band} of each" if c.coverage_band else "") + ")",
                "test": "split == test, evaluated once at the end",
            },
        }


def main(argv: list[str] | None = None) -> None:
    fit(AgeTask(parse_config(AgeConfig, argv, prog="python -m train.age")))


if __name__ == "__main__":
    main()
