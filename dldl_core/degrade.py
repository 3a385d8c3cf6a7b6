"""Photo degradations: what separates a user's photo from a clean training chip.

Two families with one purpose. ``random_degrade`` works on whole float batches
on the training device (a JPEG codec simulated in torch, low resolution, blur,
sensor noise, grayscale, white balance and gamma; on request the opposite of blur,
the sharpening cameras and phones apply), so a model cannot use image quality or
encoding as a cue for its label. ``degraded_copies`` and
``encodings`` go through the real codecs (Pillow's JPEG and WebP) to build
evaluation sets, so what is measured is not the simulator the model trained on.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

# The JPEG standard's example quantisation tables (Annex K), scaled by quality as libjpeg does.
_LUMA_Q = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip
_CHROMA_Q = ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
             (47, 66, 99, 99, 99, 99, 99, 99)) + ((99,) * 8,) * 4  # fmt: skip


def _dct_matrix(device: torch.device) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float32, device=device)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 8, 8) luma and chroma tables for qualities 1..100, as libjpeg scales them."""
    q = quality.float().clamp(1, 100)[:, None, None]
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    tables = []
    for base in (_LUMA_Q, _CHROMA_Q):
        t = torch.tensor(base, dtype=torch.float32, device=quality.device)[None]
        tables.append(torch.floor((t * scale + 50) / 100).clamp(1, 255))
    return tables[0], tables[1]


def _blockwise(plane: torch.Tensor, table: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """Quantise one (N, H, W) plane (0..255, H and W multiples of 8) in 8x8 DCT blocks."""
    n, h, w = plane.shape
    blocks = (plane - 128).reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
    coef = dct @ blocks @ dct.T
    t = table[:, None, None]
    coef = torch.round(coef / t) * t
    return (dct.T @ coef @ dct).permute(0, 1, 3, 2, 4).reshape(n, h, w) + 128


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """A baseline JPEG round trip of a float batch (N, 3, H, W) in 0..1, one quality per image.

    YCbCr, 4:2:0 chroma subsampling, 8x8 DCT and the standard tables scaled by
    quality: the lossy steps of the codec (entropy coding is lossless and left out).
    """
    h, w = x.shape[-2:]
    ph, pw = -h % 16, -w % 16
    img = F.pad(x, (0, pw, 0, ph), mode="replicate") * 255
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    dct = _dct_matrix(x.device)
    luma_t, chroma_t = _quant_tables(quality.to(x.device))
    y = _blockwise(y, luma_t, dct)
    sub = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    pad8 = (-sub.shape[-1] % 8, -sub.shape[-2] % 8)
    sub = F.pad(sub, (0, pad8[0], 0, pad8[1]), mode="replicate")
    chroma = torch.stack([_blockwise(sub[:, i], chroma_t, dct) for i in range(2)], 1)
    chroma = chroma[..., : (h + ph) // 2, : (w + pw) // 2]
    cb, cr = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False).unbind(1)
    rgb = torch.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], 1)
    return (rgb[..., :h, :w] / 255).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of (N, C, H, W) with its own Gaussian ``sigma`` (N,) in pixels (0 = unchanged)."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = k.repeat_interleave(c, 0)  # one kernel per image and channel
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, k[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, k[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def unsharp_mask(x: torch.Tensor, sigma: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Sharpen each image of (N, C, H, W) in 0..1 as cameras do: ``x + amount (x - blur(x, sigma))``,
    ``sigma`` and ``amount`` one per image (N,); an amount of 1 is Pillow's ``UnsharpMask`` at 100%."""
    return (x + amount[:, None, None, None] * (x - gaussian_blur(x, sigma))).clamp(0, 1)


def bilateral(x: torch.Tensor, sigma_space: torch.Tensor, sigma_color: torch.Tensor) -> torch.Tensor:
    """Edge-preserving smoothing of a float batch (N, C, H, W) in 0..1, as a phone's noise
    reduction, a beauty filter or makeup smooths skin: each pixel becomes the mean of its
    neighbours within ``1.5 sigma_space`` pixels, weighed by a Gaussian of their distance (sigma
    ``sigma_space``) and of their colour difference (Euclidean over the channels, sigma
    ``sigma_color``), so fine texture such as wrinkles fades while the edges of eyes, mouth and face
    stay sharp. ``sigma_space`` and ``sigma_color`` are one per image (N,)."""
    radius = max(1, math.ceil(1.5 * float(sigma_space.max())))
    h, w = x.shape[-2:]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    space = (-0.5 / sigma_space.clamp(min=1e-3) ** 2)[:, None, None, None]
    color = (-0.5 / sigma_color.clamp(min=1e-4) ** 2)[:, None, None, None]
    total, weight = torch.zeros_like(x), torch.zeros_like(x[:, :1])
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            near = padded[..., radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            wq = torch.exp(space * (dy * dy + dx * dx) + color * (near - x).pow(2).sum(1, keepdim=True))
            total += wq * near
            weight += wq
    return total / weight


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) grey levels of an RGB batch (N, 3, H, W), with the weights of Pillow's ``convert("L")``."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def relight(x: torch.Tensor, gain: torch.Tensor, low: torch.Tensor, angle: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Lighting of a float batch (N, 3, H, W) in 0..1, each image its own values (N,): light from
    one side (brightness scaled by a linear ramp along ``angle``, in radians, from ``low`` to 1 over
    the square's diagonal, so that a light straight from the side spans a little less of it), an
    exposure ``gain`` clipped at white as a sensor clips, then the contrast scaled by ``contrast``
    about the image's mean, as a faded print or a hazy lens flattens it."""
    h, w = x.shape[-2:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij")
    along = (xs * torch.cos(angle)[:, None, None] + ys * torch.sin(angle)[:, None, None]) / 2 ** 0.5  # -1..1 along a diagonal
    ramp = low[:, None, None] + (1 - low[:, None, None]) * (along + 1) / 2
    x = (x * (gain[:, None, None] * ramp)[:, None]).clamp(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + (x - mean) * contrast[:, None, None, None]).clamp(0, 1)


# Sepia toning: each output channel a mix of the input's (the common photo-editing matrix).
_SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))


def scanned_print(x: torch.Tensor, tone: torch.Tensor, contrast: torch.Tensor, lift: torch.Tensor, grain: torch.Tensor) -> torch.Tensor:
    """An old photo print, scanned, of a float batch (N, 3, H, W) in 0..1, each image its own
    values (N,): toned toward sepia by ``tone`` (0 none, 1 full sepia; yellowed or toned paper),
    faded to ``contrast`` of its range with the blacks lifted to ``lift`` (a print's dyes fade and
    its blacks turn grey), then film grain: monochrome noise of standard deviation ``grain``,
    clumped by a Gaussian of 0.5 px as grain is coarser than a sensor's pixels."""
    sepia = torch.einsum("ij,njhw->nihw", torch.tensor(_SEPIA, dtype=x.dtype, device=x.device), x).clamp(0, 1)
    t = tone[:, None, None, None]
    x = lift[:, None, None, None] + contrast[:, None, None, None] * ((1 - t) * x + t * sepia)
    noise = gaussian_blur(torch.randn_like(x[:, :1]), torch.full_like(tone, 0.5))
    noise = noise / noise.std(dim=(1, 2, 3), keepdim=True)
    return (x + grain[:, None, None, None] * noise).clamp(0, 1)


def random_degrade(x: torch.Tensor, strength: float = 1.0, sharpen: float = 0.0, lighting: float = 0.0, smooth: float = 0.0,
                   scan: float = 0.0) -> torch.Tensor:
    """Random photo degradations of a float batch (N, 3, H, W) in 0..1, each image its own draw.

    In order, as a camera and a web upload would apply them: with probability ``lighting`` (not
    scaled) light from one side, to 0.3-1 of the lit side's brightness, an exposure of 0.35-2x
    clipped at white, and the contrast scaled by 0.5-1 (``relight``); with probability ``scan`` (not
    scaled) an old print, scanned: toned 0.2-1 of the way to sepia, faded to 0.6-0.9 of its range with
    blacks lifted to 0.03-0.15, film grain of 0.015-0.05 (``scanned_print``); white balance, gamma and
    saturation; grayscale (p 0.15); low resolution, downscaled 1.5-4x and back (p 0.3);
    blur, sigma 0.4-1.6 px (p 0.2); a face not blurred may be smoothed with its edges kept, sigma
    0.8-2.5 px and colour sigma 0.03-0.12 (p ``smooth``, not scaled; ``bilateral``), then
    sharpened by an unsharp mask of sigma and amount 0.5-1.5 (p ``sharpen``, not scaled); sensor
    noise, std up to 0.04 (p 0.2); JPEG at quality 30-95 (p 0.8; the rest stay as they are).
    ``strength`` scales every other probability.
    """
    n, dev = x.shape[0], x.device

    def chance(p: float) -> torch.Tensor:
        return torch.rand(n, device=dev) < p * strength

    def uniform(shape: int | tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
        return torch.empty(shape, device=dev).uniform_(lo, hi)

    if lighting > 0:  # drawn only when asked, so that runs without it keep their random stream
        lit = torch.rand(n, device=dev) < lighting
        k = int(lit.sum())
        if k:
            gain = torch.exp(uniform(k, math.log(0.35), math.log(2.0)))
            x[lit] = relight(x[lit], gain, uniform(k, 0.3, 1.0), uniform(k, 0, 2 * math.pi), uniform(k, 0.5, 1.0))
    if scan > 0:  # drawn only when asked, so that runs without it keep their random stream
        old = torch.rand(n, device=dev) < scan
        k = int(old.sum())
        if k:
            x[old] = scanned_print(x[old], uniform(k, 0.2, 1.0), uniform(k, 0.6, 0.9), uniform(k, 0.03, 0.15), uniform(k, 0.015, 0.05))
    gains = uniform((n, 3, 1, 1), 0.85, 1.15)
    gamma = torch.exp(uniform((n, 1, 1, 1), -0.4, 0.4))
    x = (x * gains).clamp(0, 1) ** gamma
    gray = luma(x)
    sat = uniform((n, 1, 1, 1), 0.6, 1.3)
    sat = torch.where(chance(0.15)[:, None, None, None], torch.zeros_like(sat), sat)
    x = (gray + (x - gray) * sat).clamp(0, 1)

    h, w = x.shape[-2:]
    for i in torch.nonzero(chance(0.3)).flatten().tolist():
        f = torch.empty(1).uniform_(1.5, 4.0).item()
        small = F.interpolate(x[i : i + 1], size=(max(8, round(h / f)), max(8, round(w / f))), mode="bilinear", antialias=True)
        x[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    blur = chance(0.2)
    if blur.any():
        x[blur] = gaussian_blur(x[blur], uniform(int(blur.sum()), 0.4, 1.6))
    if smooth > 0:  # drawn only when asked, so that runs without it keep their random stream
        smoothed = (torch.rand(n, device=dev) < smooth) & ~blur
        k = int(smoothed.sum())
        if k:
            x[smoothed] = bilateral(x[smoothed], uniform(k, 0.8, 2.5), uniform(k, 0.03, 0.12))
    if sharpen > 0:  # drawn only when asked, so that runs without it keep their random stream
        sharp = (torch.rand(n, device=dev) < sharpen) & ~blur
        k = int(sharp.sum())
        if k:
            x[sharp] = unsharp_mask(x[sharp], uniform(k, 0.5, 1.5), uniform(k, 0.5, 1.5))
    noisy = chance(0.2)
    if noisy.any():
        std = uniform((int(noisy.sum()), 1, 1, 1), 0.005, 0.04)
        x[noisy] = (x[noisy] + torch.randn_like(x[noisy]) * std).clamp(0, 1)
    coded = chance(0.8)
    if coded.any():
        quality = torch.randint(30, 96, (int(coded.sum()),), device=dev)
        x[coded] = jpeg(x[coded], quality)
    return x.clamp(0, 1)


def encode(image: Image.Image, kind: str) -> Image.Image:
    """``image`` after a round trip through a real codec: ``png``, ``jpeg95``/``75``/``50``
    (any quality), ``webp``, or ``gray`` (grayscale, stored as PNG)."""
    buf = io.BytesIO()
    if kind == "png":
        image.save(buf, "PNG")
    elif kind.startswith("jpeg"):
        image.save(buf, "JPEG", quality=int(kind[4:]))
    elif kind == "webp":
        image.save(buf, "WEBP", quality=80)
    elif kind == "gray":
        image.convert("L").save(buf, "PNG")
    else:
        raise ValueError(f"unknown encoding {kind!r}")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


ENCODINGS = ("png", "jpeg95", "jpeg75", "jpeg50", "webp", "gray")


def degraded_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One seeded degraded copy of a face chip, through real codecs: JPEG at quality 30-90, and
    with probability 1/2 each grayscale, a 2-4x downscale and back, or a Gaussian blur."""
    w, h = image.size
    if rng.random() < 0.5:
        image = image.convert("L").convert("RGB")
    if rng.random() < 0.5:
        f = rng.uniform(2, 4)
        image = image.resize((max(8, round(w / f)), max(8, round(h / f))), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0)))
    return encode(image, f"jpeg{int(rng.integers(30, 91))}")


def sharpened_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One seeded sharpened copy of a face chip through Pillow's unsharp mask (radius 1-2.5 px,
    80-200%), as a camera or phone sharpens a photo, saved as JPEG at quality 90."""
    image = image.filter(ImageFilter.UnsharpMask(rng.uniform(1.0, 2.5), int(rng.integers(80, 201)), 2))
    return encode(image, "jpeg90")


def _image(a: np.ndarray) -> Image.Image:
    """A float image (H, W, 3) in 0..1 (clipped), rounded to 8 bits."""
    return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))


def _saved_jpeg90(a: np.ndarray) -> Image.Image:
    """A float image (H, W, 3) in 0..1, rounded to 8 bits and saved as JPEG at quality 90."""
    return encode(_image(a), "jpeg90")


def relit_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One seeded copy of a face chip under other light, saved as JPEG at quality 90: one of
    overexposed (1.4-1.8x, clipped at white, as a flash or a bright window does), dark (0.3-0.5x
    with sensor noise), lit from the left or right (to 0.25-0.45 of the lit side) or low contrast
    (0.5-0.7 about the mean, a faded print). Made with numpy, not with ``relight``, so that the
    benchmark's set is not the training draw."""
    a = np.asarray(image.convert("RGB"), np.float32) / 255
    kind = int(rng.integers(4))
    if kind == 0:
        a = a * rng.uniform(1.4, 1.8)
    elif kind == 1:
        a = a * rng.uniform(0.3, 0.5) + rng.normal(0, 0.015, a.shape)
    elif kind == 2:
        ramp = np.linspace(rng.uniform(0.25, 0.45), rng.uniform(1.0, 1.3), a.shape[1])
        a = a * (ramp if rng.random() < 0.5 else ramp[::-1])[None, :, None]
    else:
        mean = a.mean()
        a = mean + rng.uniform(0.5, 0.7) * (a - mean)
    return _saved_jpeg90(a)


def smoothed_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One seeded copy of a face chip with its skin smoothed, as a phone's noise reduction, a
    beauty filter or makeup does, saved as JPEG at quality 90: scikit-image's bilateral filter
    (spatial sigma 1.5-3 px at the 200-px chip, colour sigma 0.04-0.1), not ``bilateral``, so that
    the benchmark's set is not the training draw."""
    from skimage.restoration import denoise_bilateral

    sigma = rng.uniform(1.5, 3.0)
    a = denoise_bilateral(np.asarray(image.convert("RGB"), np.float32) / 255, win_size=2 * math.ceil(1.5 * sigma) + 1,
                          sigma_color=rng.uniform(0.04, 0.1), sigma_spatial=sigma, mode="edge", channel_axis=-1)
    return _saved_jpeg90(a)


def scanned_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One seeded copy of a face chip as an old print, scanned, saved as JPEG at quality 70-90:
    toned 0.4-1 of the way to sepia, faded to 0.6-0.85 of its range with the blacks lifted to
    0.05-0.15, monochrome film grain of standard deviation 0.02-0.05 clumped by Pillow's Gaussian
    blur (0.7 px at the 200-px chip) and the scanner's blur (0.6 px). Made with numpy and Pillow,
    not with ``scanned_print``, so that the benchmark's set is not the training draw."""
    a = np.asarray(image.convert("RGB"), np.float32) / 255
    tone = rng.uniform(0.4, 1.0)
    a = (1 - tone) * a + tone * np.clip(a @ np.array(_SEPIA, np.float32).T, 0, 1)
    a = np.clip(rng.uniform(0.05, 0.15) + rng.uniform(0.6, 0.85) * a, 0, 1)
    std = rng.uniform(0.02, 0.05)
    noise = Image.fromarray(np.clip(rng.normal(128, 64, a.shape[:2]), 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    grain = np.asarray(noise, np.float32)
    a = np.clip(a + (std * (grain - grain.mean()) / grain.std())[..., None], 0, 1)
    image = _image(a).filter(ImageFilter.GaussianBlur(0.6))
    return encode(image, f"jpeg{int(rng.integers(70, 91))}")


def framed_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One seeded copy of a face chip with flat borders: strips of 1-5% of its side along one to four
    of its sides (each side with probability 1/2, at least one) in one colour, black, mid grey,
    white or the chip's mean colour, as a plain backdrop or a padded photo puts at a crop's edge.
    Made with numpy, not with ``transforms.random_frame``, so that the benchmark's set is not the
    training draw."""
    a = np.asarray(image.convert("RGB")).copy()
    h, w = a.shape[:2]
    sides = rng.random(4) < 0.5
    sides[rng.integers(4)] = True
    top, bottom, left, right = (int(rng.uniform(0.01, 0.05) * (h if i < 2 else w) + 0.5) * bool(sides[i]) for i in range(4))
    colour = [np.zeros(3), np.full(3, 128), np.full(3, 255), a.reshape(-1, 3).mean(0)][int(rng.integers(4))]
    mask = np.zeros((h, w), bool)
    mask[:top], mask[h - bottom :], mask[:, :left], mask[:, w - right :] = True, True, True, True
    a[mask] = np.round(colour).astype(np.uint8)
    return Image.fromarray(a)
