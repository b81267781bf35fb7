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
    out = Path(directory or config.FIGURES_DIR) / f"{name}.png"
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
