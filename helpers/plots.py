"""Figures: one ``save_fig`` for every notebook, and keypoint drawing shared by all chapters.

Colours: the subject's **left** side is drawn in one colour, the **right** side in another and the midline in a
third, everywhere in the project, so a flipped label shows at a glance.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from . import config
from .schemes import Scheme

SIDE_COLOURS = {1: "#e6194b", -1: "#4363d8", 0: "#f5d90a"}   # left red, right blue, midline yellow
SIDE_LABELS = {1: "subject's left", -1: "subject's right", 0: "midline"}


def set_style() -> None:
    """The project's plot style (called by each notebook's setup cell)."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "axes.titlesize": 11, "image.cmap": "gray",
                         "figure.autolayout": False})


def save_fig(fig_or_name, name: str | None = None, tight: bool = True, directory: Path | None = None) -> Path:
    """Save a figure as ``figures/<name>.png`` (name starts with its notebook's number, e.g. ``01_faces``).

    Call as ``save_fig("01_faces")`` for the current figure or ``save_fig(fig, "01_faces")``.
    """
    if isinstance(fig_or_name, str):
        fig, name = plt.gcf(), fig_or_name
    else:
        fig = fig_or_name
    if not name or any(c in name for c in " /\\"):
        raise ValueError(f"figure name must be non-empty, without spaces or slashes: {name!r}")
    out = Path(directory or config.figures_dir()) / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(out, bbox_inches="tight")
    return out


def show_keypoints(ax, image, keypoints, scheme: Scheme | None = None, lines: bool = True, size: float | None = None,
                   colour_sides: bool = True, colour=None, numbers: bool = False, title: str | None = None,
                   marker: str = "o", alpha: float = 1.0):
    """Draw ``image`` with its keypoints (K, 2) on ``ax``; left / right / midline in their colours.

    ``scheme`` adds the face's outline (jaw, brows, nose, eyes, lips) when ``lines``; ``numbers`` writes each
    keypoint's index next to it. Pass ``image=None`` to draw on what the axis already shows.
    """
    if image is not None:
        img = np.asarray(image)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0 if img.ndim == 2 else None,
                  vmax=255 if img.ndim == 2 and img.dtype == np.uint8 else None)
    kp = np.asarray(keypoints, dtype=float)
    if size is None:
        extent = ax.get_xlim()[1] - ax.get_xlim()[0] if image is None else max(np.shape(image)[:2])
        size = float(np.clip(extent / 20, 4, 30))
    if scheme is not None and lines:
        for a, b in scheme.edges:
            ax.plot(kp[[a, b], 0], kp[[a, b], 1], "-", color="white", lw=0.8, alpha=0.6 * alpha)
    if colour is not None or scheme is None or not colour_sides:
        ax.scatter(kp[:, 0], kp[:, 1], s=size, c=colour or SIDE_COLOURS[1], marker=marker, alpha=alpha,
                   edgecolors="black", linewidths=0.3)
    else:
        sides = scheme.sides
        for side in (1, -1, 0):
            m = sides == side
            ax.scatter(kp[m, 0], kp[m, 1], s=size, c=SIDE_COLOURS[side], marker=marker, alpha=alpha,
                       edgecolors="black", linewidths=0.3, label=SIDE_LABELS[side])
    if numbers:
        for i, (x, y) in enumerate(kp):
            if np.isfinite(x):
                ax.annotate(str(i), (x, y), fontsize=6, color="black", xytext=(2, 2), textcoords="offset points")
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


def face_grid(images, keypoints=None, scheme: Scheme | None = None, titles=None, ncols: int = 6,
              cell: float = 2.0, predictions=None, **kwargs):
    """A grid of faces with keypoints (and optional predictions drawn as crosses). Returns the figure."""
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        if keypoints is not None:
            show_keypoints(ax, images[i], keypoints[i], scheme, title=None if titles is None else titles[i],
                           **kwargs)
        else:
            ax.imshow(images[i], cmap="gray")
            ax.set_axis_off()
            if titles is not None:
                ax.set_title(titles[i])
        if predictions is not None:
            show_keypoints(ax, None, predictions[i], None, lines=False, colour="#3cb44b", marker="x")
    return fig


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))


BOX_COLOUR = "#3cb44b"


def draw_keypoints_cv(image, keypoints, scheme: Scheme | None = None, boxes=None, radius: int | None = None,
                      thickness: int | None = None, lines: bool = True) -> np.ndarray:
    """An RGB uint8 copy of ``image`` with faces drawn by OpenCV (for the CLI's annotated outputs).

    ``keypoints`` (K, 2) or (N, K, 2) in image pixels (NaN points are skipped); ``scheme`` adds the outline
    (jaw, brows, eyes, nose, lips) as lines, coloured by side like :data:`SIDE_COLOURS` (a segment joining two
    sides takes the midline colour); ``boxes`` (N, 4) = (x0, y0, x1, y1) are drawn as rectangles. Marker
    radius and line thickness scale with the image (about 1/250 and 1/500 of its longer side), and never
    exceed what suits each face (1/40 and 1/120 of its keypoints' extent), so small faces stay readable.
    """
    import cv2

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"draw_keypoints_cv expects an RGB(A) or gray uint8 image, got {img.dtype} {img.shape}")
    out = np.ascontiguousarray(img[..., :3]).copy()
    extent = max(out.shape[:2])
    colours = {s: _hex_to_rgb(c) for s, c in SIDE_COLOURS.items()}
    shift = 4                                     # sub-pixel precision for OpenCV drawing: 1/16 pixel
    fix = lambda p: (int(round(p[0] * 16)), int(round(p[1] * 16)))
    if boxes is not None:
        for b in np.asarray(boxes, dtype=float).reshape(-1, 4):
            if np.all(np.isfinite(b)):
                t = thickness or max(1, int(round(min(extent / 500, (b[2] - b[0]) / 120))))
                cv2.rectangle(out, fix(b[:2]), fix(b[2:]), _hex_to_rgb(BOX_COLOUR), t + 1, cv2.LINE_AA, shift)
    kps = np.asarray(keypoints, dtype=float)
    if kps.size == 0:
        return out
    kps = kps.reshape(-1, kps.shape[-2], 2)
    sides = scheme.sides if scheme is not None else np.ones(kps.shape[1], dtype=int)
    for kp in kps:
        ok = np.all(np.isfinite(kp), axis=1)
        face = float(np.ptp(kp[ok], axis=0).max()) if ok.sum() > 1 else float(extent)
        r = radius or max(1, int(round(min(extent / 250, face / 40))))
        t = thickness or max(1, int(round(min(extent / 500, face / 120))))
        if scheme is not None and lines:
            for a, b in scheme.edges:
                if ok[a] and ok[b]:
                    side = sides[a] if sides[a] == sides[b] else 0
                    cv2.line(out, fix(kp[a]), fix(kp[b]), colours[side], t, cv2.LINE_AA, shift)
        for (x, y), side, good in zip(kp, sides, ok):
            if good:
                cv2.circle(out, fix((x, y)), r * 16, colours[side], -1, cv2.LINE_AA, shift)
                cv2.circle(out, fix((x, y)), r * 16, (0, 0, 0), 1, cv2.LINE_AA, shift)
    return out
