"""The photo degradations used to train the age model and to build its shifted validation sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from dldl_core.degrade import (
    ENCODINGS,
    bilateral,
    degraded_copy,
    encode,
    framed_copy,
    gaussian_blur,
    jpeg,
    random_degrade,
    relight,
    relit_copy,
    scanned_copy,
    scanned_print,
    sharpened_copy,
    smoothed_copy,
    unsharp_mask,
)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((128, 128), Image.BILINEAR)


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_simulated_jpeg_matches_the_real_codec(photo, quality):
    x = _tensor(photo)
    simulated = jpeg(x, torch.tensor([quality]))
    real = _tensor(encode(photo, f"jpeg{quality}"))
    # The simulation is as far from the original as the codec is, and close to the codec's output.
    assert abs((simulated - x).abs().mean() - (real - x).abs().mean()) * 255 < 0.5
    assert (simulated - real).abs().mean() * 255 < 2.0


def test_lower_jpeg_quality_loses_more(photo):
    x = _tensor(photo).repeat(3, 1, 1, 1)
    err = (jpeg(x, torch.tensor([95, 60, 20])) - x).abs().mean(dim=(1, 2, 3))
    assert err[0] < err[1] < err[2]


def test_blur_keeps_the_mean_and_removes_detail(photo):
    x = _tensor(photo).repeat(2, 1, 1, 1)
    y = gaussian_blur(x, torch.tensor([0.001, 2.0]))
    assert torch.allclose(y[0], x[0], atol=1e-4)
    assert abs(float(y[1].mean() - x[1].mean())) < 2e-3
    assert float(y[1].diff(dim=-1).abs().mean()) < 0.6 * float(x[1].diff(dim=-1).abs().mean())


def test_unsharp_mask_matches_the_real_filter_and_adds_detail(photo):
    from PIL import ImageFilter

    x = _tensor(photo)
    y = unsharp_mask(x, torch.tensor([1.5]), torch.tensor([1.0]))
    real = _tensor(photo.filter(ImageFilter.UnsharpMask(1.5, 100, 0)))
    assert float((y - real).abs().mean()) < 2 / 255  # within about 2 grey levels of Pillow's filter
    assert float(y.diff(dim=-1).abs().mean()) > 1.2 * float(x.diff(dim=-1).abs().mean())
    assert torch.allclose(unsharp_mask(x, torch.tensor([1.5]), torch.tensor([0.0])), x)
    batch = x.repeat(8, 1, 1, 1)
    torch.manual_seed(0)
    plain = random_degrade(batch.clone(), 0.0)  # only the colour shifts, which every face gets
    torch.manual_seed(0)
    sharp = random_degrade(batch.clone(), 0.0, sharpen=1.0)  # the same draws, then every face sharpened
    assert (sharp.diff(dim=-1).abs().mean(dim=(1, 2, 3)) > 1.1 * plain.diff(dim=-1).abs().mean(dim=(1, 2, 3))).all()


def test_relight_lights_one_side_clips_at_white_and_flattens_contrast(photo):
    grey = torch.full((3, 3, 64, 64), 0.5)
    one, zero = torch.ones(3), torch.zeros(3)
    side = relight(grey, one, torch.full((3,), 0.3), torch.tensor([0.0, torch.pi, torch.pi / 2]), one)
    left, right = side[..., :32].mean(dim=(1, 2, 3)), side[..., 32:].mean(dim=(1, 2, 3))
    top, bottom = side[..., :32, :].mean(dim=(1, 2, 3)), side[..., 32:, :].mean(dim=(1, 2, 3))
    assert left[0] < 0.75 * right[0] and right[1] < 0.75 * left[1]  # lit from the right, then from the left
    assert top[2] < 0.75 * bottom[2] and abs(float(left[2] - right[2])) < 1e-3  # lit from below
    assert float(side.max()) <= 0.5 + 1e-6  # the lit side keeps its brightness, the other falls
    x = _tensor(photo)
    assert torch.allclose(relight(x, one[:1], one[:1], zero[:1], one[:1]), x)  # no change asked, none made
    bright = relight(x, torch.tensor([3.0]), one[:1], zero[:1], one[:1])
    assert float((bright == 1).float().mean()) > 0.5 and float(bright.max()) == 1.0  # clipped, as a sensor clips
    flat = relight(x, one[:1], one[:1], zero[:1], torch.tensor([0.5]))
    assert torch.allclose(flat, x.mean() + 0.5 * (x - x.mean()), atol=1e-6)  # contrast halved about the mean
    torch.manual_seed(0)
    plain = random_degrade(x.repeat(16, 1, 1, 1), 0.0)
    torch.manual_seed(0)
    lit = random_degrade(x.repeat(16, 1, 1, 1), 0.0, lighting=1.0)
    assert lit.mean(dim=(1, 2, 3)).std() > 2 * plain.mean(dim=(1, 2, 3)).std()  # every face relit, each its own way


def test_bilateral_smooths_texture_and_keeps_edges():
    torch.manual_seed(0)
    step = torch.zeros(2, 3, 32, 32)
    step[..., 16:] = 0.8  # a sharp edge (eye to skin)
    skin = step + 0.02 * torch.randn_like(step)  # fine texture on both sides
    out = bilateral(skin, torch.tensor([2.0, 2.0]), torch.tensor([0.1, 1e-4]))
    inside = (slice(None), slice(None), slice(4, 28))
    left, right = out[0][inside][..., 4:12], out[0][inside][..., 20:28]
    assert left.std() < 0.4 * skin[0][inside][..., 4:12].std() and right.std() < 0.4 * skin[0][inside][..., 20:28].std()
    assert float(out[0][..., 17:].min()) > 0.7 and float(out[0][..., :15].max()) < 0.1  # the edge stays where it was
    assert torch.allclose(out[1], skin[1], atol=1e-4)  # a colour sigma near 0 averages nothing: each image its own
    wide = bilateral(step, torch.tensor([2.0]), torch.tensor([100.0]))[0, 0, 8]
    assert 0.2 < float(wide[15]) < 0.4 and 0.4 < float(wide[16]) < 0.6  # no colour limit: a plain blur crosses the edge


def test_random_degrade_smooths_only_when_asked(photo):
    x = _tensor(photo).repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    plain = random_degrade(x.clone(), 0.0)
    torch.manual_seed(0)
    smooth = random_degrade(x.clone(), 0.0, smooth=1.0)

    def detail(t: torch.Tensor) -> torch.Tensor:
        return (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))

    assert (detail(smooth) < detail(plain)).all() and float((detail(smooth) / detail(plain)).mean()) < 0.93  # every face smoothed
    assert ((smooth - plain).abs().mean(dim=(1, 2, 3)) > 0.003).all()


def test_scanned_print_tones_fades_and_adds_grain(photo):
    x = _tensor(photo)
    sepia = scanned_print(x, torch.tensor([1.0]), torch.tensor([0.7]), torch.tensor([0.1]), torch.tensor([0.0]))[0]
    assert float(sepia[0].mean()) > float(sepia[2].mean()) + 0.05  # toned: red over blue
    assert float(sepia.min()) >= 0.099 and float(sepia.max()) <= 0.801  # faded: blacks lifted, whites dulled
    torch.manual_seed(0)
    gray = torch.full((1, 3, 64, 64), 0.5)
    noise = scanned_print(gray, torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.04]))[0] - 0.5
    assert abs(float(noise.std()) - 0.04) < 0.002 and torch.allclose(noise[0], noise[2])  # grain, one for all channels
    assert float((noise[0, :, 1:] * noise[0, :, :-1]).mean() / noise[0].var()) > 0.2  # clumped (white noise: 0)


def test_random_degrade_scans_only_when_asked(photo):
    x = _tensor(photo).repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    plain = random_degrade(x.clone(), 0.0)
    torch.manual_seed(0)
    assert torch.equal(random_degrade(x.clone(), 0.0, scan=0.0), plain)  # never asked: the same random stream
    torch.manual_seed(0)
    old = random_degrade(x.clone(), 0.0, scan=1.0)
    assert ((old - plain).abs().mean(dim=(1, 2, 3)) > 0.02).all()  # every face an old print


def test_random_degrade_varies_per_image_and_stays_in_range(photo):
    torch.manual_seed(0)
    x = _tensor(photo).repeat(16, 1, 1, 1)
    y = random_degrade(x.clone())
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    changes = (y - x).abs().mean(dim=(1, 2, 3))
    assert changes.min() > 0 and changes.std() > 0.005  # every image changed, each by its own amount


def test_encodings_and_degraded_copies(photo):
    for kind in ENCODINGS:
        out = encode(photo, kind)
        assert out.size == photo.size and out.mode == "RGB"
    gray = np.asarray(encode(photo, "gray")).astype(int)
    assert (gray[..., 0] == gray[..., 1]).all()
    a = degraded_copy(photo, np.random.default_rng(3))
    b = degraded_copy(photo, np.random.default_rng(3))
    assert np.array_equal(np.asarray(a), np.asarray(b))  # seeded: the same degraded set every run
    s1, s2 = (np.asarray(sharpened_copy(photo, np.random.default_rng(3))).astype(float) for _ in range(2))
    assert np.array_equal(s1, s2)
    assert np.abs(np.diff(s1, axis=1)).mean() > 1.2 * np.abs(np.diff(np.asarray(photo).astype(float), axis=1)).mean()
    r1, r2 = (np.asarray(relit_copy(photo, np.random.default_rng(k))).astype(float) for k in (3, 3))
    assert np.array_equal(r1, r2)
    lit = [np.asarray(relit_copy(photo, np.random.default_rng(k))).astype(float) for k in range(12)]
    assert max(abs(a.mean() - np.asarray(photo).mean()) for a in lit) > 20  # some much brighter or darker
    m1, m2 = (np.asarray(smoothed_copy(photo, np.random.default_rng(3))).astype(float) for _ in range(2))
    assert np.array_equal(m1, m2)
    assert np.abs(np.diff(m1, axis=1)).mean() < 0.85 * np.abs(np.diff(np.asarray(photo).astype(float), axis=1)).mean()
    o1, o2 = (np.asarray(scanned_copy(photo, np.random.default_rng(3))).astype(float) for _ in range(2))
    assert np.array_equal(o1, o2)
    assert o1[..., 0].mean() > o1[..., 2].mean() + 10 and np.percentile(o1, 2) > np.percentile(np.asarray(photo), 2)  # toned, blacks lifted
    f1, f2 = (np.asarray(framed_copy(photo, np.random.default_rng(3))) for _ in range(2))
    assert np.array_equal(f1, f2)
    for k in range(12):  # strips of at most 5% of a side in one colour, the rest as it was
        framed, original = np.asarray(framed_copy(photo, np.random.default_rng(k))), np.asarray(photo)
        changed = (framed != original).any(-1)
        h, w = changed.shape
        assert changed.any() and not changed[h // 20 + 1 : -(h // 20 + 1), w // 20 + 1 : -(w // 20 + 1)].any()
        assert len(np.unique(framed[changed], axis=0)) == 1
    with pytest.raises(ValueError, match="unknown encoding"):
        encode(photo, "gif")


def test_random_erase_paints_one_rectangle_of_one_colour_and_leaves_the_rest():
    from dldl_core.transforms import random_erase

    torch.manual_seed(0)
    x = torch.rand(64, 3, 40, 40)
    assert torch.equal(random_erase(x, 0.0), x)
    y = random_erase(x, 1.0, area=(0.05, 0.2))
    changed = (y != x).any(1)  # (N, H, W)
    for img, mask in zip(y, changed):
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = img[:, int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1]
        assert (box == box[:, :1, :1]).all()  # one solid rectangle: everything inside its bounds is painted
        assert 0.03 <= box[0].numel() / mask.numel() <= 0.22
    assert 0.1 < random_erase(x, 0.5).ne(x).any(1).flatten(1).any(1).float().mean() < 0.9


def test_random_frame_replaces_strips_along_the_sides_and_keeps_the_middle():
    from dldl_core.transforms import random_frame

    torch.manual_seed(0)
    x = torch.rand(200, 3, 50, 50)
    assert torch.equal(random_frame(x, 0.0), x)
    y = random_frame(x, 1.0, width=(0.04, 0.12))
    changed = (y != x).any(1)  # (N, H, W)
    assert changed.flatten(1).any(1).all()  # every face framed
    assert not changed[:, 6:-6, 6:-6].any()  # at most 12% of a side: the middle is untouched
    flat = edge = 0
    for img, old, mask in zip(y, x, changed):
        rows, cols = mask.all(1), mask.all(0)  # the strips run the whole side
        assert (mask == rows[:, None] | cols[None, :]).all()
        colours = img[:, mask].unique(dim=1)
        if colours.shape[1] == 1:
            flat += 1  # one colour
        else:  # the inner edge repeated: each changed pixel is a copy of an unchanged one in its row or column
            edge += 1
            top = int(rows[:25].sum())
            if top:
                assert torch.equal(img[:, :top, 25], old[:, top, 25][:, None].expand(-1, top))
    assert 60 < flat < 140 and 60 < edge < 140
