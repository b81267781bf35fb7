"""From a photograph to keypoints in its own pixel coordinates (chapter 08, ``facekp predict``, the benchmarks):
read → gray → Haar boxes → calibrated crops (:mod:`helpers.detect`) → one forward pass for all the image's faces
(:class:`KeypointModel`: float32 (B, S, S, 1) gray in [0, 1] → (B, 2K) normalised keypoints) → image pixels."""
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from . import applications, data, detect, export, models, preprocess
from .schemes import Scheme, get_scheme

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RUNTIMES = ("auto", "keras", "onnx", "int8")
_MODEL_CACHE: dict = {}


def scheme_of(model) -> Scheme:
    """The keypoint scheme a model predicts, from its number of outputs (136 → 68 points, 30 → 15)."""
    n = int(model.output_shape[-1])
    if n not in (136, 30):
        raise ValueError(f"model {getattr(model, 'name', '?')!r} has {n} outputs; expected 136 (68 points) or 30 "
                         "(15 points)")
    return get_scheme("68" if n == 136 else "15")


def compile_forward(model):
    """``f(x) -> numpy`` of ``model(x, training=False)``; on TensorFlow a ``tf.function`` traced once for any batch."""
    if keras.backend.backend() != "tensorflow":
        return lambda x: keras.ops.convert_to_numpy(model(x, training=False))
    import tensorflow as tf
    size = int(model.input_shape[1])
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                     input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)])
    return lambda x: fn(tf.constant(x)).numpy()


class KeypointModel:
    """A keypoint network with a fast forward pass: ``runtime`` ``"keras"``, ``"onnx"`` (the float32 export in ONNX
    Runtime) or ``"int8"`` (the quantized file ``int8``). Batches are zero-padded to the next of :data:`BATCH_BUCKETS`
    (chunks of 64 beyond): each new input shape costs kernel set-up on first use; ``warm_up`` runs the 3 smallest."""

    def __init__(self, model, name: str | None = None, warm_up: bool = True, runtime: str = "keras", int8=None):
        self.model, self.name = model, name or getattr(model, "name", "model")
        self.scheme, self.size = scheme_of(model), int(model.input_shape[1])
        if tuple(model.input_shape[1:]) != (self.size, self.size, 1):
            raise ValueError(f"model {self.name!r} takes {model.input_shape[1:]}, expected (S, S, 1) gray images")
        if runtime not in RUNTIMES[1:]:
            raise ValueError(f"runtime must be one of {RUNTIMES[1:]}, got {runtime!r}")
        if runtime == "int8" and int8 is None:
            raise ValueError(f"runtime 'int8' needs the quantized file of {self.name!r} (`facekp export`)")
        self.runtime, self._forward = runtime, (compile_forward(model) if runtime == "keras"
                                                else export.OnnxForward(model if runtime == "onnx" else int8))
        for b in (1, 2, 4) if warm_up else ():
            self.forward(np.zeros((b, self.size, self.size, 1), np.float32))

    def __repr__(self) -> str:
        return f"KeypointModel({self.name!r}, {self.scheme.num_keypoints} keypoints, runtime={self.runtime!r})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The raw model output (B, 2K) for float32 input (B, S, S, 1) in [0, 1]."""
        x, top = np.asarray(x, dtype=np.float32), BATCH_BUCKETS[-1]
        out = [np.zeros((0, 2 * self.scheme.num_keypoints), np.float32)]
        for start in range(0, len(x), top):
            part = x[start:start + top]
            pad = next(b for b in BATCH_BUCKETS if b >= len(part)) - len(part)
            if pad:
                part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], np.float32)])
            out.append(np.asarray(self._forward(part), dtype=np.float32)[:len(part) - pad])
        return np.concatenate(out) if len(out) > 2 else out[-1]

    def predict_faces(self, faces: np.ndarray) -> np.ndarray:
        """Keypoints (N, K, 2) in crop pixels for uint8 faces (N, S, S): one model call."""
        out = self.forward(np.asarray(faces, np.float32)[..., None] / 255.0)
        return preprocess.denormalise_keypoints(out.reshape(len(out), -1, 2), self.size)

    def predict_crops(self, gray: np.ndarray, crops) -> np.ndarray:
        """Keypoints (N, K, 2) in ``gray``'s pixel coordinates for crops (N, 3) of that image."""
        crops = np.asarray(crops, dtype=np.int64).reshape(-1, 3)
        if len(crops) == 0:
            return np.zeros((0, self.scheme.num_keypoints, 2), np.float32)
        faces = np.stack([preprocess.crop_face(gray, c, self.size) for c in crops])
        return preprocess.to_image_coords(self.predict_faces(faces), crops, self.size)


def load_keypoint_model(model="lenet", warm_up: bool = True, runtime: str = "auto") -> KeypointModel:
    """A :class:`KeypointModel` (cached per file, mtime and ``runtime``) from a name, a ``.keras`` path or a Keras
    model. ``runtime="auto"``: with a current int8 export the faster of it and the float ONNX graph, else Keras."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if isinstance(model, KeypointModel):
        return model
    if not isinstance(model, (str, Path)):
        return KeypointModel(model, warm_up=warm_up, runtime="keras" if runtime == "auto" else runtime)
    path = models.resolve_model_path(model)
    int8_file = export.int8_path(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns, runtime,
           int8_file.stat().st_mtime_ns if int8_file.exists() else None)
    if key not in _MODEL_CACHE:
        int8 = export.int8_for(path) if runtime in ("auto", "int8") else None
        if runtime == "int8" and int8 is None:
            raise FileNotFoundError(f"{int8_file}: no readable int8 export made from the current {path.name}: "
                                    f"run `facekp export {model}` (needs the training data for calibration)")
        chosen = (export.preferred_runtime(int8) if int8 else "keras") if runtime == "auto" else runtime
        name = str(model) if str(model) in models.MODEL_NAMES else path.stem
        _MODEL_CACHE[key] = KeypointModel(models.load_model(path, compile=False), name, warm_up, chosen, int8)
    return _MODEL_CACHE[key]


def face_json(keypoints, names, width: int, height: int) -> dict:
    """A face's named keypoints (to 0.01 px) and, for 68 points, head pose: JSON of ``facekp predict`` and ``video``."""
    return {"keypoints": {n: [round(float(v), 2) for v in p] for n, p in zip(names, keypoints)},
            "pose": applications.pose_json(keypoints, width, height) if len(keypoints) == 68 else None}


@dataclass
class ImagePrediction:
    """The faces found in one image: boxes (N, 4), crops (N, 3) and keypoints (N, K, 2) in its pixels."""
    source: str
    width: int
    height: int
    boxes: np.ndarray
    crops: np.ndarray
    keypoints: np.ndarray
    scheme: Scheme
    model: str
    timings: dict = field(default_factory=dict)                    # milliseconds: read, detect, keypoints, total
    image: np.ndarray | None = field(default=None, repr=False)    # the RGB image (kept for drawing)

    def __len__(self) -> int:
        return len(self.boxes)

    def to_dict(self) -> dict:
        """JSON-ready: per face its box, crop, named keypoints and head pose (degrees); the timings in ms."""
        faces = [{"box": [round(float(v), 2) for v in box], "crop": [int(v) for v in crop],
                  **face_json(kp, self.scheme.names, self.width, self.height)}
                 for box, crop, kp in zip(self.boxes, self.crops, self.keypoints)]
        return {"file": self.source, "width": self.width, "height": self.height, "model": self.model,
                "scheme": self.scheme.name, "num_faces": len(faces), "faces": faces,
                "timings_ms": {k: round(float(v), 3) for k, v in self.timings.items()}}


class Predictor:
    """Detector + calibration (default: the fitted one) + keypoint model: ``predictor(photo)`` → ImagePrediction."""

    def __init__(self, model="lenet", params: detect.DetectorParams | None = None,
                 calibration: detect.Calibration | None = None, keep_image: bool = True, runtime: str = "auto"):
        self.model = load_keypoint_model(model, runtime=runtime)
        self.params, self.keep_image = params or detect.DetectorParams(), keep_image
        self.calibration = calibration or detect.load_calibration()

    def __call__(self, image, boxes=None, source: str | None = None) -> ImagePrediction:
        """Predict every face of ``image`` (path or array); ``boxes`` (N, 4) skips the detector."""
        t0 = time.perf_counter()
        is_path = isinstance(image, (str, Path))
        rgb = data.read_image(image) if is_path else data.as_rgb(image)
        gray = preprocess.to_gray(rgb)
        t1 = time.perf_counter()
        boxes = detect.detect_faces(gray, self.params) if boxes is None else boxes
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        t2 = time.perf_counter()
        crops = detect.face_crops(boxes, self.calibration)
        keypoints = self.model.predict_crops(gray, crops)
        t3 = time.perf_counter()
        timings = {"read": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "keypoints": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return ImagePrediction(source or (str(image) if is_path else "<array>"), rgb.shape[1], rgb.shape[0], boxes,
                               crops, keypoints, self.model.scheme, self.model.name, timings,
                               rgb if self.keep_image else None)


def run_dataset(dataset, predictor: Predictor, boxes=None, min_iou: float = 0.3, batch_size: int = 64,
                progress: bool = True) -> dict:
    """Detector (or ``boxes`` (N, 4), NaN undetected) + keypoints on every image of a dataset (one face each):
    ``detected`` (N,), ``boxes``, ``crops`` (N, 3; -1 undetected), ``keypoints`` (N, K, 2; NaN undetected)."""
    if boxes is None:
        boxes = detect.match_dataset(dataset, predictor.params, min_iou, progress)["detector"]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(len(dataset), 4)
    detected = np.all(np.isfinite(boxes), axis=1)
    keypoints = np.full((len(dataset), predictor.model.scheme.num_keypoints, 2), np.nan, np.float32)
    crops = np.full((len(dataset), 3), -1, np.int64)
    idx = np.flatnonzero(detected)
    for start in range(0, len(idx), batch_size):
        part = idx[start:start + batch_size]
        crops[part] = detect.face_crops(boxes[part], predictor.calibration)
        faces = np.stack([preprocess.crop_face(dataset.images[i], crops[i], predictor.model.size) for i in part])
        keypoints[part] = preprocess.to_image_coords(predictor.model.predict_faces(faces), crops[part],
                                                     predictor.model.size)
    return {"detected": detected, "boxes": boxes.astype(np.float32), "crops": crops, "keypoints": keypoints}
