"""From a photograph to keypoints in its own pixel coordinates: detect → calibrated crop → one batched model call.

The pipeline of chapter 07, the CLI's ``facekp predict`` and the benchmarks:

1. read (:func:`helpers.detect.read_photo`: EXIF, gray / RGBA / 16-bit normalised) and convert to gray once;
2. detect faces (:func:`helpers.detect.detect_faces`, Haar cascade on a downscaled copy);
3. turn each detector box into the crop the networks were trained on (:class:`helpers.detect.Calibration`
   through :func:`helpers.preprocess.box_to_crop`), cut and resize it with :func:`helpers.preprocess.crop_face`;
4. run **all faces of the image in one call** of a fast forward pass (:class:`KeypointModel`: the int8 or the
   float ONNX graph when an int8 export is present, whichever was faster; else a compiled Keras graph; never
   ``model.predict``'s per-call overhead), denormalise
   and map back with :func:`helpers.preprocess.to_image_coords`.

The model contract: input float32 (B, 96, 96, 1) gray in [0, 1]; output (B, 2K) normalised keypoints
(x0, y0, x1, y1, ...) as :func:`helpers.preprocess.normalise_keypoints` makes them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config, detect, preprocess
from .schemes import Scheme, get_scheme

_MODEL_CACHE: dict = {}


# --------------------------------------------------------------------------------------------------------------
# The model, compiled once
# --------------------------------------------------------------------------------------------------------------
def scheme_of(model) -> Scheme:
    """The keypoint scheme a model predicts, from its number of outputs (136 → 68 points, 30 → 15)."""
    n = int(model.output_shape[-1])
    for scheme in (get_scheme("68"), get_scheme("15")):
        if n == 2 * scheme.num_keypoints:
            return scheme
    raise ValueError(f"model {getattr(model, 'name', '?')!r} has {n} outputs; expected 136 (68 points) or 30 "
                     "(15 points)")


def compile_forward(model, size: int = config.IMAGE_SIZE):
    """``f(x) -> numpy`` running ``model(x, training=False)`` as one compiled graph (traced once per model).

    TensorFlow: a ``tf.function`` with a fixed input signature (any batch size, no retracing); JAX: a
    ``jax.jit`` of ``stateless_call``; other backends: the eager call under no-grad.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                         input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])
        return lambda x: fn(tf.constant(x)).numpy()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        jf = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        return lambda x: np.asarray(jf(trainable, non_trainable, x))
    if backend == "torch":
        import torch

        def f(x):
            with torch.no_grad():
                return keras.ops.convert_to_numpy(model(x, training=False))
        return f
    return lambda x: keras.ops.convert_to_numpy(model(x, training=False))


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


RUNTIMES = ("auto", "keras", "onnx", "int8")


class KeypointModel:
    """A keypoint network with its fast forward pass, ready for single images (warm after creation).

    ``runtime`` chooses how the forward pass runs:

    * ``"keras"`` — the Keras model as one compiled graph (:func:`compile_forward`);
    * ``"onnx"`` — exported to ONNX (float32, batch norm folded) and run by ONNX Runtime
      (:class:`helpers.export.OnnxForward`); same numbers as Keras to ~1e-6, less per-call overhead;
    * ``"int8"`` — the quantized export ``int8`` (a path to ``<name>.int8.onnx``, see
      :func:`helpers.export.export_int8`); several times faster for ResNet-50, with the accuracy cost measured
      in chapter 06; for a network as small as LeNet the quantize / dequantize steps can cost more than they save.

    Batches are zero-padded to the next of :data:`BATCH_BUCKETS` (larger ones run in chunks of 64): kernels are
    prepared once per input shape — about 0.1 s the first time a batch size is seen — so a few fixed shapes,
    warmed up here for 1, 2 and 4 faces, keep every later call at its steady-state speed.
    """

    def __init__(self, model, name: str | None = None, warm_up: bool = True, runtime: str = "keras",
                 int8=None):
        self.model = model
        self.name = name or getattr(model, "name", "model")
        self.scheme = scheme_of(model)
        self.size = int(model.input_shape[1])
        if tuple(model.input_shape[1:]) != (self.size, self.size, 1):
            raise ValueError(f"model {self.name!r} takes {model.input_shape[1:]}, expected (S, S, 1) gray images")
        if runtime not in RUNTIMES[1:]:
            raise ValueError(f"runtime must be one of {RUNTIMES[1:]}, got {runtime!r}")
        self.runtime = runtime
        if runtime == "keras":
            self._forward = compile_forward(model, self.size)
        else:
            from .export import OnnxForward

            if runtime == "int8" and int8 is None:
                raise ValueError(f"runtime 'int8' needs the quantized file of {self.name!r} (helpers.export."
                                 "export_int8 or `facekp export`)")
            self._forward = OnnxForward(model if runtime == "onnx" else int8)
        if warm_up:
            for b in (1, 2, 4):
                self.forward(np.zeros((b, self.size, self.size, 1), np.float32))

    def __repr__(self) -> str:
        return f"KeypointModel({self.name!r}, {self.scheme.num_keypoints} keypoints, runtime={self.runtime!r})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The raw model output (B, 2K) for float32 input (B, S, S, 1) in [0, 1]."""
        x = np.asarray(x, dtype=np.float32)
        n, top = len(x), BATCH_BUCKETS[-1]
        if n == 0:
            return np.zeros((0, 2 * self.scheme.num_keypoints), np.float32)
        out = []
        for start in range(0, n, top):
            part = x[start:start + top]
            b = next(b for b in BATCH_BUCKETS if b >= len(part))
            if b > len(part):
                part = np.concatenate([part, np.zeros((b - len(part),) + part.shape[1:], np.float32)])
            out.append(np.asarray(self._forward(part), dtype=np.float32)[:min(top, n - start)])
        return np.concatenate(out) if len(out) > 1 else out[0]

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        """Keypoints (N, K, 2) in crop pixels for uint8 faces (N, S, S): one model call."""
        faces = np.asarray(faces)
        x = faces.astype(np.float32)[..., None] / 255.0
        out = self.forward(x).reshape(len(faces), -1, 2)
        return preprocess.denormalise_keypoints(out, self.size)

    def predict_crops(self, gray: np.ndarray, crops) -> np.ndarray:
        """Keypoints (N, K, 2) in ``gray``'s pixel coordinates for crops (N, 3) of that image."""
        crops = np.asarray(crops, dtype=np.int64).reshape(-1, 3)
        if len(crops) == 0:
            return np.zeros((0, self.scheme.num_keypoints, 2), np.float32)
        faces = np.stack([preprocess.crop_face(gray, c, self.size) for c in crops])
        return preprocess.to_image_coords(self.predict_faces(faces), crops, self.size)


def load_keypoint_model(model="lenet", warm_up: bool = True, runtime: str = "auto") -> KeypointModel:
    """A :class:`KeypointModel` from a name (``lenet`` / ``resnet50``), a ``.keras`` path or a Keras model.

    ``runtime="auto"`` (default): when an int8 export exists for the current ``.keras`` file
    (:func:`helpers.export.int8_for`), whichever of it and the float ONNX graph ran one face faster at export
    time (:func:`helpers.export.preferred_runtime`), else the compiled Keras graph; ``"keras"``, ``"onnx"`` or
    ``"int8"`` choose explicitly (a Keras model object has no int8 file: ``auto`` gives ``keras`` for it).
    Names and paths load through :func:`helpers.models.load_model` and are cached (per file, its mtime and the
    runtime), so the CLI, the chapters and the benchmark prepare each model once per process.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if isinstance(model, KeypointModel):
        return model
    if not isinstance(model, (str, Path)):
        return KeypointModel(model, warm_up=warm_up, runtime="keras" if runtime == "auto" else runtime)
    from . import export, models

    path = models.resolve_model_path(model)
    int8_file = export.int8_path(path)
    # the files' modification times stand for their contents: the sha256 check of an int8 export
    # (export.int8_for) runs once per file version, not on every call
    key = (str(path.resolve()), path.stat().st_mtime_ns, runtime,
           int8_file.stat().st_mtime_ns if int8_file.exists() else None)
    if key not in _MODEL_CACHE:
        int8 = export.int8_for(path) if runtime in ("auto", "int8") else None
        if runtime == "int8" and int8 is None:
            raise FileNotFoundError(f"no int8 export of {path} made from its current weights: run "
                                    f"`facekp export {model}` (needs the training data for calibration)")
        chosen = (export.preferred_runtime(int8) if int8 else "keras") if runtime == "auto" else runtime
        net = models.load_model(path, compile=False)
        name = str(model) if str(model) in models.MODEL_NAMES else path.stem
        _MODEL_CACHE[key] = KeypointModel(net, name=name, warm_up=warm_up, runtime=chosen, int8=int8)
    return _MODEL_CACHE[key]


# --------------------------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ImagePrediction:
    """The faces found in one image: boxes, crops and keypoints in the image's pixel coordinates."""

    source: str
    width: int
    height: int
    boxes: np.ndarray          # (N, 4) detector boxes (x0, y0, x1, y1)
    crops: np.ndarray          # (N, 3) calibrated crops (x0, y0, side)
    keypoints: np.ndarray      # (N, K, 2) image pixels
    scheme: Scheme
    model: str
    timings: dict = field(default_factory=dict)   # milliseconds: read, detect, keypoints, total
    image: np.ndarray | None = field(default=None, repr=False)   # the RGB image (kept for drawing)

    def __len__(self) -> int:
        return len(self.boxes)

    def to_dict(self) -> dict:
        """JSON-ready: per face its box, crop and named keypoints; the timings in ms."""
        faces = []
        for box, crop, kp in zip(self.boxes, self.crops, self.keypoints):
            faces.append({
                "box": [round(float(v), 2) for v in box],
                "crop": [int(v) for v in crop],
                "keypoints": {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(self.scheme.names, kp)},
            })
        return {"file": self.source, "width": self.width, "height": self.height, "model": self.model,
                "scheme": self.scheme.name, "num_faces": len(faces), "faces": faces,
                "timings_ms": {k: round(float(v), 3) for k, v in self.timings.items()}}


class Predictor:
    """Detector + calibration + keypoint model: ``predictor(photo)`` → :class:`ImagePrediction`.

    ``model``: a name, a ``.keras`` path, a Keras model or a :class:`KeypointModel`; ``runtime``: how its
    forward pass runs (:func:`load_keypoint_model`). ``calibration``: the fitted one by default; pass
    :data:`helpers.detect.UNCALIBRATED` to crop the raw detector boxes (the seed).
    """

    def __init__(self, model="lenet", params: detect.DetectorParams | None = None,
                 calibration: detect.Calibration | None = None, keep_image: bool = True, runtime: str = "auto"):
        self.model = load_keypoint_model(model, runtime=runtime)
        self.params = params or detect.DetectorParams()
        self.calibration = calibration or detect.load_calibration()
        self.keep_image = keep_image

    @property
    def scheme(self) -> Scheme:
        return self.model.scheme

    def __call__(self, image, boxes=None, source: str | None = None) -> ImagePrediction:
        """Predict every face of ``image`` (path or array); ``boxes`` (N, 4) skips the detector."""
        t0 = time.perf_counter()
        if source is None:
            source = str(image) if isinstance(image, (str, Path)) else "<array>"
        rgb = detect.load_image(image)
        gray = preprocess.to_gray(rgb)
        t1 = time.perf_counter()
        if boxes is None:
            boxes = detect.detect_faces(gray, self.params)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        t2 = time.perf_counter()
        crops = detect.face_crops(boxes, self.calibration)
        keypoints = self.model.predict_crops(gray, crops)
        t3 = time.perf_counter()
        timings = {"read": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "keypoints": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return ImagePrediction(source, int(rgb.shape[1]), int(rgb.shape[0]), boxes, crops, keypoints,
                               self.scheme, self.model.name, timings, rgb if self.keep_image else None)


def predict_image(image, model="lenet", params: detect.DetectorParams | None = None,
                  calibration: detect.Calibration | None = None, boxes=None) -> ImagePrediction:
    """One-off convenience: :class:`Predictor` for a single image."""
    return Predictor(model, params, calibration)(image, boxes=boxes)


# --------------------------------------------------------------------------------------------------------------
# A whole annotated data set: detector + keypoints, end to end
# --------------------------------------------------------------------------------------------------------------
def run_dataset(dataset, predictor: Predictor, boxes=None, min_iou: float = 0.3, batch_size: int = 64,
                progress: bool = True) -> dict:
    """Detector + keypoints on every image of a :class:`helpers.data.Dataset` (one annotated face each).

    The annotated face counts as *detected* when a detector box overlaps its landmark box with IoU ≥
    ``min_iou`` (:func:`helpers.detect.match_dataset`); its keypoints are predicted from that box through
    ``predictor``'s calibration and model, the faces of all images batched. Pass ``boxes`` (N, 4) (NaN rows:
    undetected), e.g. ``match_dataset(...)["detector"]``, to compare models or calibrations on one detection
    run. Returns ``detected`` (N,) bool, ``boxes`` (N, 4), ``crops`` (N, 3) (-1 where undetected) and
    ``keypoints`` (N, K, 2) in image pixels (NaN where undetected).
    """
    if boxes is None:
        boxes = detect.match_dataset(dataset, predictor.params, min_iou, progress)["detector"]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(dataset), 4)
    detected = np.all(np.isfinite(boxes), axis=1)
    n, k, size = len(dataset), predictor.scheme.num_keypoints, predictor.model.size
    keypoints = np.full((n, k, 2), np.nan, np.float32)
    crops = np.full((n, 3), -1, np.int64)
    idx = np.flatnonzero(detected)
    for start in range(0, len(idx), batch_size):
        part = idx[start:start + batch_size]
        c = np.array([predictor.calibration.crop(boxes[i]) for i in part], dtype=np.int64)
        faces = np.stack([preprocess.crop_face(dataset.images[i], ci, size) for i, ci in zip(part, c)])
        keypoints[part] = preprocess.to_image_coords(predictor.model.predict_faces(faces), c, size)
        crops[part] = c
    return {"detected": detected, "boxes": boxes.astype(np.float32), "crops": crops, "keypoints": keypoints}


def end_to_end_metrics(result: dict, keypoints_true: np.ndarray, scheme: Scheme | str,
                       thresholds=None) -> dict:
    """Detection rate and keypoint accuracy of :func:`run_dataset`'s ``result``, metrics by
    :mod:`helpers.evaluate`.

    ``nme_detected`` is the mean NME over the detected faces only; ``failure_rate_*`` counts an undetected face
    as a failure (as well as a detected face with NME above the threshold) and ``auc_*`` gives it an NME of
    infinity (area 0), so they describe the whole pipeline on every annotated face.
    """
    from . import evaluate

    thresholds = thresholds or evaluate.FAIL_THRESHOLDS
    detected = np.asarray(result["detected"], dtype=bool)
    n = len(detected)
    nme = evaluate.nme_per_face(result["keypoints"], keypoints_true, scheme)
    nme_det = nme[detected & np.isfinite(nme)]
    rate = float(detected.mean()) if n else float("nan")
    out = {"faces": n, "detected": int(detected.sum()), "detection_rate": rate,
           "nme_detected": float(np.mean(nme_det)) if len(nme_det) else float("nan"),
           "nme_detected_median": float(np.median(nme_det)) if len(nme_det) else float("nan")}
    for t in thresholds:
        failed_detected = int(np.sum(nme_det > t))
        out[f"failure_rate_{t:g}"] = (n - len(nme_det) + failed_detected) / n if n else float("nan")
    out[f"auc_{evaluate.CED_LIMIT:g}"] = (evaluate.auc(nme_det) * len(nme_det) / n) if len(nme_det) else 0.0
    out["nme_per_face"] = nme
    return out
