"""The photo degradations used to train the age model and to build its shifted validation sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from dldl_core.degrade import ENCODINGS, degraded_copy, encode, gaussian_blur, jpeg, random_degrade


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
    with pytest.raises(ValueError, match="unknown encoding"):
        encode(photo, "gif")
