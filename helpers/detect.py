"""Face detection (OpenCV's Haar cascade, as in the thesis) and the detector-box calibration.

From any photograph to the boxes the keypoint networks need:

1. :func:`read_photo` — a file to RGB uint8, EXIF orientation honoured; grayscale, palette, RGBA (composited on
   white), 16-bit and float inputs normalised; empty, truncated and non-image files raise
   :class:`ImageReadError` with a message that says which;
2. :func:`detect_faces` — Haar cascade on a grayscale copy downscaled to at most ``max_side`` pixels (speed),
   boxes mapped back to the original image's pixel coordinates;
3. :func:`face_crops` — a detector box is *not* the landmark box the training crops were cut around: the
   :class:`Calibration` (``scale``, ``shift``) fitted by :func:`fit_calibration` on training images maps one to
   the other through :func:`helpers.preprocess.box_to_crop`, the one place the crop geometry lives.

Boxes are ``(x0, y0, x1, y1)`` floats in the original image's 0-based pixel-centre coordinates; a Haar box
is reported by its outer pixel edges (pixel ``x`` spans ``x - 0.5 .. x + 0.5``), so it does not depend on the
downscaling factor. The fitted calibration is package data, ``helpers/calibration.json``; refit it with
``python -m helpers.detect --fit``.
"""
from __future__ import annotations

import argparse
import io
import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from . import preprocess

CALIBRATION_PATH = Path(__file__).resolve().parent / "calibration.json"
DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
MAX_PIXELS = 250_000_000          # refuse to decode images larger than this (about 15800 × 15800)


class ImageReadError(ValueError):
    """A file could not be read as an image (empty, truncated, not an image, too large)."""


# --------------------------------------------------------------------------------------------------------------
# Reading and normalising images
# --------------------------------------------------------------------------------------------------------------
def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any image array → RGB uint8 (H, W, 3).

    Accepts gray (H, W) or (H, W, 1), gray + alpha (H, W, 2), RGB and RGBA, as bool, uint8, uint16 (scaled by
    1/257), other integers (scaled by their maximum value) or floats in [0, 1]. Alpha is composited on white.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (2, 3, 4)):
        raise ValueError(f"expected a (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) image, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"empty image of shape {img.shape}")
    if img.dtype == np.bool_:
        img = img.astype(np.float32)
    if img.dtype == np.uint8:
        f = None
    elif img.dtype == np.uint16:
        f = img.astype(np.float32) / 65535.0
    elif img.dtype.kind in "iu":
        info = np.iinfo(img.dtype)
        f = np.clip(img.astype(np.float64), 0, None) / info.max
    elif img.dtype.kind == "f":
        f = np.nan_to_num(img.astype(np.float32), nan=0.0)
    else:
        raise ValueError(f"unsupported image dtype {img.dtype}")
    if f is not None:
        img = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2))
    if img.shape[2] in (2, 4):                      # composite the alpha channel on white
        colour, alpha = img[..., :-1].astype(np.float32), img[..., -1:].astype(np.float32) / 255.0
        if np.all(alpha == 1.0):
            img = img[..., :-1]
        else:
            img = (colour * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _is_16bit_png(data: bytes) -> bool:
    # PNG signature, then the IHDR chunk: its bit depth is byte 24 of the file
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[24] == 16


def read_photo(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), rotated as its EXIF orientation says.

    Uses Pillow (``ImageOps.exif_transpose``); 16-bit PNGs and formats Pillow does not know go through
    ``cv2.imdecode(..., IMREAD_UNCHANGED)``. Raises :class:`ImageReadError` for a missing, empty, truncated,
    non-image or oversized file, with the reason in the message.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    data = path.read_bytes()
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    if not _is_16bit_png(data):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        if im.width * im.height > max_pixels:
                            raise ImageReadError(f"{path}: {im.width}x{im.height} image is larger than the "
                                                 f"{max_pixels:,}-pixel limit")
                        im = ImageOps.exif_transpose(im)       # also forces the full decode
                        im.load()
                        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                            arr = np.asarray(im, dtype=np.uint16)
                        elif im.mode in ("I", "F"):
                            arr = np.asarray(im)
                            arr = arr.astype(np.float32) / (65535.0 if arr.max(initial=0) > 255 else 255.0)
                        elif im.mode in ("L", "RGB", "RGBA", "LA"):
                            arr = np.asarray(im)
                        elif "A" in im.getbands() or "transparency" in im.info:
                            arr = np.asarray(im.convert("RGBA"))
                        else:                                  # 1, P, CMYK, YCbCr, LAB, HSV ...
                            arr = np.asarray(im.convert("RGB"))
                finally:
                    Image.MAX_IMAGE_PIXELS = old
            return as_rgb(arr)
        except ImageReadError:
            raise
        except UnidentifiedImageError:
            pass                                               # not a Pillow format: try OpenCV below
        except (OSError, SyntaxError, ValueError) as e:       # truncated or corrupt data
            raise ImageReadError(f"{path}: truncated or corrupt image data ({e})") from None
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise ImageReadError(f"{path}: not an image (neither Pillow nor OpenCV can decode its "
                             f"{len(data)} bytes)")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise ImageReadError(f"{path}: {arr.shape[1]}x{arr.shape[0]} image is larger than the "
                             f"{max_pixels:,}-pixel limit")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return as_rgb(arr)


def load_image(image) -> np.ndarray:
    """A path (str / Path) or an array → RGB uint8 (H, W, 3)."""
    if isinstance(image, (str, Path)):
        return read_photo(image)
    return as_rgb(image)


# --------------------------------------------------------------------------------------------------------------
# Haar cascade detection
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorParams:
    """Haar cascade parameters.

    ``scale_factor`` and ``min_neighbors`` are ``detectMultiScale``'s; ``min_size`` is the smallest face, as a
    fraction of the detection image's shorter side (never below the cascade's 24-pixel window);
    ``max_side`` is the longer side of the downscaled copy the cascade runs on (``None``: full size).
    """

    cascade: str = DEFAULT_CASCADE
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: float = 0.15
    max_side: int | None = 400

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=8)
def get_cascade(name: str = DEFAULT_CASCADE) -> cv2.CascadeClassifier:
    """An OpenCV cascade by file name (from ``cv2.data.haarcascades``) or by path."""
    path = Path(name)
    if not path.is_file():
        path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FileNotFoundError(f"cannot load the Haar cascade {name!r} (looked in {cv2.data.haarcascades})")
    return cascade


def detection_image(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """The gray, downscaled copy the cascade runs on, and its scale factor (detection px per image px)."""
    gray = image if (image.ndim == 2 and image.dtype == np.uint8) else preprocess.to_gray(as_rgb(image))
    h, w = gray.shape
    s = 1.0 if not max_side or max(h, w) <= max_side else max_side / max(h, w)
    if s < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        s = gray.shape[1] / w                     # the factor actually used (after rounding)
    return gray, s


def detect_faces(image: np.ndarray, params: DetectorParams | None = None, **overrides) -> np.ndarray:
    """Face boxes (N, 4) = (x0, y0, x1, y1) float32 in ``image``'s pixel coordinates, largest first.

    ``image``: RGB / RGBA / gray array (any dtype :func:`as_rgb` accepts). Keyword arguments override fields
    of ``params`` (e.g. ``min_neighbors=3``).
    """
    p = replace(params or DetectorParams(), **overrides)
    img = np.asarray(image)
    gray = img if (img.ndim == 2 and img.dtype == np.uint8) else preprocess.to_gray(as_rgb(img))
    small, s = detection_image(gray, p.max_side)
    min_px = max(24, int(round(p.min_size * min(small.shape))))
    if min(small.shape) < min_px:
        return np.zeros((0, 4), dtype=np.float32)
    found = get_cascade(p.cascade).detectMultiScale(small, scaleFactor=p.scale_factor,
                                                    minNeighbors=p.min_neighbors, minSize=(min_px, min_px))
    if len(found) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    r = np.asarray(found, dtype=np.float64)
    boxes = np.stack([r[:, 0] / s - 0.5, r[:, 1] / s - 0.5, (r[:, 0] + r[:, 2]) / s - 0.5,
                      (r[:, 1] + r[:, 3]) / s - 0.5], axis=1)
    order = np.argsort(-(r[:, 2] * r[:, 3]), kind="stable")
    return boxes[order].astype(np.float32)


def iou(a, b) -> np.ndarray:
    """Intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4) → (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_box(boxes: np.ndarray, target, min_iou: float = 0.3) -> int:
    """Index of the box in ``boxes`` that overlaps ``target`` most (IoU ≥ ``min_iou``), else -1."""
    if len(boxes) == 0:
        return -1
    overlap = iou(boxes, target)[:, 0]
    best = int(np.argmax(overlap))
    return best if overlap[best] >= min_iou else -1


def crop_box(crop) -> np.ndarray:
    """A crop (x0, y0, side) as the box (x0, y0, x1, y1) of its outer pixel edges."""
    x0, y0, side = (float(v) for v in crop)
    return np.array([x0 - 0.5, y0 - 0.5, x0 + side - 0.5, y0 + side - 0.5])


# --------------------------------------------------------------------------------------------------------------
# Calibration: detector box → training crop
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """``box_to_crop(detector_box, scale, shift)`` ≈ the landmark crop the networks were trained on."""

    scale: float
    shift: tuple[float, float]
    stats: dict = field(default_factory=dict, compare=False)

    def crop(self, box) -> np.ndarray:
        return preprocess.box_to_crop(box, self.scale, self.shift)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "shift": list(self.shift), "stats": self.stats}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(float(d["scale"]), (float(d["shift"][0]), float(d["shift"][1])), dict(d.get("stats", {})))


# What the seed did: the Haar box itself, without margin.
UNCALIBRATED = Calibration(1.0, (0.0, 0.0), {"note": "the detector box itself, no margin (the seed)"})


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The fitted calibration (package data ``helpers/calibration.json`` unless ``path`` is given)."""
    path = Path(path or CALIBRATION_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no detector calibration at {path}: fit one with `python -m helpers.detect --fit`")
    return Calibration.from_dict(json.loads(path.read_text()))


def save_calibration(calibration: Calibration, path: str | Path | None = None) -> Path:
    path = Path(path or CALIBRATION_PATH)
    path.write_text(json.dumps(calibration.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def face_crops(boxes, calibration: Calibration | None = None) -> np.ndarray:
    """Crops (N, 3) = (x0, y0, side) for detector boxes (N, 4), through ``preprocess.box_to_crop``."""
    cal = calibration or load_calibration()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.array([cal.crop(b) for b in boxes], dtype=np.int64).reshape(-1, 3)


def match_dataset(dataset, params: DetectorParams | None = None, min_iou: float = 0.3,
                  progress: bool = True) -> dict:
    """Run the detector on every image of a :class:`helpers.data.Dataset`; match each to its landmark box.

    Returns arrays: ``detector`` (N, 4) matched detector boxes (NaN where none matched), ``landmark`` (N, 4)
    landmark boxes, ``detections`` (N,) the number of boxes found, ``seconds`` (N,) detection time.
    """
    from tqdm import tqdm

    n = len(dataset)
    det = np.full((n, 4), np.nan)
    lmk = np.full((n, 4), np.nan)
    count = np.zeros(n, dtype=int)
    seconds = np.zeros(n)
    for i in tqdm(range(n), desc=f"detecting {dataset.name}", disable=not progress, leave=False):
        lmk[i] = preprocess.keypoint_box(dataset.keypoints[i])
        t = time.perf_counter()
        boxes = detect_faces(dataset.images[i], params)
        seconds[i] = time.perf_counter() - t
        count[i] = len(boxes)
        j = match_box(boxes, lmk[i], min_iou)
        if j >= 0:
            det[i] = boxes[j]
    return {"detector": det, "landmark": lmk, "detections": count, "seconds": seconds}


def _target(landmark_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Side and centre (unrounded) of the training crops of landmark boxes (N, 4)."""
    lb = np.asarray(landmark_boxes, dtype=np.float64)
    side = preprocess.CROP_SCALE * np.maximum(lb[:, 2] - lb[:, 0], lb[:, 3] - lb[:, 1])
    centre = np.stack([(lb[:, 0] + lb[:, 2]) / 2, (lb[:, 1] + lb[:, 3]) / 2], axis=1)
    return side, centre


def crop_agreement(detector_boxes, landmark_boxes, calibration: Calibration) -> dict:
    """How well ``calibration`` turns detector boxes into the landmark crops: IoU, side and centre errors."""
    det = np.asarray(detector_boxes, dtype=np.float64).reshape(-1, 4)
    lmk = np.asarray(landmark_boxes, dtype=np.float64).reshape(-1, 4)
    got = np.array([crop_box(calibration.crop(b)) for b in det]).reshape(-1, 4)
    want = np.array([crop_box(preprocess.box_to_crop(b)) for b in lmk]).reshape(-1, 4)
    ious = np.array([iou(g, w)[0, 0] for g, w in zip(got, want)])
    side_got, side_want = got[:, 2] - got[:, 0], want[:, 2] - want[:, 0]
    centre_err = np.hypot((got[:, 0] + got[:, 2] - want[:, 0] - want[:, 2]) / 2,
                          (got[:, 1] + got[:, 3] - want[:, 1] - want[:, 3]) / 2) / side_want
    return {"iou_mean": float(ious.mean()), "iou_median": float(np.median(ious)),
            "iou_p05": float(np.percentile(ious, 5)),
            "side_ratio_median": float(np.median(side_got / side_want)),
            "centre_error_median": float(np.median(centre_err)), "n": int(len(ious))}


def solve_calibration(detector_boxes, landmark_boxes) -> tuple[float, tuple[float, float]]:
    """Robust (median) scale and shift with ``box_to_crop(det, scale, shift)`` ≈ ``box_to_crop(landmark)``."""
    det = np.asarray(detector_boxes, dtype=np.float64).reshape(-1, 4)
    ok = np.all(np.isfinite(det), axis=1)
    det = det[ok]
    if len(det) < 3:
        raise ValueError(f"need at least 3 matched detections to fit a calibration, got {len(det)}")
    side_t, centre_t = _target(np.asarray(landmark_boxes, dtype=np.float64).reshape(-1, 4)[ok])
    size_d = np.maximum(det[:, 2] - det[:, 0], det[:, 3] - det[:, 1])
    centre_d = np.stack([(det[:, 0] + det[:, 2]) / 2, (det[:, 1] + det[:, 3]) / 2], axis=1)
    scale = float(np.median(side_t / size_d))
    shift = np.median((centre_t - centre_d) / (scale * size_d)[:, None], axis=0)
    return scale, (float(shift[0]), float(shift[1]))


def fit_calibration(specs=("youtube-faces-68", "300w/helen-train"), params: DetectorParams | None = None,
                    max_faces: int | None = None, min_iou: float = 0.3, progress: bool = True) -> Calibration:
    """Fit the detector-box → training-crop mapping on the *train* splits of ``specs``; check it on *val*.

    For each image: run the cascade, match the detection with the highest IoU (≥ ``min_iou``) to the landmark
    box, and solve (median) for ``scale`` and ``shift``. ``stats`` reports detection rates, the spread of the
    per-face ratios, and the agreement (IoU with the landmark crop) with and without calibration, on train and
    on the validation split the fit never saw.
    """
    from . import data, splits

    p = params or DetectorParams()
    parts = {"train": [], "val": []}
    per_set = {}
    t0 = time.time()
    for spec in specs:
        ds = data.load(spec, max_faces=max_faces, progress=progress)
        labels = splits.assign_splits(ds.identities, splits.fractions_for(spec))
        per_set[spec] = {}
        for part in parts:
            idx = np.flatnonzero(labels == part)
            if len(idx) == 0:
                continue
            m = match_dataset(ds.subset(idx), p, min_iou, progress)
            parts[part].append(m)
            per_set[spec][part] = {"images": int(len(idx)),
                                   "detected": int(np.isfinite(m["detector"][:, 0]).sum()),
                                   "detection_rate": float(np.isfinite(m["detector"][:, 0]).mean())}
    merged = {part: {k: np.concatenate([m[k] for m in ms]) for k in ms[0]} for part, ms in parts.items() if ms}
    train = merged["train"]
    ok = np.isfinite(train["detector"][:, 0])
    scale, shift = solve_calibration(train["detector"][ok], train["landmark"][ok])
    cal = Calibration(scale, shift)
    size_d = np.maximum(train["detector"][ok, 2] - train["detector"][ok, 0],
                        train["detector"][ok, 3] - train["detector"][ok, 1])
    side_t, _ = _target(train["landmark"][ok])
    ratio = side_t / size_d
    stats = {
        "fitted_on": [f"{s} (train split)" for s in specs],
        "detector": p.as_dict(),
        "min_iou": min_iou,
        "per_dataset": per_set,
        "train_faces_matched": int(ok.sum()),
        "scale_ratio_p25_p75": [float(np.percentile(ratio, 25)), float(np.percentile(ratio, 75))],
        "train": {"calibrated": crop_agreement(train["detector"][ok], train["landmark"][ok], cal),
                  "uncalibrated": crop_agreement(train["detector"][ok], train["landmark"][ok], UNCALIBRATED)},
        "fit_seconds": round(time.time() - t0, 1),
    }
    if "val" in merged:
        val = merged["val"]
        okv = np.isfinite(val["detector"][:, 0])
        stats["val"] = {"calibrated": crop_agreement(val["detector"][okv], val["landmark"][okv], cal),
                        "uncalibrated": crop_agreement(val["detector"][okv], val["landmark"][okv], UNCALIBRATED)}
    return Calibration(round(scale, 4), (round(shift[0], 4), round(shift[1], 4)), stats)


def calibration_summary(cal: Calibration) -> str:
    """A few lines describing a fitted calibration."""
    s = cal.stats
    lines = [f"scale {cal.scale:.4f}, shift ({cal.shift[0]:+.4f}, {cal.shift[1]:+.4f}) × crop side"]
    if "train_faces_matched" in s:
        lines.append(f"fitted on {s['train_faces_matched']} matched training faces of {', '.join(s['fitted_on'])}; "
                     f"per-face scale ratio IQR {s['scale_ratio_p25_p75'][0]:.3f}-{s['scale_ratio_p25_p75'][1]:.3f}")
        for part in ("train", "val"):
            if part in s:
                c, u = s[part]["calibrated"], s[part]["uncalibrated"]
                lines.append(f"{part:>5}: IoU with the landmark crop, median {c['iou_median']:.3f} calibrated vs "
                             f"{u['iou_median']:.3f} uncalibrated (n={c['n']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.detect",
                                     description="Fit the Haar-box → training-crop calibration.")
    parser.add_argument("--fit", action="store_true", help="fit and write helpers/calibration.json")
    parser.add_argument("--specs", nargs="+", default=["youtube-faces-68", "300w/helen-train"])
    parser.add_argument("--max-faces", type=int, default=None)
    parser.add_argument("--out", default=str(CALIBRATION_PATH))
    args = parser.parse_args(argv)
    if not args.fit:
        print(calibration_summary(load_calibration(args.out)))
        return 0
    cal = fit_calibration(args.specs, max_faces=args.max_faces)
    save_calibration(cal, args.out)
    print(calibration_summary(cal))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
