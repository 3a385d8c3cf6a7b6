"""Example photos for demos and tests, taken from scikit-image's bundled samples (no dataset files)."""

from __future__ import annotations

from pathlib import Path


def _bundled(names: dict[str, str]) -> dict[str, Path]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return {k: folder / v for k, v in names.items() if (folder / v).is_file()}


def example_photos() -> dict[str, Path]:
    """Name -> path of sample photos with and without faces that ship inside the scikit-image wheel."""
    return _bundled({"astronaut": "astronaut.png", "cameraman (grayscale)": "camera.png", "coffee (no face)": "coffee.png"})


def scene_photos() -> dict[str, Path]:
    """Outdoor and vehicle photos from the same wheel, for the street-scene model (none is a street:
    the uncertainty map shows where they leave what CamVid taught it)."""
    return _bundled({"rocket on its pad": "rocket.jpg", "motorcycle": "motorcycle_left.png"})
