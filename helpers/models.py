"""The two networks of the thesis, their loss and metrics, saving and loading. Both map ``(96, 96, 1)`` images in
[0, 1] to ``2K`` coordinates in [-1, 1]; loss and metrics skip missing (NaN) targets, so Kaggle's incomplete rows
still teach, and are registered Keras objects: a saved model loads with ``safe_mode=True``."""
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
from keras import layers, ops

from . import config
from .schemes import Scheme, get_scheme

MODEL_NAMES = ("lenet", "resnet50")
INPUT_SHAPE = (config.IMAGE_SIZE, config.IMAGE_SIZE, 1)
# a training run's folder; model: the best epoch by validation NME; backup and log are not committed
FILES = {"model": "model.keras", "history": "history.csv", "summary": "summary.json", "backup": "backup.npz",
         "log": "train.log"}
PX_PER_UNIT = config.IMAGE_SIZE / 2.0     # normalised [-1, 1] → pixels of the 96² crop


def lenet(scheme: Scheme | str = "68", dropout: float = 0.0, filters=(16, 32, 96, 192), units: int = 256,
          name: str = "lenet") -> keras.Sequential:
    """LeNet-inspired: (conv 3×3 → BN → ReLU → max-pool) × 4 (96² → 6²), dense, dropout, 2K outputs. Batch norm
    and same padding make it train reliably; augmentation, not dropout, is its regulariser."""
    k2 = 2 * get_scheme(scheme).num_keypoints
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=INPUT_SHAPE, name="image"))
    for i, f in enumerate(filters, start=1):
        model.add(layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}"))
        model.add(layers.BatchNormalization(name=f"bn{i}"))
        model.add(layers.Activation("relu", name=f"relu{i}"))
        model.add(layers.MaxPooling2D(2, name=f"pool{i}"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Dense(units, activation="relu", name="fc1"))
    model.add(layers.Dropout(dropout, name="dropout"))
    model.add(layers.Dense(k2, name="keypoints"))
    return model


def resnet50(scheme: Scheme | str = "68", dropout: float = 0.0, name: str = "resnet50") -> keras.Model:
    """``keras.applications.ResNet50`` (untrained, gray; 96² → 3×3×2048), average pooling, dropout, 2K outputs."""
    k2 = 2 * get_scheme(scheme).num_keypoints
    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    x = keras.applications.ResNet50(weights=None, include_top=False, input_shape=INPUT_SHAPE, pooling=None)(inputs)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(k2, name="keypoints")(x)
    return keras.Model(inputs, outputs, name=name)


def build_model(name: str, scheme: Scheme | str = "68", **kwargs) -> keras.Model:
    """``lenet`` or ``resnet50`` by name (``kwargs``: e.g. ``dropout``)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {MODEL_NAMES}")
    return {"lenet": lenet, "resnet50": resnet50}[name](scheme, **kwargs)


def _leaves(layer) -> list:
    """The layers of a model with nested models opened up (``resnet50``'s trunk is one nested model)."""
    subs = getattr(layer, "layers", None)
    return [leaf for sub in subs for leaf in _leaves(sub)] if subs else [layer]


def freeze_batchnorm(model: keras.Model) -> int:
    """Every batch-norm layer in inference mode for good (moving statistics fixed, scale and offset not trained), so
    training optimises the network exactly as it predicts, not on each batch's statistics. Returns how many."""
    frozen = [layer for layer in _leaves(model) if isinstance(layer, layers.BatchNormalization)]
    for layer in frozen:
        layer.trainable = False
    return len(frozen)


def layer_costs(model: keras.Model) -> pd.DataFrame:
    """Output shape, parameters and multiply-adds per face of each convolution (kh·kw·c_in·c_out per output
    position) and dense layer (its kernel once); the other layers add little arithmetic and are left out."""
    rows = []
    for layer in _leaves(model):
        out = layer.output.shape[1:]
        if isinstance(layer, layers.Conv2D):
            macs = int(np.prod(out[:2]) * np.prod(layer.kernel.shape))
        elif isinstance(layer, layers.Dense):
            macs = int(np.prod(layer.kernel.shape))
        else:
            continue
        rows.append({"layer": layer.name, "output": "×".join(map(str, out)),
                     "parameters": int(sum(np.prod(w.shape) for w in layer.weights)), "multiply-adds": macs})
    return pd.DataFrame(rows).set_index("layer")


def count_params(model: keras.Model) -> dict:
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    total = int(sum(np.prod(v.shape) for v in model.weights))
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def _masked(y_true, y_pred):
    """(difference with zeros where the target is missing, mask as float)."""
    y_true = ops.convert_to_tensor(y_true, dtype="float32")
    y_pred = ops.cast(y_pred, "float32")
    mask = ops.logical_not(ops.isnan(y_true))
    filled = ops.where(mask, y_true, ops.zeros_like(y_true))
    # where() before any arithmetic on the masked branch: its gradient there is exactly zero, never NaN
    diff = ops.where(mask, y_pred - filled, ops.zeros_like(y_pred))
    return diff, ops.cast(mask, "float32")


@keras.saving.register_keras_serializable(package="facekp")
class MaskedLoss(keras.losses.Loss):
    """Per-sample mean of ``"mse"``, ``"mae"`` or ``"wing"`` over the present (non-NaN) coordinates of (B, 2K). Wing
    (Feng et al., CVPR 2018): ``w·ln(1 + |x|/ε)`` below ``w``, ``|x| − C`` beyond, ``(w, ε)`` = ``wing_px`` in pixels
    of the 96² crop; it pulls harder than L1 on the small errors that decide the NME."""

    KINDS = ("mse", "mae", "wing")

    def __init__(self, kind: str = "mse", wing_px=(10.0, 2.0), name: str | None = None,
                 reduction="sum_over_batch_size", dtype=None):
        if kind not in self.KINDS:
            raise ValueError(f"MaskedLoss kind must be one of {self.KINDS}, got {kind!r}")
        w, eps = (float(v) for v in wing_px)
        if w <= 0 or eps <= 0:
            raise ValueError(f"wing_px (w, epsilon) must be positive, got {wing_px!r}")
        super().__init__(name=name or f"masked_{kind}", reduction=reduction, dtype=dtype)
        self.kind, self.wing_px = kind, (w, eps)

    def call(self, y_true, y_pred):
        diff, mask = _masked(y_true, y_pred)
        if self.kind == "mse":
            err = ops.square(diff)
        elif self.kind == "mae":
            err = ops.abs(diff)
        else:
            w, eps = (v / PX_PER_UNIT for v in self.wing_px)            # pixels → normalised units
            a = ops.abs(diff)
            c = w - w * float(np.log1p(w / eps))
            err = ops.where(a < w, w * ops.log1p(a / eps), a - c)
        return ops.sum(err, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "wing_px": list(self.wing_px)}


@keras.saving.register_keras_serializable(package="facekp")
class NME(keras.metrics.Metric):
    """Normalised mean error (a fraction): per face, mean point error / the outer-eye-corner distance (68 points)
    or the eye-centre distance (15); missing points are skipped, faces without a normaliser left out."""

    def __init__(self, scheme: str = "68", name: str = "nme", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.scheme = get_scheme(scheme).name
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.reshape(ops.convert_to_tensor(y_true, dtype="float32"), (ops.shape(y_true)[0], -1, 2))
        p = ops.reshape(ops.cast(y_pred, "float32"), ops.shape(t))
        present = ops.logical_not(ops.any(ops.isnan(t), axis=-1))                      # (B, K)
        t0 = ops.where(present[..., None], t, ops.zeros_like(t))
        err = ops.sqrt(ops.sum(ops.square(p - t0), axis=-1) + 1e-12)                   # (B, K)
        err = ops.where(present, err, ops.zeros_like(err))
        n = ops.sum(ops.cast(present, "float32"), axis=-1)
        mean_err = ops.sum(err, axis=-1) / ops.maximum(n, 1.0)
        a, b = (ops.mean(ops.take(t, list(side), axis=1), axis=1) for side in get_scheme(self.scheme).normaliser)
        d = ops.sqrt(ops.sum(ops.square(a - b), axis=-1))                              # NaN if undefined
        ok = ops.logical_and(n > 0, d > 0)                                              # NaN > 0 is false
        per_face = ops.where(ok, mean_err / ops.where(ok, d, ops.ones_like(d)), ops.zeros_like(mean_err))
        sw = 1.0 if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(ok))
        w = ops.cast(ok, "float32") * sw
        self.total.assign_add(ops.sum(per_face * w))
        self.count.assign_add(ops.sum(w))

    def result(self):
        return self.total / ops.maximum(self.count, 1e-12)

    def get_config(self):
        return {"scheme": self.scheme, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="facekp")
class RMSEPixels(keras.metrics.Metric):
    """Root mean squared error over all present coordinates, in pixels of the 96×96 crop."""

    def __init__(self, name: str = "rmse_px", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.sq = self.add_variable(shape=(), initializer="zeros", name="sq")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        diff, mask = _masked(y_true, y_pred)
        w = 1.0 if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        self.sq.assign_add(ops.sum(ops.square(diff) * w))
        self.count.assign_add(ops.sum(mask * w))

    def result(self):
        return ops.sqrt(self.sq / ops.maximum(self.count, 1e-12)) * PX_PER_UNIT


def compile_model(model: keras.Model, scheme: Scheme | str = "68", learning_rate=1e-3, loss: str = "mae",
                  wing_px=(10.0, 2.0), weight_decay: float = 0.0, clipnorm: float | None = None) -> keras.Model:
    """Adam (AdamW with ``weight_decay``; ``learning_rate`` a number or a schedule), the masked loss, NME, RMSE."""
    optimizer = (keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, clipnorm=clipnorm)
                 if weight_decay else keras.optimizers.Adam(learning_rate, clipnorm=clipnorm))
    model.compile(optimizer=optimizer, loss=MaskedLoss(loss, wing_px=wing_px),
                  metrics=[NME(get_scheme(scheme).name), RMSEPixels()])
    return model


def model_path(name: str) -> Path:
    """``models/<name>/model.keras``: the model its recipe ``recipes/<name>.toml`` trained."""
    return config.MODELS_DIR / name / FILES["model"]


def resolve_model_path(name_or_path) -> Path:
    """The ``.keras`` file behind a model name (``lenet``, ``resnet50``, ``lenet15``) or a path."""
    text = str(name_or_path)
    if Path(text).suffix != ".keras" and "/" not in text:
        path = model_path(text)
        if not path.exists():
            raise FileNotFoundError(f"no trained {text!r} model at {path}: train it with `facekp train "
                                    f"recipes/{text}.toml --profile full --out models/{text}`")
    else:
        path = Path(text).expanduser()
        if path.suffix != ".keras":
            raise ValueError(f"expected a model name or a path to a .keras file, got {text!r}")
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
    if (epoch := unfinished_after(path.parent)) is not None:
        warnings.warn(f"{config.shown(path.parent)} holds a training run stopped or still going after epoch {epoch}: "
                      f"its {path.name} is the best epoch so far, not the finished run's model")
    return path


def unfinished_after(run_dir: Path) -> int | None:
    """The epochs a training run in ``run_dir`` has done if its backup says it has not finished, else None."""
    try:
        with np.load(run_dir / FILES["backup"], allow_pickle=False) as z:     # reads only the state's bytes
            state = json.loads(str(z["state"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # no backup (or not one): nothing to say
        return None
    return None if state.get("stopped_by") else state.get("epochs_done")


def load_model(name_or_path, compile: bool = True) -> keras.Model:
    """Load a model by name or ``.keras`` path with ``safe_mode=True``; it computes in float32."""
    path = resolve_model_path(name_or_path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model (a .keras file is a zip archive; this one is truncated or "
                         "another kind of file)")
    try:
        with warnings.catch_warnings():
            # saved models carry a fresh, unbuilt optimizer (no state): nothing to restore, nothing lost
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.models.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as e:   # safe_mode refusals included
        why = " ".join(str(e).split())
        raise ValueError(f"{path}: cannot be loaded as a keypoint model ({type(e).__name__}: "
                         f"{why[:240] + ' ...' if len(why) > 240 else why})") from None
    model.source_path = str(path)
    return model


def save_model(model: keras.Model, path, half_precision: bool | None = None) -> Path:
    """Save ``model`` without optimizer state, atomically. ``half_precision`` (default: weights over 90 MB, i.e.
    ResNet-50) stores the large arrays as float16, half the file; Keras casts them back to float32 on loading."""
    path = Path(path)
    fresh = keras.models.clone_model(model)
    fresh.set_weights(model.get_weights())
    compile_model(fresh, str(int(fresh.output_shape[-1]) // 2))
    if half_precision is None:
        half_precision = sum(int(np.prod(w.shape)) * 4 for w in fresh.weights) > 90e6
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "model.keras"
        fresh.save(raw)
        if half_precision:
            raw = _halve(raw, Path(tmp))
        os.replace(raw, path)
    return path


def _halve(src: Path, tmp: Path) -> Path:
    """A copy of the ``.keras`` archive ``src`` whose float32 arrays of 1024+ values are float16."""
    out = tmp / "half.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith(".h5"):
                (tmp / "in.h5").write_bytes(data)
                with h5py.File(tmp / "in.h5", "r") as fin, h5py.File(tmp / "out.h5", "w") as fout:
                    _copy_h5(fin, fout)
                data = (tmp / "out.h5").read_bytes()
            zout.writestr(item.filename, data)
    return out


def _copy_h5(src, dst) -> None:
    for k, v in src.attrs.items():
        dst.attrs[k] = v
    for key, item in src.items():
        if isinstance(item, h5py.Group):
            _copy_h5(item, dst.create_group(key))
            continue
        arr = item[()]
        if isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.size >= 1024:
            arr = arr.astype(np.float16)
        ds = dst.create_dataset(key, data=arr)
        for k, v in item.attrs.items():
            ds.attrs[k] = v
