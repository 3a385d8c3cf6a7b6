import io

import numpy as np
import pytest
from PIL import Image

from dldl_core.images import ImageReadError, list_images, load_image


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image")
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_image(p)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_truncated_jpeg(tmp_path):
    data = _png(Image.new("RGB", (64, 64), (200, 10, 10)), format="JPEG")
    with pytest.raises(ImageReadError):
        load_image(data[: len(data) // 3])


def test_modes_become_rgb():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent: composited on white
    assert load_image(_png(rgba)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(_png(Image.new("L", (8, 8), 77))).getpixel((1, 1)) == (77, 77, 77)
    sixteen = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert load_image(_png(sixteen)).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    assert load_image(_png(cmyk, format="JPEG")).getpixel((0, 0))[0] > 200
    assert load_image(_png(Image.new("P", (8, 8)))).mode == "RGB"


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = load_image(_png(im, format="JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buf.getvalue()).getpixel((5, 5))[0] > 200


def test_decompression_bomb_is_refused(monkeypatch):
    from dldl_core import images

    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="too large"):
        load_image(_png(Image.new("RGB", (100, 100))))


def test_list_images_expands_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.png", "sub/c.JPEG", "readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images([tmp_path])]
    assert found == ["a.png", "b.jpg", "sub/c.JPEG"]
