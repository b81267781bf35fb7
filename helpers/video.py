"""Video (chapter 08, ``facekp video``): frames from a file or a webcam; the face tracked from frame to frame through
the crop geometry the networks were trained on (the detector runs on the first frame and only when needed); the
keypoints checked against the shape model and smoothed over time; an annotated video and one JSON line per frame.

Smoothing works in units of the face's size, so one setting serves any resolution: :class:`OneEuro` (Casiez,
Roussel & Vogel, CHI 2012; MediaPipe's face landmarker uses it) and a plain :class:`MovingAverage`."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import detect, plots, preprocess
from .predict import Predictor
from .shape import ShapeModel


class VideoError(ValueError):
    """A video that cannot be read or written: the file, what is wrong, what to do."""


class VideoReader:
    """Iterate ``(index, seconds, rgb)`` over the frames of a file or a webcam (an ``int``). After the loop,
    ``frames_read`` and ``problem`` (a truncated file: fewer frames than its header announced) say how it went."""

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
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.expected = count if count > 0 and not isinstance(source, int) else None
        self.width, self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def __len__(self) -> int:
        return min(self.expected or 0, self.max_frames or self.expected or 0)

    def __iter__(self):
        try:
            while self.max_frames is None or self.frames_read < self.max_frames:
                ok, bgr = self.cap.read()
                if not ok:
                    break
                yield self.frames_read, self.frames_read / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                self.frames_read += 1
        finally:
            self.cap.release()
        if self.expected and self.frames_read < min(self.expected, self.max_frames or self.expected) - 1:
            self.problem = f"{self.source}: truncated: {self.frames_read} of {self.expected} frames could be read"


class VideoWriter:
    """Write RGB frames to an ``.mp4`` (``mp4v``) or ``.avi`` (``MJPG``) that OpenCV reads back; the file appears
    under its name only when closed (a temporary name until then)."""

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


# ---------------------------------------------------------------------------------------------------------------
# smoothing: each filter takes keypoints (K, 2), the time in seconds and the face size in pixels
# ---------------------------------------------------------------------------------------------------------------
class OneEuro:
    """The One Euro filter: an exponential smoother whose cutoff frequency rises with speed, so a still face is
    smoothed hard (``min_cutoff`` Hz) and a moving one follows with little lag. ``beta`` in Hz per (face sizes per
    second): the speed is measured relative to the face size, so the setting does not depend on resolution."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 2.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self.x = self.dx = self.t = None

    @staticmethod
    def _alpha(cutoff, dt):
        return 1.0 / (1.0 + 1.0 / (2 * np.pi * cutoff * dt))

    def __call__(self, x: np.ndarray, t: float, size: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or t <= self.t:
            self.x, self.dx, self.t = x, np.zeros_like(x), t
            return x.astype(np.float32)
        dt, self.t = t - self.t, t
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * ((x - self.x) / dt - self.dx)
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) / max(size, 1e-6)      # face sizes per second
        self.x = self.x + self._alpha(self.min_cutoff + self.beta * speed, dt) * (x - self.x)
        return self.x.astype(np.float32)


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


# ---------------------------------------------------------------------------------------------------------------
# tracking
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FrameResult:
    """One frame: the crop the network saw, the raw and the smoothed keypoints (None without a face), whether the
    detector ran, the shape-space distance and whether the shape model repaired the face."""
    index: int
    time: float
    crop: np.ndarray | None = None
    raw: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    detected: bool = False
    distance: float = float("nan")
    repaired: bool = False
    flags: list = field(default_factory=list)

    def to_dict(self, names) -> dict:
        face = self.keypoints is not None
        return {"frame": self.index, "time": round(self.time, 4), "face": face,
                "box": preprocess.keypoint_box(self.keypoints).round(2).tolist() if face else None,
                "keypoints": {n: [round(float(v), 2) for v in p] for n, p in zip(names, self.keypoints)} if face
                else None, "detector_ran": self.detected, "shape_distance": round(self.distance, 3) if face else None,
                "repaired": self.repaired, "flags": self.flags}


class Tracker:
    """Keypoints frame after frame. The detector runs on the first frame, every ``redetect_every`` frames (a face it
    no longer finds is lost), and when the face left the picture or looks implausible (shape distance over
    ``max_distance``); in between, the next crop is the
    training crop of the previous frame's keypoints (:func:`helpers.preprocess.box_to_crop`). With a
    ``shape`` model, a face beyond ``max_distance`` that a fresh detection does not mend is projected onto it."""

    def __init__(self, predictor: Predictor, smoother=None, shape: ShapeModel | None = None,
                 redetect_every: int = 10, max_distance: float = 3.0):
        self.predictor, self.shape, self.redetect_every, self.max_distance = predictor, shape, redetect_every, max_distance
        self.smoother = smoother or OneEuro()
        self.crop, self.since_detection, self.detector_runs = None, 0, 0

    def _detect(self, gray: np.ndarray) -> np.ndarray | None:
        self.detector_runs += 1
        boxes = detect.detect_faces(gray, self.predictor.params)
        if not len(boxes):
            return None
        crops = detect.face_crops(boxes, self.predictor.calibration)
        if self.crop is None:                                   # the largest face
            return crops[np.argmax(crops[:, 2])]
        centre = self.crop[:2] + self.crop[2] / 2               # else the face nearest the one followed
        return crops[np.argmin(np.linalg.norm(crops[:, :2] + crops[:, 2:] / 2 - centre, axis=1))]

    def _keypoints(self, gray, crop):
        kp = self.predictor.model.predict_crops(gray, crop[None])[0]
        return kp, (self.shape.distance(kp) if self.shape else float("nan"))

    def __call__(self, rgb: np.ndarray, index: int, t: float) -> FrameResult:
        gray, out = preprocess.to_gray(rgb), FrameResult(index, t)
        if self.crop is None or self.since_detection >= self.redetect_every:
            self.crop, self.since_detection, out.detected = self._detect(gray), 0, True
        if self.crop is None:                                   # the detector saw no face: lost until it sees one
            out.flags.append("no face")
            self.smoother.reset()
            return out
        kp, out.distance = self._keypoints(gray, self.crop)
        if out.distance > self.max_distance and not out.detected:     # implausible: look again
            found = self._detect(gray)
            out.detected = True
            if found is not None:
                self.crop, self.since_detection = found, 0
                kp, out.distance = self._keypoints(gray, self.crop)
        if out.distance > self.max_distance:
            kp, out.repaired = self.shape.project(kp), True
            out.flags.append("implausible shape: repaired")
        out.crop, out.raw, self.since_detection = self.crop, kp, self.since_detection + 1
        box = preprocess.keypoint_box(kp)
        out.keypoints = self.smoother(kp, t, float(max(box[2] - box[0], box[3] - box[1])))
        self.crop = preprocess.box_to_crop(box)                 # the next frame's crop: the training geometry
        (x0, y0, side), (h, w) = self.crop, gray.shape
        if x0 + side <= 0 or y0 + side <= 0 or x0 >= w or y0 >= h or side < 8:
            self.crop = None                                    # the face left the picture: detect again
        return out


def track(source, predictor: Predictor, smooth: str = "one-euro", shape: ShapeModel | None = None,
          out: str | Path | None = None, json_out: str | Path | None = None, max_frames: int | None = None,
          progress: bool = True, **tracker_args) -> dict:
    """Run a :class:`Tracker` over a video file or webcam (``int``); write the annotated video and JSON lines if
    asked. Returns ``frames`` (the :class:`FrameResult` list) and a summary: frames read, frames with a face,
    detector runs, repairs, processing frames per second (decode + track + keypoints + smoothing), problems."""
    if smooth not in SMOOTHERS:
        raise ValueError(f"smooth must be one of {sorted(SMOOTHERS)}, got {smooth!r}")
    reader = VideoReader(source, max_frames)
    tracker = Tracker(predictor, SMOOTHERS[smooth](), shape, **tracker_args)
    writer = VideoWriter(out, reader.fps, (reader.width, reader.height)) if out else None
    part = Path(f"{json_out}.part") if json_out else None
    lines = open(part, "w") if part else None
    frames, busy, names = [], 0.0, predictor.model.scheme.names
    try:
        t_end = time.perf_counter()
        for index, t, rgb in tqdm(reader, total=len(reader) or None, desc="facekp video", unit="frame",
                                  disable=not progress):
            frames.append(tracker(rgb, index, t))
            busy += time.perf_counter() - t_end                  # decoding and tracking, not writing
            r = frames[-1]
            if writer:
                writer.write(plots.draw_keypoints_cv(rgb, r.keypoints, predictor.model.scheme)
                             if r.keypoints is not None else rgb)
            if lines:
                lines.write(json.dumps(r.to_dict(names)) + "\n")
            t_end = time.perf_counter()
    finally:
        if lines:
            lines.close()
    if not frames:
        raise VideoError(f"{source}: no frame could be read")
    if writer:
        writer.close()
    if part:
        part.replace(json_out)
    return {"frames": frames, "source": str(source), "frames_read": len(frames),
            "frames_with_face": sum(f.keypoints is not None for f in frames),
            "frames_without_face": [f.index for f in frames if f.keypoints is None],
            "detector_runs": tracker.detector_runs, "repaired": sum(f.repaired for f in frames),
            "fps": len(frames) / max(busy, 1e-9), "problem": reader.problem}
