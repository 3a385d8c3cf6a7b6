"""Reading user images safely: any mode, any orientation, any size, with clear errors."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
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
        a = np.asarray(im, dtype=np.float32)
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


def list_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, sorted) into image files; files are kept as given."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(item)
    return out


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` scaled down (never up) so that neither side exceeds ``max_side``."""
    scale = min(1.0, max_side / max(image.size))
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR) if scale < 1 else image
