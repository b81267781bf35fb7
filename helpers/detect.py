"""Face detection (OpenCV's Haar cascade, as in the thesis) and the :class:`Calibration` that turns its boxes into the
crops the networks were trained on (``helpers/calibration.json``; ``facekp calibrate --fit``). Boxes are ``(x0, y0,
x1, y1)`` floats in 0-based pixel-centre coordinates, a Haar box given by its outer pixel edges."""
import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import data, preprocess, splits

CALIBRATION_PATH = Path(__file__).resolve().parent / "calibration.json"
DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
DEFAULT_SPECS = ("youtube-faces-68", "300w/helen-train")


@dataclass(frozen=True)
class DetectorParams:
    """``detectMultiScale``'s parameters; ``min_size``: the smallest face as a fraction of the detection image's
    shorter side (at least 24 px); ``max_side``: the longer side of the copy the cascade runs on (``None``: full)."""
    cascade: str = DEFAULT_CASCADE
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: float = 0.15
    max_side: int | None = 400


@lru_cache(maxsize=8)
def get_cascade(name: str = DEFAULT_CASCADE) -> cv2.CascadeClassifier:
    """An OpenCV cascade by file name (from ``cv2.data.haarcascades``) or by path."""
    path = Path(name) if Path(name).is_file() else Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FileNotFoundError(f"cannot load the Haar cascade {name!r} (looked in {cv2.data.haarcascades})")
    return cascade


def _copy_size(shape, p: DetectorParams) -> tuple[int, int]:
    """(width, height) of the copy of an image of ``shape`` that the cascade runs on."""
    h, w = shape[:2]
    s = min(1.0, p.max_side / max(h, w)) if p.max_side else 1.0
    return (max(1, round(w * s)), max(1, round(h * s))) if s < 1.0 else (w, h)


def _min_px(copy_size, p: DetectorParams) -> int:
    return max(24, int(round(p.min_size * min(copy_size))))     # never below the cascade's 24-px window


def smallest_face(shape, params: DetectorParams | None = None) -> float:
    """The smallest face side, in pixels of an image of ``shape``, that :func:`detect_faces` looks for."""
    p = params or DetectorParams()
    copy = _copy_size(shape, p)
    return _min_px(copy, p) * shape[1] / copy[0]


def detect_faces(image: np.ndarray, params: DetectorParams | None = None, **overrides) -> np.ndarray:
    """Face boxes (N, 4) float32 in the pixels of ``image`` (any array ``data.as_rgb`` takes), largest first (equal
    sizes left to right: the cascade's own order varies); keyword arguments override fields of ``params``."""
    p = replace(params or DetectorParams(), **overrides)
    gray = preprocess.to_gray(image)
    (h, w), (cw, ch) = gray.shape, _copy_size(gray.shape, p)
    if (cw, ch) != (w, h):
        gray = cv2.resize(gray, (cw, ch), interpolation=cv2.INTER_AREA)
    s, min_px = cw / w, _min_px((cw, ch), p)
    found = get_cascade(p.cascade).detectMultiScale(gray, scaleFactor=p.scale_factor, minNeighbors=p.min_neighbors,
                                                    minSize=(min_px, min_px)) if min(gray.shape) >= min_px else ()
    r = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1) / s - 0.5
    return boxes[np.lexsort((r[:, 1], r[:, 0], -(r[:, 2] * r[:, 3])))].astype(np.float32)


def iou(a, b) -> np.ndarray:
    """Intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4) → (N, M)."""
    a, b = (np.asarray(v, dtype=np.float64).reshape(-1, 4) for v in (a, b))
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a, area_b = ((v[:, 2] - v[:, 0]) * (v[:, 3] - v[:, 1]) for v in (a, b))
    return ix * iy / np.maximum(area_a[:, None] + area_b[None, :] - ix * iy, 1e-12)


def match_box(boxes: np.ndarray, target, min_iou: float = 0.3) -> int:
    """Index of the box in ``boxes`` that overlaps ``target`` most (IoU ≥ ``min_iou``), else -1."""
    overlap = iou(boxes, target)[:, 0]
    best = int(np.argmax(overlap)) if len(overlap) else -1
    return best if best >= 0 and overlap[best] >= min_iou else -1


def crop_box(crop) -> np.ndarray:
    """A crop (x0, y0, side) as the box (x0, y0, x1, y1) of its outer pixel edges."""
    x0, y0, side = (float(v) for v in crop)
    return np.array([x0 - 0.5, y0 - 0.5, x0 + side - 0.5, y0 + side - 0.5])


def match_dataset(dataset, params: DetectorParams | None = None, min_iou: float = 0.3, progress: bool = True) -> dict:
    """The detector on each image of a dataset: ``detector`` boxes (N, 4; NaN: no match), ``landmark``, ``seconds``."""
    n = len(dataset)
    out = {"detector": np.full((n, 4), np.nan), "landmark": np.full((n, 4), np.nan), "seconds": np.zeros(n)}
    for i in tqdm(range(n), desc=f"detecting {dataset.name}", disable=not progress, leave=False):
        out["landmark"][i] = preprocess.keypoint_box(dataset.keypoints[i])
        t = time.perf_counter()
        boxes = detect_faces(dataset.images[i], params)
        out["seconds"][i] = time.perf_counter() - t
        j = match_box(boxes, out["landmark"][i], min_iou)
        if j >= 0:
            out["detector"][i] = boxes[j]
    return out


@dataclass(frozen=True)
class Calibration:
    """``box_to_crop(detector_box, scale, shift)`` ≈ the landmark crop the networks were trained on."""
    scale: float
    shift: tuple[float, float]
    stats: dict = field(default_factory=dict, compare=False)

    def crop(self, box) -> np.ndarray:     # (x0, y0, side) for one detector box
        return preprocess.box_to_crop(box, self.scale, self.shift)


UNCALIBRATED = Calibration(1.0, (0.0, 0.0), {"note": "the detector box itself, no margin (the seed)"})


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The fitted calibration (package data ``helpers/calibration.json`` unless ``path`` is given)."""
    path = Path(path or CALIBRATION_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no detector calibration at {path}: fit one with `facekp calibrate --fit`")
    d = json.loads(path.read_text())
    return Calibration(float(d["scale"]), (float(d["shift"][0]), float(d["shift"][1])), dict(d.get("stats", {})))


def save_calibration(calibration: Calibration, path: str | Path | None = None) -> Path:
    path = Path(path or CALIBRATION_PATH)
    path.write_text(json.dumps({"scale": calibration.scale, "shift": list(calibration.shift),
                                "stats": calibration.stats}, indent=2) + "\n")
    return path


def face_crops(boxes, calibration: Calibration) -> np.ndarray:
    """Crops (N, 3) = (x0, y0, side) for detector boxes (N, 4), through ``preprocess.box_to_crop``."""
    return np.array([calibration.crop(b) for b in np.reshape(boxes, (-1, 4))], dtype=np.int64).reshape(-1, 3)


def _size_centre(boxes) -> tuple[np.ndarray, np.ndarray]:
    """Longer side (N,) and centre (N, 2) of boxes (N, 4)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), (b[:, :2] + b[:, 2:]) / 2


def crop_agreement(detector_boxes, landmark_boxes, calibration: Calibration) -> dict:
    """How well ``calibration`` turns detector boxes into the landmark crops: IoU, side and centre errors."""
    got = np.array([crop_box(calibration.crop(b)) for b in np.reshape(detector_boxes, (-1, 4))]).reshape(-1, 4)
    want = np.array([crop_box(preprocess.box_to_crop(b)) for b in np.reshape(landmark_boxes, (-1, 4))]).reshape(-1, 4)
    ious = np.array([iou(g, w)[0, 0] for g, w in zip(got, want)])
    (side_got, centre_got), (side_want, centre_want) = _size_centre(got), _size_centre(want)
    centre_err = np.linalg.norm(centre_got - centre_want, axis=1) / side_want
    return {"iou_mean": float(ious.mean()), "iou_median": float(np.median(ious)),
            "iou_p05": float(np.percentile(ious, 5)), "side_ratio_median": float(np.median(side_got / side_want)),
            "centre_error_median": float(np.median(centre_err)), "n": int(len(ious))}


def solve_calibration(detector_boxes, landmark_boxes) -> tuple[float, tuple[float, float]]:
    """Median scale and shift with ``box_to_crop(det, scale, shift)`` ≈ ``box_to_crop(landmark)``."""
    det = np.asarray(detector_boxes, dtype=np.float64).reshape(-1, 4)
    ok = np.all(np.isfinite(det), axis=1)
    if ok.sum() < 3:
        raise ValueError(f"need at least 3 matched detections to fit a calibration, got {ok.sum()}")
    size_d, centre_d = _size_centre(det[ok])
    size_t, centre_t = _size_centre(np.reshape(landmark_boxes, (-1, 4))[ok])
    scale = float(np.median(preprocess.CROP_SCALE * size_t / size_d))
    shift = np.median((centre_t - centre_d) / (scale * size_d)[:, None], axis=0)
    return scale, (float(shift[0]), float(shift[1]))


def fit_calibration(specs=DEFAULT_SPECS, params: DetectorParams | None = None, max_faces: int | None = None,
                    min_iou: float = 0.3, progress: bool = True) -> Calibration:
    """:func:`solve_calibration` on the *train* splits of ``specs`` (detections matched with IoU ≥ ``min_iou``);
    ``stats``: detection rates and crop agreement with and without it, on train and on the unseen *val* split."""
    p, t0 = params or DetectorParams(), time.time()
    parts, per_set = {"train": [], "val": []}, {}                 # matches per split, detection rates per data set
    for spec in specs:
        ds = data.load(spec, max_faces=max_faces, progress=progress)
        labels = splits.assign_splits(ds.identities, splits.fractions_for(spec))
        per_set[spec] = {}
        for part, matches in parts.items():
            idx = np.flatnonzero(labels == part)
            if len(idx):
                m = match_dataset(ds.subset(idx), p, min_iou, progress)
                found = np.isfinite(m["detector"][:, 0])
                matches.append({k: m[k][found] for k in ("detector", "landmark")})
                per_set[spec][part] = {"images": int(len(idx)), "detected": int(found.sum()),
                                       "detection_rate": float(found.mean())}
    merged = {part: {k: np.concatenate([m[k] for m in ms]) for k in ms[0]} for part, ms in parts.items() if ms}
    train = merged["train"]
    cal = Calibration(*solve_calibration(train["detector"], train["landmark"]))
    ratio = preprocess.CROP_SCALE * _size_centre(train["landmark"])[0] / _size_centre(train["detector"])[0]
    stats = {"fitted_on": [f"{s} (train split)" for s in specs], "detector": asdict(p), "min_iou": min_iou,
             "per_dataset": per_set, "train_faces_matched": int(len(ratio)),
             "scale_ratio_p25_p75": [float(np.percentile(ratio, 25)), float(np.percentile(ratio, 75))]}
    for part, m in merged.items():
        stats[part] = {kind: crop_agreement(m["detector"], m["landmark"], c)
                       for kind, c in (("calibrated", cal), ("uncalibrated", UNCALIBRATED))}
    stats["fit_seconds"] = round(time.time() - t0, 1)
    return Calibration(round(cal.scale, 4), (round(cal.shift[0], 4), round(cal.shift[1], 4)), stats)


def calibration_summary(cal: Calibration) -> str:
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
