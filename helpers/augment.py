"""Keypoint-aware augmentation: offline expansion of the training split (:func:`expand`, the thesis' method) and
on-the-fly batches (:class:`KeypointSequence`). Images are (N, H, W) gray, uint8 0-255 or float32 0-1 (kept);
keypoints (N, K, 2) float32 (x, y), 0-based pixel centres, NaN where missing (and it stays NaN). A flip swaps each
left/right pair of labels; flip, rotation, scale and shift form one warp per image. Keep-in-frame: present keypoints
stay within [margin, W - 1 - margin] (or their own extent, if already outside): the shift is drawn from the interval
that allows it, else rotation and scale are redrawn (``max_tries``), then dropped. No label is clipped or dropped."""
import functools
import hashlib
import json
from collections import namedtuple
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import keras
import numpy as np

from . import config
from .preprocess import normalise_keypoints
from .schemes import Scheme, get_scheme

_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}
_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
_EXPAND_VERSION = 1      # bump when a transform's output changes, so that stale expansion caches are ignored
_EXPAND_CHUNK = 256      # faces per augmenter call in expand(); part of the result's definition (seeding)
GeometryDraw = namedtuple("GeometryDraw", "flip angle_deg scale shift tries matrices")   # see sample_geometry


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and uniform (low, high) ranges of the transforms, intensities on the 0-1 scale."""
    flip_p: float = 0.5                       # horizontal flip (with left/right label swap)
    affine_p: float = 1.0                     # rotation, scale and shift, in the same warp as the flip
    rotation_deg: float = 15.0                # angle in ±rotation_deg, counter-clockwise on screen
    scale: tuple[float, float] = (0.9, 1.1)   # zoom factor (> 1 zooms in)
    shift: float = 0.08                       # translation in ±shift × image side, per axis
    border: str = "replicate"                 # or "reflect", "constant" (filled with border_value)
    border_value: float = 0.0
    interpolation: str = "linear"             # or "cubic", "nearest"
    keep_in_frame: bool = True                # the policy of the module docstring (off: points may leave)
    margin: float = 0.0                       # pixels kept between present keypoints and the frame's edge
    max_tries: int = 10                       # redraws of rotation and scale before falling back to none
    brightness_p: float = 0.5                 # x → (x − mean)·c + mean + b, c in contrast, b in ±brightness
    brightness: float = 0.15
    contrast: tuple[float, float] = (0.7, 1.3)
    gamma_p: float = 0.3                      # x → x ** g, log g uniform in log(gamma)
    gamma: tuple[float, float] = (0.7, 1.5)
    blur_p: float = 0.15                      # Gaussian blur, σ in blur_sigma pixels
    blur_sigma: tuple[float, float] = (0.4, 1.2)
    noise_p: float = 0.3                      # additive Gaussian noise, σ in noise_std
    noise_std: tuple[float, float] = (0.01, 0.05)
    cutout_p: float = 0.25                    # one rectangle (sides in cutout_size × side) of random gray
    cutout_size: tuple[float, float] = (0.1, 0.35)

    def __post_init__(self):
        for name in ("scale", "contrast", "gamma", "blur_sigma", "noise_std", "cutout_size"):
            lo_hi = tuple(float(v) for v in np.ravel(getattr(self, name)))
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"AugmentParams.{name} must be a (low, high) pair with low <= high, got {lo_hi}")
            object.__setattr__(self, name, lo_hi)
        probabilities = ("flip_p", "affine_p", "brightness_p", "gamma_p", "blur_p", "noise_p", "cutout_p")
        rules = [(name, 0 <= getattr(self, name) <= 1, "a probability in [0, 1]") for name in probabilities]
        rules += [(name, np.min(getattr(self, name)) >= 0, ">= 0") for name in
                  ("contrast", "noise_std", "rotation_deg", "shift", "brightness", "margin", "max_tries")]
        rules += [("scale", self.scale[0] > 0, "> 0"), ("gamma", self.gamma[0] > 0, "> 0"),
                  ("blur_sigma", self.blur_sigma[0] > 0 or self.blur_p == 0, "> 0"),
                  ("cutout_size", 0 <= self.cutout_size[0] and self.cutout_size[1] <= 1, "within [0, 1]"),
                  ("border", self.border in _BORDERS, f"one of {sorted(_BORDERS)}"),
                  ("interpolation", self.interpolation in _INTERPOLATIONS, f"one of {sorted(_INTERPOLATIONS)}")]
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"AugmentParams.{name} must be {rule}, got {getattr(self, name)!r}")


def _check(images=None, keypoints=None, scheme: Scheme | None = None, float_scale: bool = False):
    """Checked (N, H, W) uint8/float32 ``images`` (``float_scale``: 0-1) and (N, K, 2) float32 ``keypoints``."""
    if images is not None:
        images = np.asarray(images)
        images = images.astype(np.float32) if images.dtype == np.float64 else images
        if images.ndim != 3:
            raise ValueError(f"images must be a batch of grayscale images (N, H, W), got shape {images.shape}")
        if images.dtype not in (np.uint8, np.float32):
            raise TypeError(f"images must be uint8 (0-255) or float32 (0-1), got {images.dtype}")
        if float_scale and images.dtype == np.float32 and images.size and images.max() > 1.0 + 1e-3:
            raise ValueError(f"float32 images must be on the 0-1 scale (max {images.max():.4g}): divide by 255")
    if keypoints is not None:
        keypoints = np.asarray(keypoints, dtype=np.float32)
        if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
            raise ValueError(f"keypoints must have shape (N, K, 2), got {keypoints.shape}")
        if images is not None and len(keypoints) != len(images):
            raise ValueError(f"{len(keypoints)} keypoint sets for {len(images)} images")
        if scheme is not None and keypoints.shape[1] != scheme.num_keypoints:
            raise ValueError(f"K={keypoints.shape[1]} keypoints but scheme {scheme.name!r} has {scheme.num_keypoints}")
    return images, keypoints


def _to_float(images: np.ndarray) -> np.ndarray:      # uint8 0-255 → float32 0-1; always a copy
    return images.astype(np.float32) * np.float32(1 / 255) if images.dtype == np.uint8 else images.astype(np.float32)


def _from_float(x: np.ndarray, dtype) -> np.ndarray:  # float32 0-1 → dtype, clipped (uint8: rounded)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8) if dtype == np.uint8 else np.clip(x, 0.0, 1.0, out=x)


def hflip(images, keypoints, scheme: Scheme | str) -> tuple[np.ndarray, np.ndarray]:
    """Mirror images exactly (``x → W - 1 - x``) and swap each left/right pair of labels (``flip_permutation``)."""
    scheme = get_scheme(scheme)
    images, kps = _check(images, keypoints, scheme)
    out_kps = kps[:, scheme.flip_permutation, :]                   # advanced indexing: a copy
    out_kps[..., 0] = (images.shape[2] - 1) - out_kps[..., 0]
    return np.ascontiguousarray(images[:, :, ::-1]), out_kps


def affine_matrix(angle_deg=0.0, scale=1.0, shift=(0.0, 0.0), flip=False, size=config.IMAGE_SIZE) -> np.ndarray:
    """2×3 matrices mapping source to destination pixels, ``p' = L·(F(p) − c) + c + shift``: ``F`` the optional
    mirror ``x → W − 1 − x``, ``c`` the centre of an image of ``size`` (side or (H, W)), ``L`` a rotation by
    ``angle_deg`` (as ``cv2.getRotationMatrix2D``) times ``scale``. Arrays of N values give (N, 2, 3)."""
    (h, w), flip = (size, size) if np.isscalar(size) else size, np.asarray(flip, dtype=bool)
    angle, scale, shift = (np.asarray(v, dtype=np.float64) for v in (angle_deg, scale, shift))
    if shift.shape[-1:] != (2,) or np.any(scale <= 0):
        raise ValueError(f"shift must end in a (tx, ty) pair (got shape {shift.shape}) and scale be positive")
    a, b = scale * np.cos(np.deg2rad(angle)), scale * np.sin(np.deg2rad(angle))   # L = [[a, b], [-b, a]]
    sx, fx = np.where(flip, -1.0, 1.0), np.where(flip, w - 1.0, 0.0)                # F(x) = sx·x + fx
    (cx, cy), tx, ty = ((w - 1) / 2.0, (h - 1) / 2.0), shift[..., 0], shift[..., 1]
    rows = [[a * sx, b, a * (fx - cx) + b * (-cy) + cx + tx], [-b * sx, a, -b * (fx - cx) + a * (-cy) + cy + ty]]
    return np.stack([np.stack(np.broadcast_arrays(*row), axis=-1) for row in rows], axis=-2)


def transform_keypoints(keypoints, matrices) -> np.ndarray:
    """Move (N, K, 2) keypoints by (N, 2, 3) matrices (or one (2, 3)); NaN stays NaN and labels are not swapped."""
    kps = _check(keypoints=keypoints)[1]
    m = np.broadcast_to(np.asarray(matrices, dtype=np.float64), (len(kps), 2, 3))
    return (np.einsum("nij,nkj->nki", m[:, :, :2], kps.astype(np.float64)) + m[:, None, :, 2]).astype(np.float32)


def warp(images, matrices, border="replicate", border_value=0.0, interpolation="linear") -> np.ndarray:
    """Warp (N, H, W) images by (N, 2, 3) matrices (or one (2, 3)); the options as in :class:`AugmentParams`."""
    images = _check(images)[0]
    (n, h, w), out = images.shape, np.empty_like(images)
    m = np.broadcast_to(np.asarray(matrices, dtype=np.float64), (n, 2, 3))
    for i in range(n):
        cv2.warpAffine(images[i], m[i], (w, h), dst=out[i], flags=_INTERPOLATIONS[interpolation],
                       borderMode=_BORDERS[border], borderValue=border_value * (255 if images.dtype == np.uint8 else 1))
    return out


# Photometric kernels on float32 0-1 images, values a scalar or one per image; public forms below keep the dtype.
def _per_image(value, x: np.ndarray, dtype=np.float32) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape[:1]).astype(dtype)[:, None, None]


def _brightness_contrast(x, brightness=0.0, contrast=1.0):
    """``x → (x − mean)·contrast + mean + brightness`` per image (0-1 scale), clipped."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * _per_image(contrast, x) + (mean + _per_image(brightness, x))


def _gamma(x, g=1.0):
    """``x → x ** g`` on the 0-1 scale, g > 0 (g < 1 brightens shadows)."""
    if np.any(np.asarray(g) <= 0):
        raise ValueError("gamma must be positive")
    return np.power(np.clip(x, 0.0, 1.0), _per_image(g, x))


def _blur(x, sigma):
    """Gaussian blur of standard deviation ``sigma`` > 0 pixels."""
    sigma, out = _per_image(sigma, x, np.float64).ravel(), np.empty_like(x)
    for i in range(len(x)):
        cv2.GaussianBlur(np.clip(x[i], 0, 1), (0, 0), sigma[i], dst=out[i], borderType=cv2.BORDER_REPLICATE)
    return out


def _noise(x, std, rng: np.random.Generator):
    """Additive Gaussian noise of standard deviation ``std`` (0-1 scale), clipped."""
    return x + rng.standard_normal(x.shape, dtype=np.float32) * _per_image(std, x)


def _cutout(x, boxes, fill=0.0):
    """Fill the box ``(x0, y0, x1, y1)`` (half-open; (4,) or (N, 4)) of each image with gray ``fill`` (0-1 scale)."""
    b = np.broadcast_to(np.asarray(boxes, dtype=np.int64), (len(x), 4))
    rows, cols = np.arange(x.shape[1])[None, :], np.arange(x.shape[2])[None, :]
    in_rows, in_cols = (rows >= b[:, 1:2]) & (rows < b[:, 3:4]), (cols >= b[:, 0:1]) & (cols < b[:, 2:3])
    return np.where(in_rows[:, :, None] & in_cols[:, None, :], _per_image(fill, x), x)


def _any_dtype(kernel):
    def transform(images, *args, **kwargs):
        images = _check(images, float_scale=True)[0]
        return _from_float(kernel(_to_float(images), *args, **kwargs), images.dtype)
    return functools.update_wrapper(transform, kernel)


adjust_brightness_contrast, gamma, blur, noise, cutout = map(_any_dtype, (_brightness_contrast, _gamma, _blur,
                                                                         _noise, _cutout))


class Augmenter:
    """``images, keypoints = Augmenter(scheme, params)(images, keypoints, rng)``: one warp, then photometric changes."""

    def __init__(self, scheme: Scheme | str, params: AugmentParams | None = None):
        self.scheme, self.params = get_scheme(scheme), AugmentParams() if params is None else params

    def sample_geometry(self, keypoints, rng: np.random.Generator,
                        size: tuple[int, int] = (config.IMAGE_SIZE, config.IMAGE_SIZE)) -> GeometryDraw:
        """Per image of (H, W) = ``size``, keep-in-frame draws: ``flip``, ``angle_deg``, ``scale``, ``shift`` (N, 2)
        pixels, ``tries`` (draws of angle and scale; ``max_tries + 1``: the fallback) and ``matrices`` (N, 2, 3)."""
        kps = _check(keypoints=keypoints, scheme=self.scheme)[1].astype(np.float64)
        p, n, (h, w) = self.params, len(kps), size
        flip, do_affine, u_shift = rng.random(n) < p.flip_p, rng.random(n) < p.affine_p, rng.random((n, 2))
        kps[flip, :, 0] = (w - 1) - kps[flip, :, 0]   # the bounds apply to the flipped points
        present = ~np.isnan(kps).any(axis=-1)[..., None]
        bound_lo = np.minimum([p.margin, p.margin], np.where(present, kps, np.inf).min(axis=1))
        bound_hi = np.maximum([w - 1 - p.margin, h - 1 - p.margin], np.where(present, kps, -np.inf).max(axis=1))
        c, smax = np.array([(w - 1) / 2.0, (h - 1) / 2.0]), np.array([p.shift * w, p.shift * h])
        angle, scale, tries = np.zeros(n), np.ones(n), np.zeros(n, dtype=np.int64)
        lo, hi, todo, attempt = np.zeros((n, 2)), np.zeros((n, 2)), np.flatnonzero(do_affine), 0
        while todo.size:
            ang, sc = rng.uniform(-p.rotation_deg, p.rotation_deg, todo.size), rng.uniform(*p.scale, todo.size)
            if p.keep_in_frame and attempt >= p.max_tries:
                ang, sc = np.zeros(todo.size), np.ones(todo.size)      # the fallback, always feasible
            angle[todo], scale[todo], tries[todo] = ang, sc, attempt + 1
            if not p.keep_in_frame:
                lo[todo], hi[todo] = -smax, smax
                break
            a, b, d, pres = sc * np.cos(np.deg2rad(ang)), sc * np.sin(np.deg2rad(ang)), kps[todo] - c, present[todo]
            q = np.stack([a[:, None] * d[..., 0] + b[:, None] * d[..., 1] + c[0],      # rotated and scaled
                          -b[:, None] * d[..., 0] + a[:, None] * d[..., 1] + c[1]], axis=-1)
            t_lo = np.maximum(-smax, bound_lo[todo] - np.where(pres, q, np.inf).min(axis=1))   # no point: ±smax
            t_hi = np.minimum(smax, bound_hi[todo] - np.where(pres, q, -np.inf).max(axis=1))
            ok = np.all(t_lo <= t_hi + 1e-9, axis=1)
            lo[todo[ok]], hi[todo[ok]] = t_lo[ok], np.maximum(t_hi[ok], t_lo[ok])
            todo, attempt = todo[~ok], attempt + 1
        shift = np.where(do_affine[:, None], lo + u_shift * (hi - lo), 0.0)
        return GeometryDraw(flip, angle, scale, shift, tries, affine_matrix(angle, scale, shift, flip, size=(h, w)))

    def __call__(self, images, keypoints, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed))")
        (images, kps), p = _check(images, keypoints, self.scheme, float_scale=True), self.params
        geo = self.sample_geometry(kps, rng, size=images.shape[1:])
        moved = geo.flip | (geo.angle_deg != 0) | (geo.scale != 1) | np.any(geo.shift != 0, axis=1)
        out = images.copy()
        out[moved] = warp(images[moved], geo.matrices[moved], p.border, p.border_value, p.interpolation)
        out_kps = transform_keypoints(kps, geo.matrices)
        out_kps[geo.flip] = out_kps[geo.flip][:, self.scheme.flip_permutation, :]
        return self._photometric(out, rng), out_kps

    def _photometric(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw every photometric parameter for every image (a fixed number of draws), apply the chosen ones."""
        p, (n, h, w) = self.params, images.shape
        do = (rng.random((n, 5)) < [p.brightness_p, p.gamma_p, p.blur_p, p.noise_p, p.cutout_p]).T
        bright, contrast = rng.uniform(-p.brightness, p.brightness, n), rng.uniform(*p.contrast, n)
        g, sigma = np.exp(rng.uniform(*np.log(p.gamma), n)), rng.uniform(*p.blur_sigma, n)
        std, cut_wh = rng.uniform(*p.noise_std, n), rng.uniform(*p.cutout_size, (n, 2)) * [w, h]
        cut_c, fill = rng.random((n, 2)) * [w, h], rng.random(n)
        boxes = np.concatenate([np.floor(cut_c - cut_wh / 2), np.ceil(cut_c + cut_wh / 2)], axis=1).astype(np.int64)
        if not do.any():
            return images
        x = _to_float(images)
        for chosen, kernel, *values in [(do[0], _brightness_contrast, bright, contrast), (do[1], _gamma, g),
                                        (do[2], _blur, sigma), (do[3], functools.partial(_noise, rng=rng), std),
                                        (do[4], _cutout, boxes, fill)]:
            if chosen.any():
                x[chosen] = kernel(x[chosen], *(v[chosen] for v in values))
        return _from_float(x, images.dtype)


def expansion_cache_path(images, keypoints, scheme, k, seed=config.DEFAULT_SEED, params=None) -> Path:
    """Where :func:`expand` caches this expansion, named by a hash of the inputs and parameters."""
    scheme, params = get_scheme(scheme), AugmentParams() if params is None else params
    images, kps = _check(images, keypoints, scheme)
    h = hashlib.sha256(f"v{_EXPAND_VERSION}|{scheme.name}|{k}|{seed}|{images.dtype}|{images.shape}|".encode())
    for data in (json.dumps(asdict(params), sort_keys=True).encode(), np.ascontiguousarray(images), kps):
        h.update(data)
    return config.CACHE_DIR / "augment" / f"expand_{scheme.name}_k{k}_{h.hexdigest()[:20]}.npz"


def expand(images, keypoints, scheme: Scheme | str, k: int, seed: int = config.DEFAULT_SEED,
           params: AugmentParams | None = None, cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The training split ×k (expanding before the split would leak twins of validation faces): output ``c·N + i``
    is copy ``c`` of input ``i`` (copy 0: the original; sources ``np.tile(np.arange(N), k)``), its faces
    ``[j·256, (j+1)·256)`` drawn from ``default_rng([seed, c, j])`` whatever ``k``; cached if ``cache``."""
    scheme, params = get_scheme(scheme), AugmentParams() if params is None else params
    images, kps = _check(images, keypoints, scheme)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"expansion factor k must be an integer >= 1, got {k!r}")
    path = expansion_cache_path(images, kps, scheme, int(k), seed, params) if cache else None
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as data:
            return data["images"], data["keypoints"]
    augmenter, n = Augmenter(scheme, params), len(images)
    out_images, out_kps = np.concatenate([images] * k), np.concatenate([kps] * k)
    for c in range(1, k):
        for j, start in enumerate(range(0, n, _EXPAND_CHUNK)):
            rows, rng = slice(c * n + start, c * n + min(start + _EXPAND_CHUNK, n)), np.random.default_rng([seed, c, j])
            out_images[rows], out_kps[rows] = augmenter(out_images[rows], out_kps[rows], rng)
    if path is not None:
        config.write_npz(path, images=out_images, keypoints=out_kps)     # a reader never sees a half-written cache
    return out_images, out_kps


def to_model_inputs(images, keypoints, size: int = config.IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """What the networks consume: ``x`` float32 (N, size, size, 1) in [0, 1] and ``y`` float32 (N, 2K) keypoints
    ``(x0, y0, x1, y1, ...)`` normalised to [-1, 1] (pixel ``p`` → ``(p + 0.5) / size · 2 − 1``), NaN kept."""
    images, kps = _check(images, keypoints, float_scale=True)
    if images.shape[1:] != (size, size):
        raise ValueError(f"images must be (N, {size}, {size}), got {images.shape}")
    return _to_float(images)[..., None], normalise_keypoints(kps, size=size).reshape(len(kps), -1)


class KeypointSequence(keras.utils.PyDataset):
    """Batches of :func:`to_model_inputs`, augmented by ``augmenter`` (None: untouched). Epoch ``e`` visits the samples
    in the order ``default_rng([seed, e]).permutation(N)`` if ``shuffle`` (else in order), batch ``i`` augmented
    from ``default_rng([seed, e, i])``; ``epoch`` (set it, or ``on_epoch_end``) is the only state."""

    def __init__(self, images, keypoints, scheme, batch_size: int = 32, augmenter: Augmenter | None = None,
                 shuffle: bool = False, seed: int = 0, **pydataset_kwargs):
        super().__init__(**pydataset_kwargs)
        self.images, self.keypoints = _check(images, keypoints, get_scheme(scheme))
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1 or len(self.images) == 0:
            raise ValueError(f"need at least one sample and a positive integer batch_size, got {batch_size!r}")
        if augmenter is not None and augmenter.scheme.num_keypoints != self.keypoints.shape[1]:
            raise ValueError(f"augmenter scheme {augmenter.scheme.name!r} does not match {get_scheme(scheme).name!r}")
        self.batch_size, self.augmenter, self.shuffle, self.seed = int(batch_size), augmenter, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def order(self, epoch: int | None = None) -> np.ndarray:
        """Sample indices of an epoch (default: the current one) in batch order."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        return rng.permutation(len(self.images)) if self.shuffle else np.arange(len(self.images))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        idx = self.order()[index * self.batch_size:(index + 1) * self.batch_size]
        images, kps = self.images[idx], self.keypoints[idx]
        if self.augmenter is not None:
            images, kps = self.augmenter(_to_float(images), kps, np.random.default_rng([self.seed, self.epoch, index]))
        return to_model_inputs(images, kps, size=self.images.shape[1])

    def on_epoch_end(self):
        self.epoch += 1
