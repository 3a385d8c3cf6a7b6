"""Example photos for demos and tests, taken from scikit-image's bundled samples (no dataset files)."""

from __future__ import annotations

from pathlib import Path


def example_photos() -> dict[str, Path]:
    """Name -> path of sample photos that ship inside the scikit-image wheel."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    names = {"astronaut": "astronaut.png", "cameraman (grayscale)": "camera.png", "coffee (no face)": "coffee.png"}
    return {k: folder / v for k, v in names.items() if (folder / v).is_file()}
