"""Pictures of predictions: faces boxed and labelled, age distributions as bar charts."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


def age_label(age: dict[str, Any]) -> str:
    """``34 y (29-40)``: the expectation and the credible interval, in whole years."""
    lo, hi = age["interval"]
    return f"{age['mean']:.0f} y ({lo:.0f}-{hi:.0f})"


def annotate_faces(image: Image.Image, faces: list[dict[str, Any]], max_side: int = 1600) -> Image.Image:
    """A copy of ``image`` (at most ``max_side`` pixels wide or high) with every face boxed,
    numbered and labelled with its age."""
    scale = min(1.0, max_side / max(image.size))
    out = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR) if scale < 1 else image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 45)))
    for i, face in enumerate(faces):
        colour = PALETTE[i % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in face["box"])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        text = f"#{i + 1}" + (f" {age_label(face['age'])}" if "age" in face else "")
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        ty = y0 - (b - t) - 2 * width if y0 - (b - t) - 2 * width >= 0 else y1 + width
        draw.rectangle((x0, ty, x0 + (r - l) + 2 * width, ty + (b - t) + 2 * width), fill=colour)
        draw.text((x0 + width - l, ty + width - t), text, fill="white", font=font)
    return out


def age_chart(faces: list[dict[str, Any]], max_faces: int = 6) -> Figure:
    """One bar chart per face (at most ``max_faces``): the distribution, its mean and interval."""
    shown = faces[:max_faces]
    n = max(1, len(shown))
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for i, (face, ax) in enumerate(zip(shown, axes.flat)):
        age = face["age"]
        probs = age["probs"]
        colour = PALETTE[i % len(PALETTE)]
        lo, hi = age["interval"]
        ax.axvspan(lo - 0.5, hi + 0.5, color=colour, alpha=0.12, label=f"80% interval {lo:.0f}-{hi:.0f}")
        ax.bar(range(len(probs)), probs, width=1.0, color=colour, alpha=0.85)
        ax.axvline(age["mean"], color="black", lw=1.2, ls="--", label=f"expected {age['mean']:.1f}")
        ax.set_title(f"face #{i + 1}: {age_label(age)}", fontsize=10)
        ax.set_xlabel("age (years)")
        ax.set_ylabel("probability")
        ax.set_xlim(max(0, lo - 20), min(len(probs) - 1, hi + 20))
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    if not shown:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center")
    return fig
