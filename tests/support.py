"""Test support: synthetic faces, .pts writing, and a marker for tests that need the real data."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import config


def write_face(path: Path, keypoints: np.ndarray, size=(120, 100), seed: int = 0) -> None:
    """A synthetic face-like JPEG/PNG (noise + an ellipse) with the keypoints drawn as dots."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    cv2.ellipse(img, (w // 2, h // 2), (w // 3, h // 2 - 5), 0, 0, 360, (180, 150, 130), -1)
    for x, y in keypoints:
        if np.isfinite(x):
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def face_68(w=120, h=100, jitter=0.0, seed=0) -> np.ndarray:
    """68 plausible keypoints inside a w×h image (subject's right eye on the image's left)."""
    rng = np.random.default_rng(seed)
    jaw = np.c_[np.linspace(0.15, 0.85, 17), 0.45 + 0.4 * np.sin(np.linspace(0, np.pi, 17))]
    brows = np.c_[np.r_[np.linspace(0.22, 0.44, 5), np.linspace(0.56, 0.78, 5)], np.full(10, 0.3)]
    nose = np.c_[np.r_[np.full(4, 0.5), np.linspace(0.42, 0.58, 5)], np.r_[np.linspace(0.35, 0.55, 4), np.full(5, 0.6)]]
    eye = lambda cx: np.c_[cx + 0.07 * np.cos(np.linspace(np.pi, -np.pi, 6, endpoint=False)),
                           0.4 + 0.02 * np.sin(np.linspace(np.pi, -np.pi, 6, endpoint=False))]
    mouth = np.c_[0.5 + 0.15 * np.cos(np.linspace(np.pi, -np.pi, 12, endpoint=False)),
                  0.72 + 0.05 * np.sin(np.linspace(np.pi, -np.pi, 12, endpoint=False))]
    inner = np.c_[0.5 + 0.1 * np.cos(np.linspace(np.pi, -np.pi, 8, endpoint=False)),
                  0.72 + 0.02 * np.sin(np.linspace(np.pi, -np.pi, 8, endpoint=False))]
    pts = np.r_[jaw, brows, nose, eye(0.33), eye(0.67), mouth, inner]
    pts = pts * [w, h] + rng.normal(0, jitter, pts.shape)
    assert pts.shape == (68, 2)
    return pts.astype(np.float32)


def write_pts(path: Path, keypoints0: np.ndarray) -> None:
    """Write 0-based keypoints as a 1-based iBUG .pts file."""
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in keypoints0)
    path.write_text(f"version: 1\nn_points: {len(keypoints0)}\n{{\n{body}\n}}\n")


needs_real_data = pytest.mark.skipif(
    not (config.data_root() / "youtube-faces-68" / "training_frames_keypoints.csv").exists(),
    reason="real data not found: set FKP_DATA_DIR (see data/README.md)")


def randomise_bn(model, seed: int = 7):
    """Give every BatchNormalization layer (nested models included) random statistics and affine parameters,
    as a trained network has: folding, widening and copying them is then checked, not a pass-through."""
    from keras import layers

    rng = np.random.default_rng(seed)

    def all_layers(m):
        for layer in m.layers:
            yield layer
            if hasattr(layer, "layers"):
                yield from all_layers(layer)

    for layer in all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
    return model
