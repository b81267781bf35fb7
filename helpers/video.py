"""Video (chapter 09, ``facekp video``): a face tracked through a file or webcam in the networks' training crops, its
keypoints checked against the shape model and smoothed in face sizes (any resolution); annotated video, JSON lines."""
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import applications, augment, data, detect, plots, preprocess, splits
from .predict import Predictor, face_json
from .schemes import Scheme
from .shape import ShapeModel


class VideoError(ValueError):
    """A video that cannot be read or written: the file, what is wrong, what to do."""


class VideoReader:
    """Iterate ``(index, seconds, rgb)`` over a file's or a webcam's (``int``) frames; afterwards ``frames_read`` and
    ``problem`` (a truncated file: fewer frames than its header announced) say how it went. A file's seconds are
    index / frame rate; a webcam's the clock at each read, as a camera's reported rate is often nominal or 0 and
    frames it produced while the caller was busy are dropped."""

    def __init__(self, source: str | Path | int, max_frames: int | None = None):
        self.source, self.max_frames, self.frames_read, self.problem = source, max_frames, 0, ""
        if isinstance(source, int):
            self.cap = cv2.VideoCapture(source)
            if not self.cap.isOpened():
                raise VideoError(f"camera {source} cannot be opened (is it connected, and free?)")
        else:
            path = Path(source)
            if not path.is_file():
                raise VideoError(f"{path}: {'is a folder' if path.is_dir() else 'no such file'}, not a video")
            self.cap = cv2.VideoCapture(str(path))
            if not self.cap.isOpened() or not self.cap.grab():
                raise VideoError(f"{path}: not a video OpenCV can read (or it has no frames)")
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 25.0
        count, self.width, self.height = (int(self.cap.get(p)) for p in (
            cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        self.expected = count if count > 0 and not isinstance(source, int) else None

    def __len__(self) -> int:
        return min(self.expected or 0, self.max_frames or self.expected or 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:                # iterating to the end closes too
        self.cap.release()

    def __iter__(self):
        start = None
        try:
            while self.max_frames is None or self.frames_read < self.max_frames:
                ok, bgr = self.cap.read()
                if not ok:
                    break
                if isinstance(self.source, int):
                    now = time.monotonic()
                    start = now if start is None else start
                    seconds = now - start
                else:
                    seconds = self.frames_read / self.fps
                yield self.frames_read, seconds, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                self.frames_read += 1
        finally:
            self.close()
        if self.expected and self.frames_read < min(self.expected, self.max_frames or self.expected) - 1:
            self.problem = f"{self.source}: truncated: {self.frames_read} of {self.expected} frames could be read"


class VideoWriter:
    """RGB frames to an ``.mp4`` (``mp4v``) or ``.avi`` (``MJPG``), under a temporary name until closed."""

    def __init__(self, path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        codec = {".mp4": "mp4v", ".avi": "MJPG"}.get(self.path.suffix.lower())
        if codec is None:
            raise VideoError(f"{self.path}: write a .mp4 or .avi file")
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not self.writer.isOpened():
            raise VideoError(f"{self.path}: OpenCV cannot write this video")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> Path:
        self.writer.release()
        return self.tmp.replace(self.path)


# --- smoothing: each filter takes keypoints (K, 2), the time in seconds and the face size in pixels -------------
class OneEuro:
    """One Euro filter (Casiez et al., CHI 2012): its cutoff (``min_cutoff`` Hz still) rises by ``beta`` Hz per face
    size per second of speed, so a moving face follows with little lag. ``predict``: each step starts from the last
    estimate moved on by its velocity (Holt's trend), and the velocity is taken from the estimates, so a steady
    motion is followed without lag; ``predict=False`` is the filter of the paper. Defaults: chapter 09's study."""

    def __init__(self, min_cutoff: float = 2.0, beta: float = 1.0, d_cutoff: float = 2.0, predict: bool = True):
        self.min_cutoff, self.beta, self.d_cutoff, self.predict = min_cutoff, beta, d_cutoff, predict
        self.reset()

    def reset(self) -> None:
        self.x = self.dx = self.t = None

    @staticmethod
    def _alpha(cutoff, dt):
        return 1.0 / (1.0 + 1.0 / (2 * np.pi * cutoff * dt))

    def _velocity(self, x, dt):
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * ((x - self.x) / dt - self.dx)

    def __call__(self, x: np.ndarray, t: float, size: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or t <= self.t:
            self.x, self.dx, self.t = x, np.zeros_like(x), t
            return x.astype(np.float32)
        dt, self.t = t - self.t, t
        if not self.predict:
            self._velocity(x, dt)                                          # the paper: velocity of the raw input
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) / max(size, 1e-6)      # face sizes per second
        guess = self.x + self.dx * dt if self.predict else self.x
        new = guess + self._alpha(self.min_cutoff + self.beta * speed, dt) * (x - guess)
        if self.predict:
            self._velocity(new, dt)                                        # velocity of the estimates: smoother
        self.x = new
        return self.x.astype(np.float32)


def face_size(keypoints) -> float:
    """The longer side of a face's keypoint box, in pixels: the unit the smoothers measure speed in."""
    x0, y0, x1, y1 = preprocess.keypoint_box(keypoints)
    return float(max(x1 - x0, y1 - y0))


def smooth(keypoints: np.ndarray, fps: float, smoother) -> np.ndarray:
    """Apply a fresh-state ``smoother`` to a track (T, K, 2) of keypoints offline (NaN frames: lost, reset)."""
    smoother.reset()
    out = np.full_like(keypoints, np.nan)
    for i, kp in enumerate(keypoints):
        if np.isnan(kp).all():
            smoother.reset()
        else:
            out[i] = smoother(kp, i / fps, face_size(kp))
    return out


class MovingAverage:
    """The mean of the last ``window`` frames' keypoints (lags by about (window − 1) / 2 frames)."""

    def __init__(self, window: int = 5):
        self.window = window
        self.reset()

    def reset(self) -> None:
        self.past = []

    def __call__(self, x: np.ndarray, t: float, size: float) -> np.ndarray:
        self.past = (self.past + [np.asarray(x, np.float32)])[-self.window:]
        return np.mean(self.past, axis=0)


class NoSmoothing(MovingAverage):
    def __init__(self):
        super().__init__(window=1)


SMOOTHERS = {"one-euro": OneEuro, "average": MovingAverage, "none": NoSmoothing}


# --- tracking --------------------------------------------------------------------------------------------------
@dataclass
class FrameResult:
    """One frame: the crop the network saw, raw and smoothed keypoints (None without a face), the shape distance."""
    index: int
    time: float
    crop: np.ndarray | None = None
    raw: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    detected: bool = False
    distance: float = float("nan")
    repaired: bool = False
    flags: list = field(default_factory=list)

    def to_dict(self, names, width: int, height: int) -> dict:
        face = self.keypoints is not None
        return {"frame": self.index, "time": round(self.time, 4), "face": face,
                "box": preprocess.keypoint_box(self.keypoints).round(2).tolist() if face else None,
                **(face_json(self.keypoints, names, width, height) if face else {"keypoints": None, "pose": None}),
                "detector_ran": self.detected, "shape_distance": round(self.distance, 3) if face else None,
                "repaired": self.repaired, "flags": self.flags}


class Tracker:
    """Keypoints frame after frame, the next crop the training crop of the last keypoints. The detector runs with no
    face followed, every ``redetect_every`` frames and on an implausible face (shape distance > ``max_distance``:
    projected onto ``shape`` if detection does not mend it). A periodic detection that overlaps the followed crop
    (IoU ≥ ``keep_iou``; above 1: never) leaves it in place, so the box's noise stays out of the keypoints; one that
    does not, reframes the face. Finding none, it keeps the crop while that looks like the last detection
    (normalised cross-correlation of 32² crops ≥ ``min_similarity``): the network follows turned heads the detector
    misses. ``start``: a first crop (x0, y0, side) instead of the detector's."""

    def __init__(self, predictor: Predictor, smoother=None, shape: ShapeModel | None = None,
                 redetect_every: int = 10, min_similarity: float = 0.5, max_distance: float = 3.0,
                 keep_iou: float = 0.5, start=None):
        self.predictor, self.shape, self.max_distance, self.keep_iou = predictor, shape, max_distance, keep_iou
        self.redetect_every, self.min_similarity, self.smoother = redetect_every, min_similarity, smoother or OneEuro()
        self.crop = None if start is None else np.asarray(start, np.int64)
        self.since_detection, self.detector_runs, self.reference = 0, 0, None

    def _detect(self, gray: np.ndarray) -> np.ndarray | None:
        """The largest face, or while following one, the detection nearest it whose centre lies in its crop."""
        self.detector_runs += 1
        boxes = detect.detect_faces(gray, self.predictor.params)
        crops = detect.face_crops(boxes, self.predictor.calibration)
        if self.crop is None:
            return crops[np.argmax(crops[:, 2])] if len(crops) else None
        offset = np.abs(crops[:, :2] + crops[:, 2:] / 2 - self.crop[:2] - self.crop[2] / 2).max(axis=1)
        return crops[np.argmin(offset)] if len(crops) and offset.min() < self.crop[2] / 2 else None

    def _keypoints(self, gray, crop):
        kp = self.predictor.model.predict_crops(gray, crop[None])[0]
        return kp, (self.shape.distance(kp) if self.shape else float("nan"))

    def _check(self, gray, out: FrameResult, keep: bool = False) -> None:
        """Run the detector: a face found replaces the crop (``keep``: unless it overlaps it) and the reference look."""
        found, out.detected, self.since_detection = self._detect(gray), True, 0
        if found is not None:
            keep = keep and self.crop is not None and (
                detect.iou(detect.crop_box(found), detect.crop_box(self.crop))[0, 0] >= self.keep_iou)
            self.crop = self.crop if keep else found
            self.reference = preprocess.crop_face(gray, self.crop, 32).astype(np.float32)
        elif self.crop is not None and self.reference is not None:
            look = preprocess.crop_face(gray, self.crop, 32).astype(np.float32)
            a, b = look - look.mean(), self.reference - self.reference.mean()
            if (a * b).sum() < self.min_similarity * np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9:
                self.crop = None

    def __call__(self, rgb: np.ndarray, index: int, t: float) -> FrameResult:
        gray, out = preprocess.to_gray(rgb), FrameResult(index, t)
        if self.crop is None or self.since_detection >= self.redetect_every:
            self._check(gray, out, keep=True)
        if self.crop is None:                                   # no face: lost until the detector sees one
            out.flags.append("no face")
            self.smoother.reset()
            return out
        kp, out.distance = self._keypoints(gray, self.crop)
        if out.distance > self.max_distance and not out.detected:     # implausible: look again
            before = self.crop
            self._check(gray, out)
            if self.crop is not None and self.crop is not before:
                kp, out.distance = self._keypoints(gray, self.crop)
        if out.distance > self.max_distance:
            kp, out.repaired = self.shape.project(kp), True
            out.flags.append("implausible shape: repaired")
        out.crop, out.raw, self.since_detection = self.crop, kp, self.since_detection + 1
        out.keypoints = self.smoother(kp, t, face_size(kp))
        box, (h, w) = (preprocess.keypoint_box(kp) if np.isfinite(kp).all() else np.zeros(4)), gray.shape
        ok = box[2] > box[0] and box[3] > box[1]
        x0, y0, side = self.crop = preprocess.box_to_crop(box) if ok else (0, 0, 0)   # the training geometry
        if x0 + side <= 0 or y0 + side <= 0 or x0 >= w or y0 >= h or side < 8:
            self.crop = None                                    # collapsed or left the picture: detect again
        return out


def raw_keypoints(frames: list[FrameResult], num_keypoints: int) -> np.ndarray:
    """The network's keypoints of tracked frames as one array (T, K, 2), NaN on frames without a face."""
    return np.stack([np.full((num_keypoints, 2), np.nan) if f.raw is None else f.raw for f in frames])


def follow(tracker: Tracker, frames, fps: float = 25.0) -> np.ndarray:
    """``tracker`` over RGB ``frames`` held in memory: their raw keypoints (T, K, 2), NaN where no face is followed."""
    results = [tracker(frame, k, k / fps) for k, frame in enumerate(frames)]
    return raw_keypoints(results, tracker.predictor.model.scheme.num_keypoints)


def track(source, predictor: Predictor, smooth: str = "one-euro", shape: ShapeModel | None = None,
          out: str | Path | None = None, json_out: str | Path | None = None, max_frames: int | None = None,
          progress: bool = True, overlay: str | None = None, **tracker_args) -> dict:
    """A :class:`Tracker` over a video file or webcam (``int``), writing the annotated video (``overlay="glasses"``:
    glasses, not keypoints) and JSON lines if asked. Returns ``frames`` (:class:`FrameResult`) and a summary."""
    if smooth not in SMOOTHERS or overlay not in (None, "glasses"):
        raise ValueError(f"smooth must be one of {sorted(SMOOTHERS)} (got {smooth!r}) and overlay None or 'glasses'")
    reader = VideoReader(source, max_frames)
    tracker = Tracker(predictor, SMOOTHERS[smooth](), shape, **tracker_args)
    writer = VideoWriter(out, reader.fps, (reader.width, reader.height)) if out else None
    part = Path(f"{json_out}.part") if json_out else None
    frames, busy, names = [], 0.0, predictor.model.scheme.names
    with open(part, "w") if part else contextlib.nullcontext() as lines:
        t_end = time.perf_counter()
        for index, t, rgb in tqdm(reader, total=len(reader) or None, desc="facekp video", unit="frame",
                                  disable=not progress):
            frames.append(tracker(rgb, index, t))
            busy += time.perf_counter() - t_end                  # decoding and tracking, not writing
            r = frames[-1]
            if writer:
                writer.write(rgb if r.keypoints is None else applications.draw_glasses(rgb, r.keypoints) if overlay
                             else plots.draw_keypoints_cv(rgb, r.keypoints, predictor.model.scheme))
            if lines:
                lines.write(json.dumps(r.to_dict(names, reader.width, reader.height)) + "\n")
            t_end = time.perf_counter()
    if not frames:
        raise VideoError(f"{source}: no frame could be read")
    if writer:
        writer.close()
    if part:
        part.replace(json_out)
    return {"frames": frames, "raw": raw_keypoints(frames, predictor.model.scheme.num_keypoints),
            "source": str(source), "frames_read": len(frames),
            "frames_with_face": sum(f.keypoints is not None for f in frames),
            "frames_without_face": [f.index for f in frames if f.keypoints is None],
            "detector_runs": tracker.detector_runs, "repaired": sum(f.repaired for f in frames),
            "fps": len(frames) / max(busy, 1e-9), "problem": reader.problem}


# --- sequences with known truth, and what to measure on them ----------------------------------------------------
PHOTOS = ("300w/helen-train", "300w/lfpw-train")       # annotated photographs whose validation splits become clips


def validation_photos(count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` validation photographs of :data:`PHOTOS` (never trained on), full size, and keypoints (N, 68, 2)."""
    images, keypoints = [], []
    for spec in PHOTOS:
        ds = data.load(spec, progress=False)
        val = np.flatnonzero(splits.assign_splits(ds.identities, splits.fractions_for(spec)) == "val")
        pick = val[np.linspace(0, len(val) - 1, max(1, count // len(PHOTOS))).round().astype(int)]
        images += [ds.images[i] for i in pick]
        keypoints.append(ds.keypoints[pick])
    return images, np.concatenate(keypoints)


def moving_sequence(image, keypoints, frames: int = 100, fps: float = 25.0, still: bool = False, seed: int = 0,
                    side: int = 480, noise: float = 3.0, jpeg: int = 85) -> tuple[list[np.ndarray], np.ndarray]:
    """An annotated photograph as a clip with known keypoints (T, K, 2): a ``side``² crop 3 × the face's size, moved
    along a smooth random path (shifts up to 0.08 face sizes, rotation 4°, scale ±4 %, at 0.15-0.5 Hz: a talking
    head's pace; ``still``: none), with Gaussian noise (``noise`` gray levels) and JPEG re-encoding per frame."""
    rng, image = np.random.default_rng(seed), preprocess.as_rgb(image)
    crop = preprocess.box_to_crop(preprocess.keypoint_box(keypoints), scale=3.0)
    base = np.stack([preprocess.crop_face(image[..., c], crop, side) for c in range(3)], axis=-1)
    kp0 = preprocess.to_crop_coords(keypoints, crop, side)
    t = np.arange(frames)[:, None] / fps
    amp = np.array([0.08 * side / 3, 0.08 * side / 3, 4.0, 0.04]) * (not still)
    wave = (amp * np.sin(2 * np.pi * rng.uniform(0.15, 0.5, 4) * t + rng.uniform(0, 2 * np.pi, 4))).T
    m = augment.affine_matrix(wave[2], 1.0 + wave[3], np.stack(wave[:2], axis=-1), size=(side, side))
    out = []
    for mi in m:
        frame = cv2.warpAffine(base, mi, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        out.append(cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_COLOR))
    return out, augment.transform_keypoints(np.broadcast_to(kp0, (frames,) + kp0.shape), m)


def track_errors(pred: np.ndarray, truth: np.ndarray, scheme: Scheme) -> dict:
    """NME per frame (NaN: lost), ``jitter`` (mean frame-to-frame change of the errors / inter-ocular), ``kept``."""
    iod = scheme.interocular(truth)
    err = (pred - truth) / iod[:, None, None]
    nme = np.linalg.norm(err, axis=-1).mean(-1)
    step = np.linalg.norm(np.diff(err, axis=0), axis=-1).mean(-1)
    return {"nme": nme, "jitter": float(np.nanmean(step)), "kept": float(np.isfinite(nme).mean())}


def lag_frames(pred: np.ndarray, truth: np.ndarray, max_lag: float = 8.0, step: float = 0.25,
               max_lead: float = 2.0) -> float:
    """How many frames ``pred`` (T, K, 2) trails ``truth``: the delay (in ``step``s, from ``-max_lead`` to
    ``max_lag``) that best aligns them; negative: it leads. Searching both ways leaves a noisy track without lag
    unbiased. The first and last frames, where a shifted truth runs out, do not count."""
    t, ok = np.arange(len(truth)), np.isfinite(pred).all(axis=(1, 2))
    flat = truth.reshape(len(truth), -1)

    def delayed(d):
        return np.stack([np.interp(t - d, t, col) for col in flat.T], axis=-1).reshape(truth.shape)

    inside = ok & (t >= np.ceil(max_lag)) & (t < len(t) - np.ceil(max_lead))
    lags = np.arange(-max_lead, max_lag + step / 2, step)
    cost = [np.linalg.norm(pred[inside] - delayed(d)[inside], axis=-1).mean() for d in lags]
    return float(lags[int(np.argmin(cost))])


def smoothing_table(predictor: Predictor, images, keypoints, scheme: Scheme, frames: int = 100, fps: float = 25.0,
                    smoothers: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """Each photograph tracked as a moving and a still :func:`moving_sequence` from its true first box (no detector
    misses), then smoothed by each of ``smoothers``: a row per sequence and smoother (``detector_runs`` per 100)."""
    smoothers = smoothers or {"none": NoSmoothing(), "average": MovingAverage(5), "one-euro": OneEuro()}
    rows = []
    for i in tqdm(range(len(images)), desc="sequences", disable=not progress, leave=False):
        for still in (False, True):
            clip, truth = moving_sequence(images[i], keypoints[i], frames, fps, still, seed=i)
            tracker = Tracker(predictor, NoSmoothing(), start=preprocess.box_to_crop(preprocess.keypoint_box(truth[0])))
            t0 = time.perf_counter()
            raw = follow(tracker, clip, fps)
            ms = (time.perf_counter() - t0) * 1e3 / frames
            for name, f in smoothers.items():
                track_ = smooth(raw, fps, f)
                e = track_errors(track_, truth, scheme)
                rows.append({"sequence": i, "motion": "still" if still else "moving", "smoother": name,
                             "nme": float(np.nanmean(e["nme"])), "jitter": e["jitter"],
                             "lag": np.nan if still else lag_frames(track_, truth), "kept": e["kept"],
                             "detector_runs": 100 * tracker.detector_runs / frames, "ms": ms})
    return pd.DataFrame(rows)
