"""Dataset access: where the data lives, the age, head-pose, multi-label and segmentation tables, a decoded-image cache.

Data never lives in the repository. It is found through an explicit path, the
``DLDL_DATA`` variable, or ``../shared/data`` beside the project.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .crops import square_crop
from .images import resize_square
from .paths import data_root


def _table(table: Path, what: str) -> list[dict[str, str]]:
    """The rows of a dataset's CSV table, or a clear error naming where it was looked for."""
    if not table.is_file():
        raise FileNotFoundError(f"{what} not found at {table}; set --data or DLDL_DATA")
    with table.open(newline="") as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class AgeRecord:
    path: Path
    age: int
    split: str
    race: int | None = None  # 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others; None when unknown


def read_utkface(root: str | os.PathLike | None = None, split: str | None = None, without_race: int | None = None) -> list[AgeRecord]:
    """Rows of ``age/utkface/labels.csv`` (columns path, age, race, split), optionally one split,
    optionally without one race group (a leave-one-group-out run's training and in-domain faces)."""
    folder = data_root(root) / "age" / "utkface"
    rows = [
        AgeRecord(folder / r["path"], int(r["age"]), r["split"], int(r["race"]) if r.get("race") else None)
        for r in _table(folder / "labels.csv", "UTKFace table")
    ]
    return [r for r in rows if (split is None or r.split == split) and (without_race is None or r.race != without_race)]


@dataclass(frozen=True)
class PoseRecord:
    path: Path
    pose: tuple[float, float, float]  # yaw, pitch, roll in degrees (the data README's sign convention)
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the face in the image
    split: str
    teachers: tuple[tuple[float, float, float], ...] = ()  # other models' (yaw, pitch, roll), when known


def read_pose(dataset: str, root: str | os.PathLike | None = None, split: str | None = None) -> list[PoseRecord]:
    """Rows of ``pose/<dataset>/labels.csv`` (``aflw`` or ``aflw2000``), with the teachers of ``aflw``."""
    folder = data_root(root) / "pose" / dataset
    table = folder / "labels.csv"
    rows = _table(table, "head-pose table")
    teachers: list[tuple] = [()] * len(rows)
    if (folder / "teachers.csv").is_file():
        trows = _table(folder / "teachers.csv", "teacher table")
        if [t["path"] for t in trows] != [r["path"] for r in rows]:
            raise ValueError(f"{folder / 'teachers.csv'} does not list the rows of {table} in order")
        names = sorted({k.split("_", 1)[1] for k in trows[0] if "_" in k})
        teachers = [tuple(tuple(float(t[f"{a}_{n}"]) for a in ("yaw", "pitch", "roll")) for n in names) for t in trows]
    out = [
        PoseRecord(
            folder / r["path"],
            (float(r["yaw"]), float(r["pitch"]), float(r["roll"])),
            (float(r["x_min"]), float(r["y_min"]), float(r["x_max"]), float(r["y_max"])),
            r["split"],
            t,
        )
        for r, t in zip(rows, teachers)
    ]
    return [r for r in out if split is None or r.split == split]


VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
COCO_TO_VOC = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa", "dining table": "diningtable",
               "potted plant": "pottedplant", "tv": "tvmonitor"}  # fmt: skip


@dataclass(frozen=True)
class MultiLabelRecord:
    path: Path
    present: frozenset[str]  # VOC classes with at least one clear object
    ambiguous: frozenset[str]  # VOC classes seen only through ambiguous objects (difficult, crowd, tiny)
    split: str


def read_coco_multilabel(
    root: str | os.PathLike | None = None, split: str | None = None, small_area: float = 32 * 32, keep_empty: bool = False
) -> list[MultiLabelRecord]:
    """``multilabel/coco_tiny`` as VOC-class labels; crowd regions and objects under ``small_area``
    pixels count as ambiguous. Images without any VOC object are left out unless ``keep_empty``."""
    folder = data_root(root) / "multilabel" / "coco_tiny"
    table = folder / "instances.json"
    if not table.is_file():
        raise FileNotFoundError(f"COCO tiny annotations not found at {table}; set --data or DLDL_DATA")
    coco = json.loads(table.read_text())
    names = {c["id"]: COCO_TO_VOC.get(c["name"], c["name"]) for c in coco["categories"]}
    clear: dict[int, set] = {}
    unclear: dict[int, set] = {}
    for a in coco["annotations"]:
        name = names[a["category_id"]]
        if name in VOC_CLASSES:
            vague = bool(a.get("iscrowd")) or a["area"] < small_area
            (unclear if vague else clear).setdefault(a["image_id"], set()).add(name)
    out = []
    for im in coco["images"]:
        c, u = clear.get(im["id"], set()), unclear.get(im["id"], set())
        if (c or u or keep_empty) and (split is None or im["split"] == split):
            out.append(MultiLabelRecord(folder / "images" / im["file_name"], frozenset(c), frozenset(u - c), im["split"]))
    return out


def read_voc(folder: str | os.PathLike, split: str) -> list[MultiLabelRecord]:
    """A PASCAL VOC layout: ``ImageSets/Main/<split>.txt``, ``Annotations/<id>.xml`` (objects with
    ``difficult`` flags, which count as ambiguous) and ``JPEGImages/<id>.jpg``."""
    folder = Path(folder)
    ids = (folder / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    out = []
    for i in ids:
        root = ET.parse(folder / "Annotations" / f"{i}.xml").getroot()
        clear, unclear = set(), set()
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in VOC_CLASSES:
                raise ValueError(f"{folder / 'Annotations' / f'{i}.xml'}: unknown class {name!r}")
            (unclear if (obj.findtext("difficult") or "0").strip() == "1" else clear).add(name)
        if clear or unclear:
            out.append(MultiLabelRecord(folder / "JPEGImages" / f"{i}.jpg", frozenset(clear), frozenset(unclear - clear), split))
    return out


@dataclass(frozen=True)
class SegRecord:
    image: Path
    mask: Path  # 8-bit class index per pixel
    split: str


def read_camvid(root: str | os.PathLike | None = None, split: str | None = None) -> list[SegRecord]:
    """Rows of ``seg/camvid/index.csv`` (columns image, mask, split), optionally one split."""
    folder = data_root(root) / "seg" / "camvid"
    rows = [SegRecord(folder / r["image"], folder / r["mask"], r["split"]) for r in _table(folder / "index.csv", "CamVid index")]
    return [r for r in rows if split is None or r.split == split]


Square = tuple[tuple[float, float], float]  # centre (x, y) and side of an upright square crop, in pixels


Size = int | tuple[int, int]  # a square side, or (width, height)


def decode_resized(path: Path, size: Size, square: Square | None = None, label_map: bool = False) -> np.ndarray:
    """The image (or the ``square`` crop of it) as uint8 RGB at ``size``; with ``label_map`` an
    8-bit class-index map (one channel, nearest-neighbour resizing so no class is invented)."""
    with Image.open(path) as im:
        if label_map:
            w, h = (size, size) if isinstance(size, int) else size
            im = im if im.mode in ("L", "P") else im.convert("L")
            return np.asarray(im if im.size == (w, h) else im.resize((w, h), Image.NEAREST), dtype=np.uint8)
        if square is not None:
            return np.asarray(square_crop(im.convert("RGB"), square[0], square[1], size), dtype=np.uint8)
        if isinstance(size, int):
            return np.asarray(resize_square(im, size), dtype=np.uint8)
        im = im.convert("RGB")
        return np.asarray(im if im.size == tuple(size) else im.resize(tuple(size), Image.BILINEAR), dtype=np.uint8)


def image_cache(
    paths: list[Path],
    size: Size,
    cache_dir: str | os.PathLike | None = None,
    squares: list[Square] | None = None,
    label_map: bool = False,
) -> np.ndarray:
    """All images (or their ``squares`` crops) decoded and resized to ``size``: uint8 (N, H, W, 3),
    or (N, H, W) class-index maps with ``label_map``.

    Decoding JPEGs every epoch would cost more than the network on a small
    CPU, so the array is built once and kept in ``cache_dir`` (default
    ``~/.cache/dldl``) under a name that hashes the file list, crops and size.
    """
    crops = [None] * len(paths) if squares is None else squares
    desc = "\n".join(map(str, paths)) + f"|{size}" + ("" if squares is None else "|" + repr([(tuple(map(float, c)), float(s)) for c, s in squares]))
    desc += "|labels" if label_map else ""
    side = size if isinstance(size, int) else "x".join(map(str, size))

    def build() -> np.ndarray:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return np.stack(list(pool.map(lambda pc: decode_resized(pc[0], size, pc[1], label_map), zip(paths, crops))))

    return cached_array(f"{'labels' if label_map else 'images'}_{side}", desc, build, cache_dir)


def cached_array(kind: str, desc: str, build: Callable[[], np.ndarray], cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """``build()``'s array, kept in ``cache_dir`` (default ``~/.cache/dldl``) under ``kind`` and a
    hash of ``desc`` (what the array depends on), so it is built once per machine."""
    key = hashlib.sha1(desc.encode()).hexdigest()[:16]
    cache = Path(cache_dir or Path.home() / ".cache" / "dldl") / f"{kind}_{key}.npy"
    if cache.is_file():
        return np.load(cache, mmap_mode="r")
    arr = build()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")  # several DDP ranks may build it at once
    np.save(tmp, arr)
    tmp.rename(cache)
    return arr
