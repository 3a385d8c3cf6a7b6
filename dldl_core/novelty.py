"""How unlike the training faces a face is, so a reading can say when not to trust it.

A face's novelty is the distance of its backbone features to its ``k``-th nearest training face
(the k-nearest-neighbour out-of-distribution score on L2-normalised features), in units of
clean val's spread: 0 is val's median face, 1 its 90th percentile. The age model's errors grow
with it on every val set, and faces beyond val's 99th percentile (``flag``) err two to three
times as much as the rest; photos unlike UTKFace's reach it far more often (docs/models/age.md,
"How unlike the training faces").

The bank is a fixed sample of training faces, clean and degraded as training saw them, projected
onto their top principal directions to keep the file small (``python -m train.novelty``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint import WeightsError

TENSORS = ("mean", "proj", "bank", "scale")


def backbones(model: Any) -> list[nn.Module]:
    """The backbone of each trained network of a model, an ensemble's (nested ones too) in member
    order; for an exported model (``export.OnnxModel``) its stand-ins, none where the export has no
    features. A member without a backbone of ours (``dlib_age.DlibAgeNet``) has no features here:
    the bank describes the faces the trained networks were trained on."""
    if not isinstance(model, nn.Module):
        return list(getattr(model, "backbones", []))
    if hasattr(model, "members"):
        return [b for m in model.members for b in backbones(m)]
    return [model.backbone] if hasattr(model, "backbone") else []


@contextmanager
def captured_features(model: Any) -> Iterator[list[list[torch.Tensor]]]:
    """While open, every forward pass of ``model`` in this thread appends each backbone's pooled
    features to the yielded lists (one list per backbone), so features come with the logits at no
    extra cost. Passes from other threads (a server reading two photos at once) are not captured."""
    seen: list[list[torch.Tensor]] = [[] for _ in backbones(model)]
    owner = threading.get_ident()

    def keep(out: torch.Tensor, into: list[torch.Tensor]) -> None:
        if threading.get_ident() == owner:
            into.append(out.float())

    hooks = [b.register_forward_hook(lambda _m, _i, out, s=s: keep(out, s)) for b, s in zip(backbones(model), seen)]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def embed(features: list[torch.Tensor], views: int = 1) -> torch.Tensor:
    """(N, D) face features from each backbone's (views x N, d) outputs: each backbone's
    features averaged over a face's views (stacked view after view, as ``age_logits`` reads
    them), L2-normalised and concatenated, so every backbone counts alike."""
    parts = [f.reshape(views, -1, f.shape[1]).mean(0) for f in features]
    parts = [nn.functional.normalize(p, dim=1) for p in parts]
    return torch.cat(parts, 1) / len(parts) ** 0.5


class Novelty:
    """The novelty score of face features (``embed``): distance to the ``k``-th nearest bank face,
    ``(d - median) / (p90 - median)`` of clean val's distances; ``flag`` is val's 99th percentile
    in those units."""

    def __init__(self, tensors: dict[str, torch.Tensor], k: int, flag: float):
        self.mean, self.proj, self.bank, self.scale = (tensors[n].float() for n in TENSORS)
        self.k, self.flag = k, flag

    def to(self, device: torch.device) -> Novelty:
        self.mean, self.proj, self.bank, self.scale = (t.to(device) for t in (self.mean, self.proj, self.bank, self.scale))
        return self

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        q = (features.to(self.bank.device, torch.float32) - self.mean) @ self.proj
        return torch.cdist(q, self.bank).topk(self.k, dim=1, largest=False).values[:, -1]

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (self.distance(features) - self.scale[0]) / self.scale[1]

    def readouts(self, features: torch.Tensor) -> list[dict[str, Any]]:
        """Each face's ``novelty`` (rounded) and whether it is ``unusual`` (beyond ``flag``)."""
        return [{"novelty": round(z, 2), "unusual": z > self.flag} for z in self(features).tolist()]

    @classmethod
    def fit(cls, train: torch.Tensor, val: torch.Tensor, dims: int = 128, k: int = 10, flag_quantile: float = 0.99) -> Novelty:
        """A bank from ``train`` features projected on their top ``dims`` principal directions,
        scaled by the ``val`` features' distances to it."""
        mean = train.mean(0)
        proj = torch.linalg.svd(train - mean, full_matrices=False).Vh[:dims].T.contiguous()
        out = cls({"mean": mean, "proj": proj, "bank": (train - mean) @ proj, "scale": torch.ones(2)}, k, 0.0)
        d = out.distance(val)
        median = d.median()
        out.scale = torch.stack([median, torch.quantile(d, 0.9) - median])
        out.flag = float(torch.quantile(out(val), flag_quantile))
        return out

    def save(self, path: str | Path, metadata: dict[str, str]) -> None:
        """Write the bank (float16) with ``metadata``; under a temporary name first, as checkpoints are."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tensors = dict(zip(TENSORS, (self.mean, self.proj, self.bank.half(), self.scale)))
        save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  {**metadata, "k": str(self.k), "flag": f"{self.flag:.4f}"})
        tmp.chmod(0o644)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Novelty:
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            return cls(tensors, int(meta["k"]), float(meta["flag"]))
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise WeightsError(f"novelty file {path} is corrupt or incomplete: {exc}") from exc


def novelty_path(weights: str | Path) -> Path:
    """Where a model's novelty bank sits: beside its weights, ``age.safetensors`` -> ``age.novelty.safetensors``."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".novelty.safetensors")
