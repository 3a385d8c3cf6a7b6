"""Dataset access: where the data lives, the UTKFace table, and a decoded-image cache.

Data never lives in the repository. It is found through an explicit path, the
``DLDL_DATA`` variable, or ``../shared/data`` beside the project.
"""

from __future__ import annotations

import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: ``path``, else ``$DLDL_DATA``, else ``../shared/data``."""
    if path:
        return Path(path)
    if os.environ.get("DLDL_DATA"):
        return Path(os.environ["DLDL_DATA"])
    return PROJECT_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class AgeRecord:
    path: Path
    age: int
    split: str


def read_utkface(root: str | os.PathLike | None = None, split: str | None = None) -> list[AgeRecord]:
    """Rows of ``age/utkface/labels.csv`` (columns path, age, split), optionally one split."""
    folder = data_root(root) / "age" / "utkface"
    table = folder / "labels.csv"
    if not table.is_file():
        raise FileNotFoundError(f"UTKFace table not found at {table}; set --data or DLDL_DATA")
    with table.open(newline="") as f:
        rows = [AgeRecord(folder / r["path"], int(r["age"]), r["split"]) for r in csv.DictReader(f)]
    return [r for r in rows if split is None or r.split == split]


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """RGB at ``size`` x ``size``: the one resize that training and inference both use."""
    image = image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR)


def decode_resized(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(resize_square(im, size), dtype=np.uint8)


def image_cache(paths: list[Path], size: int, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """All images decoded and resized to ``size`` as one uint8 array (N, size, size, 3).

    Decoding JPEGs every epoch would cost more than the network on a small
    CPU, so the array is built once and kept in ``cache_dir`` (default
    ``~/.cache/dldl``) under a name that hashes the file list and size.
    """
    key = hashlib.sha1(("\n".join(map(str, paths)) + f"|{size}").encode()).hexdigest()[:16]
    cache = Path(cache_dir or Path.home() / ".cache" / "dldl") / f"images_{size}_{key}.npy"
    if cache.is_file():
        return np.load(cache, mmap_mode="r")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arr = np.stack(list(pool.map(lambda p: decode_resized(p, size), paths)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")  # several DDP ranks may build it at once
    np.save(tmp, arr)
    tmp.rename(cache)
    return arr
