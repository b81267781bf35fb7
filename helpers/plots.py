"""Figures: one ``save_fig`` for every notebook, and keypoint drawing shared by all chapters. The subject's
**left** side, **right** side and midline each have one colour everywhere, so a flipped label shows at a glance."""
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np

from . import config
from .schemes import Scheme

SIDE_COLOURS = {1: "#e6194b", -1: "#4363d8", 0: "#f5d90a"}   # left red, right blue, midline yellow
SIDE_LABELS = {1: "subject's left", -1: "subject's right", 0: "midline"}
BOX_COLOUR = "#3cb44b"                                       # green: detector boxes, and predictions drawn over truth


def save_fig(fig_or_name, name: str | None = None, tight: bool = True) -> Path:
    """Save the current figure or the one given as ``<figures dir>/<name>.png`` (``name``: "<chapter>_...")."""
    fig, name = (plt.gcf(), fig_or_name) if isinstance(fig_or_name, str) else (fig_or_name, name)
    if not name or any(c in name for c in " /\\"):
        raise ValueError(f"figure name must be non-empty, without spaces or slashes: {name!r}")
    out = config.figures_dir() / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(out, bbox_inches="tight")
    return out


def show_keypoints(ax, image, keypoints, scheme: Scheme | None = None, size: float | None = None,
                   numbers: bool = False, title: str | None = None, predicted: bool = False):
    """Draw ``image`` (``None``: keep what ``ax`` shows) and its keypoints (K, 2) on ``ax``: with a ``scheme``, the
    face's outline and each point in its side's colour; ``predicted``: green crosses; ``numbers``: the indices."""
    if image is not None:
        img = np.asarray(image)
        gray = img.ndim == 2
        ax.imshow(img, cmap="gray" if gray else None, vmin=0 if gray else None,
                  vmax=255 if gray and img.dtype == np.uint8 else None)
    kp = np.asarray(keypoints, dtype=float)
    if size is None:
        extent = ax.get_xlim()[1] - ax.get_xlim()[0] if image is None else max(np.shape(image)[:2])
        size = float(np.clip(extent / 20, 4, 30))
    for a, b in scheme.edges if scheme is not None else ():
        ax.plot(kp[[a, b], 0], kp[[a, b], 1], "-", color="white", lw=0.8, alpha=0.6)
    style = {"s": size, "marker": "x" if predicted else "o", "edgecolors": "black", "linewidths": 0.3}
    if scheme is None or predicted:
        ax.scatter(kp[:, 0], kp[:, 1], c=BOX_COLOUR if predicted else SIDE_COLOURS[1], **style)
    for side in (1, -1, 0) if scheme is not None and not predicted else ():
        m = scheme.sides == side
        ax.scatter(kp[m, 0], kp[m, 1], c=SIDE_COLOURS[side], label=SIDE_LABELS[side], **style)
    for i, (x, y) in enumerate(kp if numbers else ()):
        if np.isfinite(x):
            ax.annotate(str(i), (x, y), fontsize=6, color="black", xytext=(2, 2), textcoords="offset points")
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


def draw_box(ax, box, colour: str = BOX_COLOUR, style: str = "-", lw: float = 1.5) -> None:
    """Outline a box (x0, y0, x1, y1) in image pixels on a matplotlib axis."""
    x0, y0, x1, y1 = box
    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, ls=style, lw=lw))


def face_grid(images, keypoints, scheme: Scheme | None = None, titles=None, ncols: int = 6, cell: float = 2.0,
              **kwargs):
    """A figure with a grid of faces and their keypoints (``kwargs`` go to :func:`show_keypoints`)."""
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            show_keypoints(ax, images[i], keypoints[i], scheme, title=None if titles is None else titles[i], **kwargs)
    return fig


def plot_activation_peaks(peaks, highlight, labels=None, ax=None):
    """Median and 5–95 % band of :func:`helpers.evaluate.activation_peaks` per layer; rows ``highlight`` as lines."""
    ax = ax or plt.subplots(figsize=(9, 3.6))[1]
    pos = np.arange(peaks.shape[1])
    lo, mid, hi = (np.percentile(peaks.to_numpy(), q, axis=0) for q in (5, 50, 95))
    ax.fill_between(pos, lo, hi, color="0.85", label="5–95 % of the faces")
    ax.plot(pos, mid, color="0.3", lw=2, label="median face")
    for j, i in enumerate(highlight):
        ax.plot(pos, peaks.iloc[i].to_numpy(), marker="o", ms=3, label=labels[j] if labels else f"face {i}")
    ax.set(yscale="log", ylabel="largest activation", xticks=pos)
    ax.set_xticklabels(peaks.columns, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))         # beside the lines, never over them
    return ax


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))


def draw_keypoints_cv(image, keypoints, scheme: Scheme | None = None, boxes=None) -> np.ndarray:
    """An RGB uint8 copy of ``image`` with ``keypoints`` (K, 2) or (N, K, 2) (NaN skipped) in their sides' colours,
    the ``scheme``'s outline and ``boxes`` (N, 4), drawn by OpenCV at 1/16-pixel precision."""
    img = np.asarray(image)
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"draw_keypoints_cv expects an RGB(A) or gray uint8 image, got {img.dtype} {img.shape}")
    out = np.ascontiguousarray(img[..., :3]).copy()
    extent = max(out.shape[:2])
    colours = {s: _hex_to_rgb(c) for s, c in SIDE_COLOURS.items()}
    fix = lambda p: (int(round(p[0] * 16)), int(round(p[1] * 16)))     # 1/16-pixel precision (shift=4)
    for b in np.asarray(boxes if boxes is not None else [], dtype=float).reshape(-1, 4):
        if np.all(np.isfinite(b)):
            t = max(1, int(round(min(extent / 500, (b[2] - b[0]) / 120))))
            cv2.rectangle(out, fix(b[:2]), fix(b[2:]), _hex_to_rgb(BOX_COLOUR), t + 1, cv2.LINE_AA, 4)
    kps = np.asarray(keypoints, dtype=float)
    sides = scheme.sides if scheme is not None else np.ones(kps.shape[-2] if kps.size else 0, dtype=int)
    for kp in kps.reshape(-1, *kps.shape[-2:]) if kps.size else ():
        ok = np.all(np.isfinite(kp), axis=1)
        face = float(np.ptp(kp[ok], axis=0).max()) if ok.sum() > 1 else float(extent)
        r, t = (max(1, int(round(min(extent / d, face / f)))) for d, f in ((250, 40), (500, 120)))
        for a, b in scheme.edges if scheme is not None else ():
            if ok[a] and ok[b]:
                cv2.line(out, fix(kp[a]), fix(kp[b]), colours[sides[a] if sides[a] == sides[b] else 0], t,
                         cv2.LINE_AA, 4)
        for p, side in zip(kp[ok], sides[ok]):
            cv2.circle(out, fix(p), r * 16, colours[side], -1, cv2.LINE_AA, 4)
            cv2.circle(out, fix(p), r * 16, (0, 0, 0), 1, cv2.LINE_AA, 4)
    return out


def plot_history(history, title: str = ""):
    """A run's ``history.csv`` as a figure: loss, training and validation NME (best epoch marked), learning rate."""
    ep = history["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
    axes[0].plot(ep, history["loss"], label="training (augmented)")
    axes[0].set(xlabel="epoch", ylabel="masked loss", yscale="log")
    axes[1].plot(ep, 100 * history["nme"], label="training (augmented)", color="grey")
    for col in [c for c in history.columns if c.startswith("val_nme")]:
        axes[1].plot(ep, 100 * history[col], label="validation" + col[7:].replace("[", " (").replace("]", ")"),
                     lw=2 if col == "val_nme" else 1)
    best = history["val_nme"].idxmin()
    axes[1].axvline(ep[best], color="grey", ls="--", lw=0.8)
    axes[1].set(xlabel="epoch", ylabel="NME (%)", ylim=(0, 100 * float(history["val_nme"].quantile(0.9)) * 1.2))
    axes[2].plot(ep, history["lr"], color="black")
    axes[2].set(xlabel="epoch", ylabel="learning rate", yscale="log")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig
