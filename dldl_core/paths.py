"""Where things are: the project, its shipped weights, the data; and which device "auto" means."""

from __future__ import annotations

import os
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = PROJECT_ROOT / "weights"


def shipped_weights(task: str) -> Path:
    """The shipped weights of ``task`` (age, pose, multilabel, seg); the card sits beside them."""
    return WEIGHTS_DIR / f"{task}.safetensors"


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: ``path``, else ``$DLDL_DATA``, else ``../shared/data``."""
    if path:
        return Path(path)
    if os.environ.get("DLDL_DATA"):
        return Path(os.environ["DLDL_DATA"])
    return PROJECT_ROOT.parent / "shared" / "data"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means CUDA when a GPU is present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
