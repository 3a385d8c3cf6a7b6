"""Pictures of predictions: faces boxed and labelled with head axes, age distributions as bar
charts, yaw x pitch distributions as heatmaps, class scores as bars, class maps as colour
overlays and per-pixel uncertainty as a heat image."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from .images import fit_within
from .multilabel import NONE_LABEL
from .pose import head_axes
from .seg import colourize

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]
AXIS_COLOURS = ("#ff3030", "#30d030", "#3080ff")  # the head's right, up and nose axes


def age_label(age: dict[str, Any]) -> str:
    """``34 y (29-40)``: the expectation and the credible interval, in whole years."""
    lo, hi = age["interval"]
    return f"{age['mean']:.0f} y ({lo:.0f}-{hi:.0f})"


def annotate_faces(image: Image.Image, faces: list[dict[str, Any]], max_side: int = 1600) -> Image.Image:
    """A copy of ``image`` (at most ``max_side`` pixels wide or high) with every face boxed,
    numbered (by its ``track`` when it has one) and labelled with its age, and its head axes drawn
    from the nose when its pose is known."""
    out = fit_within(image, max_side).copy()
    scale = out.width / image.width
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 45)))
    for i, face in enumerate(faces):
        number = face.get("track", i + 1)
        colour = PALETTE[(number - 1) % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in face["box"])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if "pose" in face:
            draw_head_axes(draw, face, scale, width)
        text = f"#{number}" + (f" {age_label(face['age'])}" if "age" in face else "")
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        ty = y0 - (b - t) - 2 * width if y0 - (b - t) - 2 * width >= 0 else y1 + width
        draw.rectangle((x0, ty, x0 + (r - l) + 2 * width, ty + (b - t) + 2 * width), fill=colour)
        draw.text((x0 + width - l, ty + width - t), text, fill="white", font=font)
    return out


def draw_head_axes(draw: ImageDraw.ImageDraw, face: dict[str, Any], scale: float = 1.0, width: int = 2) -> None:
    """The head's right (red), up (green) and nose (blue) axes from the nose tip, half a box long."""
    x0, y0, x1, y1 = (v * scale for v in face["box"])
    cx, cy = (face["landmarks"][2][0] * scale, face["landmarks"][2][1] * scale) if face.get("landmarks") else ((x0 + x1) / 2, (y0 + y1) / 2)
    length = 0.5 * (x1 - x0)
    pose = face["pose"]
    for (dx, dy), colour in zip(head_axes(pose["yaw"], pose["pitch"], pose["roll"]), AXIS_COLOURS):
        draw.line((cx, cy, cx + length * dx, cy + length * dy), fill=colour, width=width + 1)


def _panels(n: int, width: float, height: float) -> tuple[Figure, list]:
    """A figure with one panel per face, three to a row; with no face, a single "no face found" panel."""
    cols = min(max(n, 1), 3)
    rows = (max(n, 1) + cols - 1) // cols
    # Figure() rather than pyplot: a long-running app must not keep every figure it ever drew.
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if n == 0:
        axes[0, 0].set_visible(True)
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center")
    return fig, list(axes.flat[:n])


def pose_label(pose: dict[str, Any]) -> str:
    """``yaw -12° pitch 5° roll 2°``."""
    return " ".join(f"{k} {round(pose[k])}°" for k in ("yaw", "pitch", "roll"))  # round(): never "-0"


def pose_chart(faces: list[dict[str, Any]], max_faces: int = 6) -> Figure:
    """One heatmap per face (at most ``max_faces``) of the joint yaw x pitch distribution,
    zoomed on its mass, with the expected pose marked and its 1- and 2-sigma ellipses."""
    shown = faces[:max_faces]
    fig, axes = _panels(len(shown), 3.6, 3.4)
    for i, (face, ax) in enumerate(zip(shown, axes)):
        pose = face["pose"]
        gy, gp = pose["grid"]["yaw"], pose["grid"]["pitch"]
        xlim = (gy["start"] - gy["step"] / 2, gy["stop"] + gy["step"] / 2)
        ylim = (gp["start"] - gp["step"] / 2, gp["stop"] + gp["step"] / 2)
        probs = np.asarray(pose["probs"])  # rows yaw, columns pitch
        ax.imshow(probs.T, origin="lower", cmap="magma", aspect="equal", interpolation="nearest", extent=(*xlim, *ylim))
        mean = np.array([pose["yaw"], pose["pitch"]])
        vals, vecs = np.linalg.eigh(np.asarray(pose["cov"]))
        t = np.linspace(0, 2 * np.pi, 100)
        circle = np.stack([np.cos(t), np.sin(t)])
        for k in (1, 2):
            ring = mean[:, None] + k * vecs @ (np.sqrt(np.clip(vals, 0, None))[:, None] * circle)
            ax.plot(ring[0], ring[1], color="white", lw=0.8, ls="-" if k == 1 else ":")
        ax.plot(*mean, marker="+", color="cyan", ms=12, mew=2, label="expected")
        reach = max(25.0, 3 * float(np.sqrt(vals.max())))
        ax.set_xlim(max(xlim[0], mean[0] - reach), min(xlim[1], mean[0] + reach))
        ax.set_ylim(max(ylim[0], mean[1] - reach), min(ylim[1], mean[1] + reach))
        ax.set_title(f"face #{i + 1}: {pose_label(pose)}", fontsize=9, color=PALETTE[i % len(PALETTE)])
        ax.set_xlabel("yaw (°, + = nose to image left)", fontsize=8)
        ax.set_ylabel("pitch (°, + = up)", fontsize=8)
    return fig


def age_chart(faces: list[dict[str, Any]], max_faces: int = 6, level: float = 0.8) -> Figure:
    """One bar chart per face (at most ``max_faces``): the distribution, its mean and its central
    interval (holding ``level`` of the probability, as the model card says)."""
    shown = faces[:max_faces]
    fig, axes = _panels(len(shown), 4.2, 2.8)
    for i, (face, ax) in enumerate(zip(shown, axes)):
        age = face["age"]
        probs = age["probs"]
        colour = PALETTE[i % len(PALETTE)]
        lo, hi = age["interval"]
        ax.axvspan(lo - 0.5, hi + 0.5, color=colour, alpha=0.12, label=f"{level:.0%} interval {lo:.0f}-{hi:.0f}")
        ax.bar(range(len(probs)), probs, width=1.0, color=colour, alpha=0.85)
        ax.axvline(age["mean"], color="black", lw=1.2, ls="--", label=f"expected {age['mean']:.1f}")
        odd = "\nunlike the training faces: may be further off" if age.get("unusual") else ""
        ax.set_title(f"face #{i + 1}: {age_label(age)}{odd}", fontsize=10, color="firebrick" if odd else "black")
        ax.set_xlabel("age (years)")
        ax.set_ylabel("probability")
        ax.set_xlim(max(0, lo - 20), min(len(probs) - 1, hi + 20))
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    return fig


def age_track_chart(rows: list[dict[str, Any]], tracks: list[dict[str, Any]], fps: float, max_tracks: int = 6, level: float = 0.8) -> Figure:
    """One panel per track (at most ``max_tracks``) of a clip's frame rows (``clip.ClipAnalyzer``):
    each frame's own expected age and interval (light) against the fused ones (dark) over time, so
    the steadier fused reading can be seen against the frames' own (and its interval narrowing, as far as
    the frames are independent evidence)."""
    shown = [t for t in tracks if "age" in t][:max_tracks]
    fig, axes = _panels(len(shown), 4.2, 3.2)
    for track, ax in zip(shown, axes):
        colour = PALETTE[(track["track"] - 1) % len(PALETTE)]
        faces = [(row["frame"] / fps, face) for row in rows for face in row["faces"] if face["track"] == track["track"]]
        t = np.array([s for s, _ in faces])
        raw = np.array([[f["age"]["mean"], *f["age"]["interval"]] for _, f in faces])
        fused = np.array([[f["age_fused"]["mean"], *f["age_fused"]["interval"]] for _, f in faces])
        ax.fill_between(t, raw[:, 1], raw[:, 2], step="mid", color=colour, alpha=0.12, label=f"each frame's {level:.0%} interval")
        ax.plot(t, raw[:, 0], ".", color=colour, ms=3, alpha=0.6, label="each frame's expected age")
        ax.fill_between(t, fused[:, 1], fused[:, 2], step="mid", color=colour, alpha=0.45, label="fused interval")
        ax.plot(t, fused[:, 0], "-", color="black", lw=1.2, label="fused expected age")
        ax.set_title(f"face #{track['track']}: {age_label(track['age'])} from {track['age']['frames']} frames", fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("age (years)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    return fig


def class_chart(result: dict[str, Any], threshold: float | None = None, top: int = 20) -> Figure:
    """Horizontal bars of the class scores (the ``top`` highest, best at the top); classes named
    present are coloured, the naming threshold is a dashed line."""
    items = sorted(result["scores"].items(), key=lambda kv: kv[1])[-top:]
    if "none" in result:  # the model's "none of these" output, drawn hatched among the classes
        items = sorted([*items, (NONE_LABEL, result["none"])], key=lambda kv: kv[1])
    names, scores = [k for k, _ in items], [v for _, v in items]
    fig = Figure(figsize=(6.0, 0.28 * len(items) + 1.0), layout="constrained")
    ax = fig.subplots()
    colours = [PALETTE[2] if n in result["labels"] else "#b0b0b0" for n in names]
    bars = ax.barh(names, scores, color=colours)
    if NONE_LABEL in names:
        bars[names.index(NONE_LABEL)].set(facecolor="white", edgecolor="#707070", hatch="////", linewidth=0.8)
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"named present at {threshold:.2f}")
        ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.set_xlabel("score (share of the predicted label distribution)")
    ax.set_xlim(0, max(1e-3, max(scores)) * 1.1)
    ax.set_title("objects: " + (", ".join(result["labels"]) or "none named"), fontsize=10)
    return fig


def seg_overlay(image: Image.Image, classes: np.ndarray, colours: list[tuple[int, int, int]], opacity: float = 0.6) -> Image.Image:
    """The class map's colours laid over the photo; ``opacity`` 0 shows the photo, 1 the colours only.
    ``classes`` (H, W) must match the image's size."""
    colour = Image.fromarray(colourize(classes, colours))
    return Image.blend(image.convert("RGB"), colour, float(np.clip(opacity, 0.0, 1.0)))


def uncertainty_image(unc: np.ndarray) -> Image.Image:
    """Per-pixel uncertainty in [0, 1] as a heat image (magma: black = sure, yellow = unsure)."""
    from matplotlib import colormaps

    return Image.fromarray((colormaps["magma"](np.clip(unc, 0, 1))[..., :3] * 255).astype(np.uint8))
