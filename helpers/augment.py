"""Keypoint-aware data augmentation: geometric and photometric transforms, offline expansion, training sequence.

One set of transforms serves both uses of chapter 03:

* **offline dataset expansion** (the thesis' method): :func:`expand` turns the *training split* into ``k``
  versions of itself (the originals plus ``k - 1`` augmented copies), reproducibly, cached as ``.npz``;
* **on-the-fly augmentation**: :class:`KeypointSequence` is a ``keras.utils.PyDataset`` that draws fresh
  transforms for every batch of the training split. Validation and test sequences are built without an
  augmenter and never change a pixel.

Conventions
-----------
* Images are batches ``(N, H, W)`` of grayscale ``uint8`` (values 0-255) or ``float32`` (values 0-1).
  Every transform returns the dtype it was given.
* Keypoints are ``(N, K, 2)`` float32 ``(x, y)`` in pixels, with **0-based pixel centres**: the centre of
  the top-left pixel is ``(0, 0)`` and a horizontal mirror maps ``x`` to ``W - 1 - x``. This is also
  OpenCV's convention for ``cv2.warpAffine``, so a keypoint moves by exactly the matrix that moves the
  pixels. ``NaN`` marks a missing keypoint and stays ``NaN`` through every transform.
* "Left" and "right" are the subject's sides (see :mod:`helpers.schemes`); a flip mirrors the pixels and
  swaps the labels of each left/right pair, so that "left eye" still names the subject's left eye.
* All randomness comes from a ``numpy.random.Generator`` passed in by the caller: the same seed gives the
  same batch.

Geometric transforms
--------------------
Flip, rotation (about the image centre), scale and shift are composed into **one** 2×3 affine matrix per
image and applied with **one** ``cv2.warpAffine`` call (one bilinear interpolation). The border mode is
``cv2.BORDER_REPLICATE`` by default: it invents no structure (a reflected border can mirror an eye or a jaw
line into the frame) and leaves no hard black edge for the network to latch onto.

Out-of-frame policy (``AugmentParams.keep_in_frame``, default on): every *present* keypoint must stay
inside the frame ``[margin, W - 1 - margin]`` (a point that already lay outside the crop before the
transform only has to stay within its own original extent). Rotation and scale are drawn first; the shift is
then drawn uniformly from the interval of shifts that keeps all points inside (intersected with
``±shift · W``). When no shift can do it, rotation and scale are **redrawn** (up to ``max_tries`` times);
after that the sample falls back to no rotation and no scale, which is always feasible. Labels are thus
never silently clipped or dropped.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import keras
import numpy as np

from helpers import config
from helpers.preprocess import normalise_keypoints
from helpers.schemes import Scheme, get_scheme

__all__ = [
    "AugmentParams", "GeometryDraw", "Augmenter",
    "hflip", "affine_matrix", "transform_keypoints", "warp",
    "adjust_brightness_contrast", "gamma", "noise", "blur", "cutout",
    "expand", "expansion_cache_path",
    "to_model_inputs", "KeypointSequence", "make_sequences",
]

_BORDERS = {
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT_101,
    "constant": cv2.BORDER_CONSTANT,
}
_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}

# Bump when a transform changes its output for the same inputs, so that stale expansion caches are ignored.
_EXPAND_VERSION = 1
_EXPAND_CHUNK = 256      # faces augmented per call in expand(); part of the result's definition (seeding)


# ----------------------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentParams:
    """Ranges and probabilities of every transform. The defaults are the project's training setting.

    Geometric (composed into one affine warp):
        flip_p: probability of a horizontal flip (labels are swapped with the scheme's pairs).
        affine_p: probability that an image gets a random rotation, scale and shift.
        rotation_deg: rotation angle drawn uniformly from ``±rotation_deg`` degrees.
        scale: zoom factor drawn uniformly from this ``(low, high)`` range.
        shift: translation drawn uniformly from ``±shift`` × image side, per axis.
        border: ``"replicate"``, ``"reflect"`` or ``"constant"`` (``border_value`` fills, 0-1 scale).
        interpolation: ``"linear"`` (default), ``"cubic"`` or ``"nearest"``.
        keep_in_frame: apply the out-of-frame policy of the module docstring (redraw/bound); if False the
            parameters are drawn freely and keypoints may leave the frame (they keep their coordinates).
        margin: keypoints must stay at least this many pixels inside the frame.
        max_tries: redraws of rotation and scale before falling back to the identity.

    Photometric (keypoints unchanged; applied after the warp, in this order):
        brightness_p, brightness, contrast: ``x → (x - mean)·c + mean + b`` with ``c ∈ contrast`` and
            ``b ∈ ±brightness`` (0-1 scale).
        gamma_p, gamma: ``x → x ** g`` with ``log g`` uniform in ``log(gamma)``.
        blur_p, blur_sigma: Gaussian blur with σ (pixels) uniform in ``blur_sigma``.
        noise_p, noise_std: additive Gaussian noise with σ (0-1 scale) uniform in ``noise_std``.
        cutout_p, cutout_size: one random rectangle (sides uniform in ``cutout_size`` × image side, centre
            anywhere in the frame) filled with a uniform random gray level.
    """

    flip_p: float = 0.5
    affine_p: float = 1.0
    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.08
    border: str = "replicate"
    border_value: float = 0.0
    interpolation: str = "linear"
    keep_in_frame: bool = True
    margin: float = 0.0
    max_tries: int = 10

    brightness_p: float = 0.5
    brightness: float = 0.15
    contrast: tuple[float, float] = (0.7, 1.3)
    gamma_p: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    blur_p: float = 0.15
    blur_sigma: tuple[float, float] = (0.4, 1.2)
    noise_p: float = 0.3
    noise_std: tuple[float, float] = (0.01, 0.05)
    cutout_p: float = 0.25
    cutout_size: tuple[float, float] = (0.1, 0.35)

    def __post_init__(self):
        for name in ("flip_p", "affine_p", "brightness_p", "gamma_p", "blur_p", "noise_p", "cutout_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"AugmentParams.{name} must be a probability in [0, 1], got {p}")
        for name in ("scale", "contrast", "gamma", "blur_sigma", "noise_std", "cutout_size"):
            lo_hi = tuple(float(v) for v in getattr(self, name))
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"AugmentParams.{name} must be a (low, high) pair with low <= high, got {lo_hi}")
            object.__setattr__(self, name, lo_hi)
        if self.scale[0] <= 0 or self.gamma[0] <= 0 or self.contrast[0] < 0:
            raise ValueError("scale and gamma must be positive, contrast non-negative")
        if self.blur_sigma[0] <= 0 and self.blur_p > 0:
            raise ValueError("blur_sigma must be positive")
        if self.noise_std[0] < 0 or not (0 <= self.cutout_size[0] and self.cutout_size[1] <= 1):
            raise ValueError("noise_std must be >= 0 and cutout_size within [0, 1]")
        if self.rotation_deg < 0 or self.shift < 0 or self.brightness < 0 or self.margin < 0:
            raise ValueError("rotation_deg, shift, brightness and margin must be >= 0")
        if self.max_tries < 0:
            raise ValueError("max_tries must be >= 0")
        if self.border not in _BORDERS:
            raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {self.border!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}")

    # Convenience presets -------------------------------------------------------------------------------
    @classmethod
    def none(cls) -> "AugmentParams":
        """Every probability zero: the augmenter returns its input unchanged (useful as a control)."""
        return cls(flip_p=0, affine_p=0, brightness_p=0, gamma_p=0, blur_p=0, noise_p=0, cutout_p=0)

    def geometric_only(self) -> "AugmentParams":
        """These parameters with every photometric transform switched off."""
        return replace(self, brightness_p=0, gamma_p=0, blur_p=0, noise_p=0, cutout_p=0)

    def photometric_only(self) -> "AugmentParams":
        """These parameters with flip and affine switched off."""
        return replace(self, flip_p=0, affine_p=0)

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------
def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"{name} must be a batch of grayscale images (N, H, W), got shape {images.shape}")
    if images.dtype == np.float64:
        images = images.astype(np.float32)
    if images.dtype not in (np.uint8, np.float32):
        raise TypeError(f"{name} must be uint8 (0-255) or float32 (0-1), got {images.dtype}")
    return images


def _check_keypoints(keypoints: np.ndarray, n: int | None = None, scheme: Scheme | None = None) -> np.ndarray:
    kps = np.asarray(keypoints, dtype=np.float32)
    if kps.ndim != 3 or kps.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (N, K, 2), got {kps.shape}")
    if n is not None and kps.shape[0] != n:
        raise ValueError(f"{kps.shape[0]} keypoint sets for {n} images")
    if scheme is not None and kps.shape[1] != scheme.num_keypoints:
        raise ValueError(f"keypoints have K={kps.shape[1]} points but scheme {scheme.name!r} "
                         f"has {scheme.num_keypoints}")
    return kps


def _check_float_scale(images: np.ndarray) -> None:
    """Float images must be on the 0-1 scale: clipping 0-255 floats to [0, 1] would silently whiten them."""
    if images.dtype == np.float32 and images.size and float(images.max()) > 1.0 + 1e-3:
        raise ValueError(f"float32 images must be on the 0-1 scale (max {float(images.max()):.4g}); "
                         "pass uint8 0-255 images or divide by 255")


def _check_batch(images, keypoints, scheme) -> tuple[np.ndarray, np.ndarray]:
    images = _check_images(images)
    return images, _check_keypoints(keypoints, images.shape[0], scheme)


def _to_float(images: np.ndarray) -> np.ndarray:
    """uint8 0-255 → float32 0-1; float32 passes through (copied, so callers may modify in place)."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=True)


def _from_float(images: np.ndarray, dtype) -> np.ndarray:
    """float32 0-1 → ``dtype`` (uint8 rounds and clips; float32 clips to [0, 1])."""
    if dtype == np.uint8:
        return np.clip(images * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(images, 0.0, 1.0, out=images)


def _per_sample(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------------------------------
# Geometric transforms
# ----------------------------------------------------------------------------------------------------------
def hflip(images: np.ndarray, keypoints: np.ndarray, scheme: Scheme | str) -> tuple[np.ndarray, np.ndarray]:
    """Mirror images left ↔ right and relabel their keypoints.

    ``x' = W - 1 - x`` (0-based pixel centres), then the scheme's flip permutation swaps every left/right pair
    so that labels keep naming the subject's sides. Exact (no interpolation); ``hflip ∘ hflip`` is the identity.

    Args:
        images: (N, H, W) uint8 or float32.
        keypoints: (N, K, 2) pixels, NaN = missing.
        scheme: the keypoint scheme (or its name), whose ``flip_permutation`` is applied.
    Returns:
        (images, keypoints), new arrays.
    """
    scheme = get_scheme(scheme)
    images, kps = _check_batch(images, keypoints, scheme)
    width = images.shape[2]
    out_kps = kps[:, scheme.flip_permutation, :].copy()
    out_kps[..., 0] = (width - 1) - out_kps[..., 0]
    return np.ascontiguousarray(images[:, :, ::-1]), out_kps


def affine_matrix(angle_deg=0.0, scale=1.0, shift=(0.0, 0.0), flip=False, size=config.IMAGE_SIZE) -> np.ndarray:
    """2×3 matrices (or a batch of them) mapping source pixel coordinates to destination coordinates.

    The composition, applied to a point ``p`` (pixels, 0-based centres), is::

        p' = L · (F(p) − c) + c + t

    with ``F`` the optional mirror ``x → W − 1 − x``, ``c = ((W − 1)/2, (H − 1)/2)`` the image centre, ``L`` a
    rotation by ``angle_deg`` (positive = counter-clockwise on screen, as ``cv2.getRotationMatrix2D``) times
    ``scale``, and ``t = shift`` in pixels. ``scale > 1`` zooms in.

    Every argument broadcasts: scalars give one (2, 3) matrix, arrays of length N give (N, 2, 3).

    Args:
        angle_deg: rotation in degrees.
        scale: zoom factor (> 0).
        shift: (tx, ty) in pixels, or an (N, 2) array.
        flip: mirror horizontally first.
        size: image side ``W`` (int, square) or ``(H, W)``.
    """
    h, w = (size, size) if np.isscalar(size) else size
    angle = np.asarray(angle_deg, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    flip = np.asarray(flip, dtype=bool)
    if shift.shape[-1:] != (2,):
        raise ValueError(f"shift must end in a (tx, ty) pair, got shape {shift.shape}")
    if np.any(scale <= 0):
        raise ValueError("scale must be positive")
    batch_shape = np.broadcast_shapes(angle.shape, scale.shape, shift.shape[:-1], flip.shape)
    theta = np.deg2rad(angle)
    a = np.broadcast_to(scale * np.cos(theta), batch_shape)
    b = np.broadcast_to(scale * np.sin(theta), batch_shape)
    sx = np.broadcast_to(np.where(flip, -1.0, 1.0), batch_shape)        # F's linear part: diag(sx, 1)
    fx = np.broadcast_to(np.where(flip, w - 1.0, 0.0), batch_shape)      # F's offset: (fx, 0)
    tx = np.broadcast_to(shift[..., 0], batch_shape)
    ty = np.broadcast_to(shift[..., 1], batch_shape)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = np.empty(batch_shape + (2, 3), dtype=np.float64)
    # L = [[a, b], [-b, a]];  M_lin = L · diag(sx, 1);  M_off = L · ((fx, 0) − c) + c + t
    m[..., 0, 0] = a * sx
    m[..., 0, 1] = b
    m[..., 1, 0] = -b * sx
    m[..., 1, 1] = a
    m[..., 0, 2] = a * (fx - cx) + b * (-cy) + cx + tx
    m[..., 1, 2] = -b * (fx - cx) + a * (-cy) + cy + ty
    return m


def _check_matrices(matrices, n: int, what: str) -> np.ndarray:
    """(N, 2, 3) float64 matrices for ``n`` items; one (2, 3) matrix is shared by all."""
    m = np.asarray(matrices, dtype=np.float64)
    if m.shape[-2:] != (2, 3) or m.ndim not in (2, 3):
        raise ValueError(f"matrices must have shape (N, 2, 3) or (2, 3), got {m.shape}")
    if m.ndim == 2:
        m = np.broadcast_to(m, (n, 2, 3))
    if m.shape[0] != n:
        raise ValueError(f"{m.shape[0]} matrices for {n} {what}")
    return m


def transform_keypoints(keypoints: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply (N, 2, 3) (or one (2, 3)) affine matrices to (N, K, 2) keypoints; NaN stays NaN.

    This moves coordinates only; it does not relabel. After a matrix that contains a flip, apply the scheme's
    ``flip_permutation`` (as :func:`hflip` and :class:`Augmenter` do).
    """
    kps = _check_keypoints(keypoints)
    m = _check_matrices(matrices, kps.shape[0], "keypoint sets")
    out = np.einsum("nij,nkj->nki", m[:, :, :2], kps.astype(np.float64)) + m[:, None, :, 2]
    return out.astype(np.float32)


def warp(images: np.ndarray, matrices: np.ndarray, border: str = "replicate", border_value: float = 0.0,
         interpolation: str = "linear") -> np.ndarray:
    """Warp each image with its 2×3 matrix in one ``cv2.warpAffine`` call (source → destination mapping).

    Args:
        images: (N, H, W) uint8 or float32; the output has the same shape and dtype.
        matrices: (N, 2, 3) or one (2, 3) for all, as returned by :func:`affine_matrix`.
        border: ``"replicate"``, ``"reflect"`` or ``"constant"``.
        border_value: fill of the constant border on the 0-1 scale (×255 for uint8 images).
        interpolation: ``"linear"``, ``"cubic"`` or ``"nearest"``.
    """
    images = _check_images(images)
    m = _check_matrices(matrices, images.shape[0], "images")
    if border not in _BORDERS or interpolation not in _INTERPOLATIONS:
        raise ValueError(f"border must be in {sorted(_BORDERS)}, interpolation in {sorted(_INTERPOLATIONS)}")
    h, w = images.shape[1:]
    value = border_value * 255.0 if images.dtype == np.uint8 else border_value
    out = np.empty_like(images)
    flags, mode = _INTERPOLATIONS[interpolation], _BORDERS[border]
    for i in range(images.shape[0]):
        cv2.warpAffine(images[i], m[i], (w, h), dst=out[i], flags=flags, borderMode=mode, borderValue=value)
    return out


# ----------------------------------------------------------------------------------------------------------
# Photometric transforms (keypoints unchanged). Public functions keep the dtype; _*_f work on float 0-1.
# ----------------------------------------------------------------------------------------------------------
def _brightness_contrast_f(x: np.ndarray, brightness: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=(1, 2), keepdims=True)
    c = contrast.astype(np.float32)[:, None, None]
    b = brightness.astype(np.float32)[:, None, None]
    return (x - mean) * c + (mean + b)


def _gamma_f(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.power(np.clip(x, 0.0, 1.0), g.astype(np.float32)[:, None, None])


def _blur_f(x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        cv2.GaussianBlur(x[i], (0, 0), float(sigma[i]), dst=out[i], borderType=cv2.BORDER_REPLICATE)
    return out


def _noise_f(x: np.ndarray, std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    field_ = rng.standard_normal(x.shape, dtype=np.float32)
    return x + field_ * std.astype(np.float32)[:, None, None]


def _cutout_f(x: np.ndarray, boxes: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """boxes: (n, 4) integer (x0, y0, x1, y1), half-open."""
    h, w = x.shape[1:]
    rows = (np.arange(h)[None, :] >= boxes[:, 1:2]) & (np.arange(h)[None, :] < boxes[:, 3:4])
    cols = (np.arange(w)[None, :] >= boxes[:, 0:1]) & (np.arange(w)[None, :] < boxes[:, 2:3])
    mask = rows[:, :, None] & cols[:, None, :]
    return np.where(mask, fill.astype(np.float32)[:, None, None], x)


def _photometric(images, fn, *args):
    images = _check_images(images)
    _check_float_scale(images)
    out = fn(_to_float(images), *args)
    return _from_float(out, images.dtype)


def adjust_brightness_contrast(images: np.ndarray, brightness=0.0, contrast=1.0) -> np.ndarray:
    """``x → (x − mean)·contrast + mean + brightness`` per image (0-1 scale), clipped. Scalars or (N,) arrays."""
    n = _check_images(images).shape[0]
    return _photometric(images, _brightness_contrast_f, _per_sample(brightness, n, "brightness"),
                        _per_sample(contrast, n, "contrast"))


def gamma(images: np.ndarray, g=1.0) -> np.ndarray:
    """Gamma curve ``x → x ** g`` on the 0-1 scale (g < 1 brightens shadows). Scalar or (N,) array."""
    n = _check_images(images).shape[0]
    g = _per_sample(g, n, "g")
    if np.any(g <= 0):
        raise ValueError("gamma must be positive")
    return _photometric(images, _gamma_f, g)


def noise(images: np.ndarray, std, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of standard deviation ``std`` (0-1 scale), clipped. Scalar or (N,) array."""
    n = _check_images(images).shape[0]
    std = _per_sample(std, n, "std")
    if np.any(std < 0):
        raise ValueError("noise std must be >= 0")
    return _photometric(images, _noise_f, std, rng)


def blur(images: np.ndarray, sigma) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (> 0). Scalar or (N,) array."""
    n = _check_images(images).shape[0]
    sigma = _per_sample(sigma, n, "sigma")
    if np.any(sigma <= 0):
        raise ValueError("blur sigma must be positive")
    return _photometric(images, _blur_f, sigma)


def cutout(images: np.ndarray, boxes, fill=0.0) -> np.ndarray:
    """Fill one rectangle per image with a constant gray level (0-1 scale).

    Args:
        boxes: (N, 4) or (4,) integer ``(x0, y0, x1, y1)``, half-open pixel ranges (clipped to the image).
        fill: scalar or (N,) gray levels on the 0-1 scale.
    """
    images = _check_images(images)
    n = images.shape[0]
    boxes = np.asarray(boxes, dtype=np.int64)
    if boxes.shape == (4,):
        boxes = np.broadcast_to(boxes, (n, 4))
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape ({n}, 4) or (4,), got {boxes.shape}")
    return _photometric(images, _cutout_f, boxes, _per_sample(fill, n, "fill"))


# ----------------------------------------------------------------------------------------------------------
# The augmenter
# ----------------------------------------------------------------------------------------------------------
class GeometryDraw(NamedTuple):
    """The geometric parameters drawn for a batch (one entry per image)."""

    flip: np.ndarray        # (N,) bool
    angle_deg: np.ndarray   # (N,)
    scale: np.ndarray       # (N,)
    shift: np.ndarray       # (N, 2) pixels
    tries: np.ndarray       # (N,) draws of (angle, scale) used; max_tries + 1 means the identity fallback
    matrices: np.ndarray    # (N, 2, 3)


class Augmenter:
    """Random keypoint-aware augmentation of batches: ``images, keypoints = augmenter(images, keypoints, rng)``.

    Per image: an optional flip, rotation, scale and shift in one warp (see the module docstring for the
    out-of-frame policy), then brightness/contrast, gamma, blur, noise and cut-out, each with its probability.
    Parameters are drawn vectorised over the batch; pixels are warped one ``cv2.warpAffine`` per image.

    Args:
        scheme: keypoint scheme (or its name ``"68"``/``"15"``) whose left/right pairs a flip swaps.
        params: :class:`AugmentParams` (default: the project's training setting).
    """

    def __init__(self, scheme: Scheme | str, params: AugmentParams | None = None):
        self.scheme = get_scheme(scheme)
        self.params = params if params is not None else AugmentParams()
        if not isinstance(self.params, AugmentParams):
            raise TypeError(f"params must be AugmentParams, got {type(self.params).__name__}")
        self._perm = self.scheme.flip_permutation

    def __repr__(self) -> str:
        return f"Augmenter(scheme={self.scheme.name!r}, params={self.params!r})"

    # -- geometry ----------------------------------------------------------------------------------------
    def sample_geometry(self, keypoints: np.ndarray, rng: np.random.Generator,
                        size: tuple[int, int] = (config.IMAGE_SIZE, config.IMAGE_SIZE)) -> GeometryDraw:
        """Draw flip, rotation, scale and shift for each image, honouring the out-of-frame policy.

        Args:
            keypoints: (N, K, 2) pixel keypoints of the batch (before augmentation).
            rng: the generator every draw comes from.
            size: (H, W) of the images.
        """
        kps = _check_keypoints(keypoints, scheme=self.scheme).astype(np.float64)
        p = self.params
        n = kps.shape[0]
        h, w = size
        flip = rng.random(n) < p.flip_p
        do_affine = rng.random(n) < p.affine_p
        u_shift = rng.random((n, 2))                 # position of the shift within its allowed interval
        smax = np.array([p.shift * w, p.shift * h])
        angle = np.zeros(n)
        scale = np.ones(n)
        tries = np.zeros(n, dtype=np.int64)

        # Keypoints after the flip only: they define the bounds (frame, widened to the points' own extent).
        flipped = kps.copy()
        flipped[flip, :, 0] = (w - 1) - flipped[flip, :, 0]
        present = ~np.isnan(flipped).any(axis=-1)                             # (N, K)
        lo_frame = np.array([p.margin, p.margin])
        hi_frame = np.array([w - 1 - p.margin, h - 1 - p.margin])
        own_lo = np.where(present[..., None], flipped, np.inf).min(axis=1)          # (N, 2); +inf: no points
        own_hi = np.where(present[..., None], flipped, -np.inf).max(axis=1)
        bound_lo = np.minimum(lo_frame, own_lo)
        bound_hi = np.maximum(hi_frame, own_hi)
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])

        def shift_interval(idx, ang, sc):
            """Allowed shifts (lo, hi), each (m, 2), for samples idx with rotation ang and scale sc."""
            t = np.deg2rad(ang)
            a, b = sc * np.cos(t), sc * np.sin(t)
            d = flipped[idx] - centre                                         # (m, K, 2)
            qx = a[:, None] * d[..., 0] + b[:, None] * d[..., 1] + centre[0]
            qy = -b[:, None] * d[..., 0] + a[:, None] * d[..., 1] + centre[1]
            q = np.stack([qx, qy], axis=-1)
            pres = present[idx][..., None]
            q_lo = np.where(pres, q, np.inf).min(axis=1)
            q_hi = np.where(pres, q, -np.inf).max(axis=1)
            lo = np.maximum(-smax, bound_lo[idx] - q_lo)      # q_lo is +inf when no point is present:
            hi = np.minimum(smax, bound_hi[idx] - q_hi)       # then the shift is free (next two lines)
            lo = np.where(np.isfinite(q_lo), lo, -smax)
            hi = np.where(np.isfinite(q_hi), hi, smax)
            return lo, hi

        todo = np.flatnonzero(do_affine)
        shift_lo = np.zeros((n, 2))
        shift_hi = np.zeros((n, 2))
        attempt = 0
        while todo.size:
            m = todo.size
            ang = rng.uniform(-p.rotation_deg, p.rotation_deg, m)
            sc = rng.uniform(p.scale[0], p.scale[1], m)
            if p.keep_in_frame and attempt >= p.max_tries:
                ang, sc = np.zeros(m), np.ones(m)                             # identity fallback: feasible
            angle[todo], scale[todo] = ang, sc
            tries[todo] = attempt + 1
            if not p.keep_in_frame:
                shift_lo[todo], shift_hi[todo] = -smax, smax
                break
            lo, hi = shift_interval(todo, ang, sc)
            ok = np.all(lo <= hi + 1e-9, axis=1)
            shift_lo[todo[ok]], shift_hi[todo[ok]] = lo[ok], np.maximum(hi[ok], lo[ok])
            todo = todo[~ok]
            attempt += 1
        shift = np.where(do_affine[:, None], shift_lo + u_shift * (shift_hi - shift_lo), 0.0)
        matrices = affine_matrix(angle, scale, shift, flip, size=(h, w))
        return GeometryDraw(flip, angle, scale, shift, tries, matrices)

    # -- the whole pipeline ------------------------------------------------------------------------------
    def __call__(self, images: np.ndarray, keypoints: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment a batch. Returns new ``(images, keypoints)``; images keep their dtype.

        Args:
            images: (N, H, W) uint8 (0-255) or float32 (0-1).
            keypoints: (N, K, 2) float pixels, NaN = missing; K must match the scheme.
            rng: ``numpy.random.Generator``; the same generator state gives the same output.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed))")
        images, kps = _check_batch(images, keypoints, self.scheme)
        _check_float_scale(images)
        p = self.params
        n, h, w = images.shape
        geo = self.sample_geometry(kps, rng, size=(h, w))

        # Geometry: one warp per image that needs one; keypoints by the same matrix, then relabel flips.
        moved = geo.flip | (np.abs(geo.angle_deg) > 0) | (geo.scale != 1) | np.any(geo.shift != 0, axis=1)
        out = images.copy()
        idx = np.flatnonzero(moved)
        if idx.size:
            out[idx] = warp(images[idx], geo.matrices[idx], p.border, p.border_value, p.interpolation)
        out_kps = transform_keypoints(kps, geo.matrices)
        out_kps[geo.flip] = out_kps[geo.flip][:, self._perm, :]

        # Photometric: draw everything for every image (fixed draw count), apply to the chosen ones.
        u = rng.random((n, 5))
        do_bc, do_gamma, do_blur, do_noise, do_cut = (u < [p.brightness_p, p.gamma_p, p.blur_p,
                                                           p.noise_p, p.cutout_p]).T
        bright = rng.uniform(-p.brightness, p.brightness, n)
        contrast = rng.uniform(p.contrast[0], p.contrast[1], n)
        g = np.exp(rng.uniform(np.log(p.gamma[0]), np.log(p.gamma[1]), n))
        sigma = rng.uniform(p.blur_sigma[0], p.blur_sigma[1], n)
        std = rng.uniform(p.noise_std[0], p.noise_std[1], n)
        cut_wh = rng.uniform(p.cutout_size[0], p.cutout_size[1], (n, 2)) * [w, h]
        cut_c = rng.random((n, 2)) * [w, h]
        cut_fill = rng.random(n)
        if not (do_bc.any() or do_gamma.any() or do_blur.any() or do_noise.any() or do_cut.any()):
            return out, out_kps

        x = _to_float(out)
        if do_bc.any():
            x[do_bc] = _brightness_contrast_f(x[do_bc], bright[do_bc], contrast[do_bc])
        if do_gamma.any():
            x[do_gamma] = _gamma_f(x[do_gamma], g[do_gamma])
        if do_blur.any():
            x[do_blur] = _blur_f(np.clip(x[do_blur], 0, 1), sigma[do_blur])
        if do_noise.any():
            x[do_noise] = _noise_f(x[do_noise], std[do_noise], rng)
        if do_cut.any():
            c, s = cut_c[do_cut], cut_wh[do_cut]
            boxes = np.concatenate([np.floor(c - s / 2), np.ceil(c + s / 2)], axis=1).astype(np.int64)
            x[do_cut] = _cutout_f(x[do_cut], boxes, cut_fill[do_cut])
        return _from_float(x, images.dtype), out_kps


# ----------------------------------------------------------------------------------------------------------
# Offline expansion (the thesis' method), cached
# ----------------------------------------------------------------------------------------------------------
def _expand_key(images: np.ndarray, keypoints: np.ndarray, scheme: Scheme, k: int, seed: int,
                params: AugmentParams) -> str:
    h = hashlib.sha256()
    h.update(f"v{_EXPAND_VERSION}|{scheme.name}|{k}|{seed}|{images.dtype}|{images.shape}|".encode())
    h.update(params.to_json().encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(keypoints, dtype=np.float32).tobytes())
    return h.hexdigest()[:20]


def expansion_cache_path(images, keypoints, scheme, k, seed=config.DEFAULT_SEED, params=None) -> Path:
    """Where :func:`expand` caches this expansion (a hash of the inputs and parameters names the file)."""
    scheme = get_scheme(scheme)
    params = params if params is not None else AugmentParams()
    images, kps = _check_batch(images, keypoints, scheme)
    key = _expand_key(images, kps, scheme, k, seed, params)
    return config.CACHE_DIR / "augment" / f"expand_{scheme.name}_k{k}_{key}.npz"


def expand(images: np.ndarray, keypoints: np.ndarray, scheme: Scheme | str, k: int,
           seed: int = config.DEFAULT_SEED, params: AugmentParams | None = None,
           cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Offline dataset expansion ×k: the originals followed by ``k − 1`` augmented copies.

    Apply it to the **training split only**, after splitting: expanding before the split would put augmented
    twins of validation faces into training.

    Output sample ``c·N + i`` is copy ``c`` of input ``i`` (copy 0 is the unchanged original), so the source
    index of every output is ``np.tile(np.arange(N), k)`` (use it to carry names or identities along).
    Copy ``c`` of the faces ``[j·256, (j+1)·256)`` is drawn from ``np.random.default_rng([seed, c, j])``:
    reproducible, and one copy does not depend on how many others there are.

    Args:
        images: (N, H, W) uint8 or float32.
        keypoints: (N, K, 2) pixels, NaN = missing.
        scheme: keypoint scheme or its name.
        k: expansion factor (>= 1).
        seed: seed of the expansion.
        params: :class:`AugmentParams` (default: the training setting).
        cache: read/write ``CACHE_DIR/augment/expand_*.npz`` keyed by a hash of the inputs and parameters.
    Returns:
        (images (k·N, H, W), keypoints (k·N, K, 2)).
    """
    scheme = get_scheme(scheme)
    params = params if params is not None else AugmentParams()
    images, kps = _check_batch(images, keypoints, scheme)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"expansion factor k must be an integer >= 1, got {k!r}")
    path = None
    if cache:
        path = expansion_cache_path(images, kps, scheme, int(k), seed, params)
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                return data["images"], data["keypoints"]

    augmenter = Augmenter(scheme, params)
    n = images.shape[0]
    out_images = np.empty((k * n,) + images.shape[1:], dtype=images.dtype)
    out_kps = np.empty((k * n,) + kps.shape[1:], dtype=np.float32)
    out_images[:n], out_kps[:n] = images, kps
    for c in range(1, k):
        for j, start in enumerate(range(0, n, _EXPAND_CHUNK)):
            sl = slice(start, min(start + _EXPAND_CHUNK, n))
            im, kp = augmenter(images[sl], kps[sl], np.random.default_rng([seed, c, j]))
            out_images[c * n + sl.start:c * n + sl.stop] = im
            out_kps[c * n + sl.start:c * n + sl.stop] = kp

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)      # atomic: write, then rename
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, images=out_images, keypoints=out_kps)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out_images, out_kps


# ----------------------------------------------------------------------------------------------------------
# Model inputs and the training sequence
# ----------------------------------------------------------------------------------------------------------
def to_model_inputs(images: np.ndarray, keypoints: np.ndarray,
                    size: int = config.IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Convert a batch to what the networks consume.

    Args:
        images: (N, size, size) uint8 (0-255) or float32 (already 0-1).
        keypoints: (N, K, 2) pixels of the crop, NaN = missing.
    Returns:
        x: float32 (N, size, size, 1) in [0, 1];
        y: float32 (N, 2K) normalised keypoints ``(x0, y0, x1, y1, ...)`` in [-1, 1] (pixel ``p`` maps to
        ``(p + 0.5) / size · 2 − 1``), NaN kept for missing points (the loss masks them).
    """
    images = _check_images(images)
    if images.shape[1:] != (size, size):
        raise ValueError(f"images must be (N, {size}, {size}), got {images.shape}")
    _check_float_scale(images)
    kps = _check_keypoints(keypoints, images.shape[0])
    x = images.astype(np.float32) * np.float32(1 / 255) if images.dtype == np.uint8 else images.astype(np.float32)
    y = normalise_keypoints(kps, size=size).reshape(kps.shape[0], -1)
    return x[..., None], y


class KeypointSequence(keras.utils.PyDataset):
    """Batches ``(x, y)`` for ``model.fit`` / ``evaluate`` / ``predict``, with optional on-the-fly augmentation.

    ``x`` is float32 (B, 96, 96, 1) in [0, 1] and ``y`` float32 (B, 2K) normalised keypoints with NaN for
    missing points (see :func:`to_model_inputs`). With ``augmenter=None`` (validation, test) the images are
    passed through untouched.

    Determinism: the order of epoch ``e`` is ``default_rng([seed, e]).permutation(N)`` (if ``shuffle``) and the
    augmentation of batch ``i`` in epoch ``e`` draws from ``default_rng([seed, e, i])``, so every batch is the
    same whatever the worker scheduling. ``epoch`` counts the calls of ``on_epoch_end``, one after each epoch, so
    the first epoch of ``model.fit`` is ``epoch == 0``; it is the only state that changes (a resumed run sets it
    to the number of epochs already done, see :func:`helpers.train.train_model`).

    Args:
        images: (N, 96, 96) uint8 (or float32 0-1).
        keypoints: (N, K, 2) pixels, NaN = missing; K must match ``scheme``.
        scheme: keypoint scheme or its name.
        batch_size: samples per batch (the last batch may be smaller).
        augmenter: an :class:`Augmenter` (training) or None.
        shuffle: reshuffle every epoch (training) or keep the input order.
        seed: seed of shuffling and augmentation.
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` for ``keras.utils.PyDataset``.
    """

    def __init__(self, images, keypoints, scheme, batch_size: int = 32, augmenter: Augmenter | None = None,
                 shuffle: bool = False, seed: int = 0, **pydataset_kwargs):
        super().__init__(**pydataset_kwargs)
        self.scheme = get_scheme(scheme)
        self.images, self.keypoints = _check_batch(images, keypoints, self.scheme)
        if self.images.shape[0] == 0:
            raise ValueError("KeypointSequence needs at least one sample")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if augmenter is not None:
            if not isinstance(augmenter, Augmenter):
                raise TypeError(f"augmenter must be an Augmenter or None, got {type(augmenter).__name__}")
            if augmenter.scheme.num_keypoints != self.scheme.num_keypoints:
                raise ValueError(f"augmenter scheme {augmenter.scheme.name!r} does not match {self.scheme.name!r}")
        self.batch_size = int(batch_size)
        self.augmenter = augmenter
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self._order_epoch = None
        self._order = None

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """Sample indices of an epoch (default: the current one) in batch order."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(self.num_samples)
        if self._order_epoch != epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            self._order_epoch = epoch
        return self._order

    def batch_indices(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        return self.order()[index * self.batch_size:(index + 1) * self.batch_size]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.batch_indices(index)
        images, kps = self.images[idx], self.keypoints[idx]
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            images = images.astype(np.float32) * np.float32(1 / 255) if images.dtype == np.uint8 else images
            images, kps = self.augmenter(images, kps, rng)
        return to_model_inputs(images, kps, size=self.images.shape[1])

    def on_epoch_end(self):
        self.epoch += 1


def _faces_arrays(faces) -> tuple[np.ndarray, np.ndarray, Scheme]:
    try:
        return faces.images, faces.keypoints, get_scheme(faces.scheme)
    except AttributeError as e:
        raise TypeError("expected a Faces object with .images, .keypoints and .scheme "
                        f"(helpers.splits.load_faces), got {type(faces).__name__}") from e


def make_sequences(train_faces, val_faces, batch_size: int = 32, augment: bool = True,
                   seed: int = config.DEFAULT_SEED, params: AugmentParams | None = None,
                   **pydataset_kwargs) -> tuple[KeypointSequence, KeypointSequence | None]:
    """The training sequence (shuffled, augmented if ``augment``) and the validation sequence (never either).

    Args:
        train_faces, val_faces: ``Faces`` objects (``.images``, ``.keypoints``, ``.scheme``); ``val_faces``
            may be None.
        batch_size: batch size of both.
        augment: augment the training batches on the fly with ``params``.
        seed: seed of shuffling and augmentation.
        params: :class:`AugmentParams` (default: the training setting).
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``, for both sequences.
    """
    images, kps, scheme = _faces_arrays(train_faces)
    augmenter = Augmenter(scheme, params) if augment else None
    train = KeypointSequence(images, kps, scheme, batch_size, augmenter=augmenter, shuffle=True, seed=seed,
                             **pydataset_kwargs)
    val = None
    if val_faces is not None:
        v_images, v_kps, v_scheme = _faces_arrays(val_faces)
        if v_scheme.num_keypoints != scheme.num_keypoints:
            raise ValueError(f"train scheme {scheme.name!r} and validation scheme {v_scheme.name!r} differ")
        val = KeypointSequence(v_images, v_kps, v_scheme, batch_size, augmenter=None, shuffle=False, seed=seed,
                               **pydataset_kwargs)
    return train, val
