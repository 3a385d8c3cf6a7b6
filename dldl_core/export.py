"""ONNX export of a shipped model, for runtimes without PyTorch (onnxruntime, TensorRT, OpenVINO...).

The exported graph takes the normalised image batch (``image``, N x 3 x H x W, the model card's
mean and std) and returns the predicted *distributions* (softmax already applied), one output per
head: (N, bins) or (N, a, b) for a joint grid; (N, C, H, W) per-pixel distributions for
segmentation, whose height and width may vary. Batch norm is folded into the convolutions first.
The model card is written beside the file: it says how to crop and normalise, and the bins. The
age model's card also widens each face's interval with its novelty: its export then carries the
backbones' features as outputs too, and its novelty bank sits beside it (``export_onnx``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

from .checkpoint import card_path, load_checkpoint
from .models import fold_batchnorm, output_distributions
from .novelty import backbones, captured_features, novelty_path

# Part of the cached exports' names: bump it when what ``cached_export`` writes changes, so that
# exports cached before are made again rather than read with outputs missing.
EXPORT_FORMAT = "features"


class _Outputs(nn.Module):
    """The model's heads as a tuple in head order: distributions (a softmax over each head's
    distribution) or, with ``logits``, the raw logits; with ``features``, each backbone's pooled
    features after them (``features_0``, ``features_1``, ...: what a novelty bank reads)."""

    def __init__(self, model: nn.Module, heads: list[str], logits: bool, features: bool = False):
        super().__init__()
        self.model, self.heads, self.logits, self.features = model, heads, logits, features

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with captured_features(self.model) if self.features else contextlib.nullcontext([]) as seen:
            out = self.model(image)
        out = out if self.logits else output_distributions(out)
        return tuple(out[k] for k in self.heads) + tuple(s[0] for s in seen)


def export_onnx(weights: str | Path, out: str | Path, logits: bool = False, features: bool = False, beside: bool = True) -> Path:
    """Write ``out`` (one self-contained .onnx file) and, with ``beside``, the model card beside it;
    returns ``out``. With ``logits`` the outputs are the heads' logits (what the predictors read)
    instead; with ``features`` each backbone's pooled features follow them (a segmentation model
    has none to add). A card whose intervals widen with each face's novelty (age's
    ``readout.widening``) always gets the features, and the novelty bank beside the card: its
    readout needs both."""
    model, card = load_checkpoint(weights, "cpu")
    model = fold_batchnorm(model)
    per_pixel = card.model.get("architecture") == "segmentation"
    bank = novelty_path(weights)
    widened = card.readout.widening > 0 and bank.is_file()
    features = (features or widened) and not per_pixel
    heads = list(card.model["heads"])
    names = heads + ([f"features_{i}" for i in range(len(backbones(model)))] if features else [])
    size = card.input.size
    w, h = (size, size) if isinstance(size, int) else size
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    if per_pixel:
        dims |= {2: torch.export.Dim("height", min=32, max=8192), 3: torch.export.Dim("width", min=32, max=8192)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _Outputs(model, heads, logits, features).eval(),
        (torch.zeros(2, 3, h, w),),
        str(out),
        input_names=["image"],
        output_names=names,
        dynamic_shapes={"image": dims},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    if beside:
        shutil.copy(card_path(weights), out.with_suffix(".json"))
        if widened:
            shutil.copy(bank, novelty_path(out))
    return out


def cached_export(weights: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The logits export of ``weights`` (with each backbone's features, but for segmentation),
    made once and kept in ``cache_dir`` (default ``~/.cache/dldl/onnx``) under a name that hashes
    the weights file and ``EXPORT_FORMAT``."""
    digest = hashlib.sha1(Path(weights).read_bytes() + EXPORT_FORMAT.encode()).hexdigest()[:16]
    path = Path(cache_dir or Path.home() / ".cache" / "dldl" / "onnx") / f"{Path(weights).stem}-{digest}.onnx"
    if not path.is_file():
        # a pause of 8-15 s the first time: say why, on stderr (standard output may be JSON lines)
        print(f"exporting {Path(weights).name} for onnxruntime, once (kept in {path.parent})", file=sys.stderr, flush=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports each stage
            export_onnx(weights, tmp, logits=True, features=True, beside=False)  # the predictor reads the card and bank beside the weights
        tmp.replace(path)
    return path


class OnnxModel:
    """An exported model in an onnxruntime session (CPU): normalised batch -> outputs by head name
    (as ``model(x)`` gives them in PyTorch). An export with features (``cached_export``) hands
    them to forward hooks on ``backbones`` instead of returning them: one ``nn.Identity`` per
    backbone, run on its features, so ``novelty.captured_features`` reads them as from PyTorch."""

    def __init__(self, path: str | Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Idle onnxruntime threads otherwise spin for a while after each run, taking the cores
        # from PyTorch work in between (face detection), which then runs at half speed.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.backbones = [nn.Identity() for n in self.names if n.startswith("features_")]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.detach().cpu().contiguous().numpy()
        out = {n: torch.from_numpy(v) for n, v in zip(self.names, self.session.run(None, {"image": x}))}
        for i, tap in enumerate(self.backbones):
            tap(out.pop(f"features_{i}"))
        return out

