"""Reading user images safely: any mode, any orientation, any size, with clear errors."""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Folders are scanned for these; a format Pillow cannot decode (HEIC without a plug-in) then gets
# its own error line instead of being skipped without a word.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jfif", ".pgm", ".ppm"}
MAX_PIXELS = 100_000_000  # refuse decompression bombs beyond this many pixels


class ImageReadError(ValueError):
    """The input could not be read as an image; the message says why."""


def to_rgb(im: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, converted to 8-bit RGB.

    RGBA and LA are composited on white (transparent areas would otherwise
    turn black), 16-bit and float images are rescaled to 8 bits, palette,
    grayscale and CMYK images are converted.
    """
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.nan_to_num(np.asarray(im, dtype=np.float32))
        if im.mode == "F" and a.max() <= 1.0:  # float images (TIFF) usually hold 0..1
            hi = 1.0
        else:
            hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    return im.convert("RGB")


def load_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """Open a path, bytes or PIL image as RGB, or raise ``ImageReadError`` with the reason."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_symlink() and not path.exists():
            raise ImageReadError(f"{name}: a broken or looping symbolic link")
        if path.is_dir():
            raise ImageReadError(f"{name}: a folder, not an image file")
        if not path.is_file():
            raise ImageReadError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{name}: the file is empty")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            im.load()
            return to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{name}: the image is too large (over {MAX_PIXELS:,} pixels)") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{name}: not a readable image file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{name}: the image is damaged or truncated ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def list_images(inputs: list[str | os.PathLike], skipped: Counter | None = None) -> list[Path]:
    """Expand folders (recursively, sorted, following links to files) into image files; files given
    by name are kept as given. What a folder holds that is not taken is counted in ``skipped`` by
    reason, so a caller can say so."""
    out: list[Path] = []
    skipped = Counter() if skipped is None else skipped
    for item in map(Path, inputs):
        if not item.is_dir():
            out.append(item)
            continue
        for p in sorted(item.rglob("*")):
            if p.is_symlink() and not p.exists():
                skipped["broken or looping symbolic links"] += 1
            elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                out.append(p)
            elif p.is_file():
                skipped[f"files without an image extension ({', '.join(sorted(IMAGE_SUFFIXES))})"] += 1
    return out


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` scaled down (never up) so that neither side exceeds ``max_side``."""
    scale = min(1.0, max_side / max(image.size))
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR) if scale < 1 else image


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """RGB at ``size`` x ``size``: the one resize that training and inference both use."""
    image = image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR)
