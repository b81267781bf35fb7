"""Every number the project reports about a model comes from here.

Accuracy (on any split of any data set, on the 96×96 crops of the ground-truth landmark box, the same
geometry as training):

* **NME** — per face, the mean point-to-point error over its present keypoints divided by the normalising
  distance: the distance between the **outer eye corners** (points 36 and 45) for 68 points, between the
  **eye centres** for the 15 Kaggle points (:attr:`helpers.schemes.Scheme.normaliser_name`). The reported NME
  is the mean over faces.
* **RMSE px** — root mean squared coordinate error in pixels of the 96×96 crop.
* **per-keypoint error** — mean normalised error of each keypoint.
* **CED** — cumulative error distribution: the fraction of faces whose NME is at most *x*.
* **AUC@0.08** — area under the CED from 0 to 0.08, divided by 0.08 (1 = every face perfect).
* **failure rate** at 0.08 and 0.10 — the fraction of faces whose NME exceeds the threshold.
* best and worst faces (by NME).
* **mirror bias** — the mean signed error in x and y of the predictions, and of the predictions on mirrored
  faces mapped back (:func:`mirror_bias`): a network trained with flips cannot learn an offset that the
  annotations have in x only.

Speed: 1-image latency (median of repeated single-image calls) and batch throughput (images per second in
batches), on whatever machine runs it.

Fractions are returned as fractions; :func:`report_json` converts NME and failure rates to percent.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from . import config
from .preprocess import Faces, denormalise_keypoints
from .schemes import Scheme, get_scheme

__all__ = ["predict_keypoints", "point_errors", "nme_per_face", "rmse_px", "per_keypoint_error", "ced",
           "auc", "failure_rate", "measure_speed", "evaluate_model", "evaluate", "report_json",
           "results_table", "load_eval_faces", "plot_ced", "plot_per_keypoint", "plot_examples", "plot_best_worst",
           "mirror_bias", "activation_peaks", "plot_activation_peaks", "CED_LIMIT", "FAIL_THRESHOLDS"]

CED_LIMIT = 0.08
FAIL_THRESHOLDS = (0.08, 0.10)


# ----------------------------------------------------------------------------------------------------------
# Metrics on arrays (pixels, NaN = missing)
# ----------------------------------------------------------------------------------------------------------
def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"predictions and ground truth must both be (N, K, 2), got {pred.shape} and {gt.shape}")
    return pred, gt


def point_errors(pred, gt) -> np.ndarray:
    """(N, K) Euclidean error of each keypoint, in the coordinates' units; NaN where the truth is missing."""
    pred, gt = _check_pair(pred, gt)
    return np.linalg.norm(pred - gt, axis=-1)


def nme_per_face(pred, gt, scheme: Scheme | str) -> np.ndarray:
    """(N,) mean point error over present points / the scheme's normalising distance (NaN if undefined)."""
    scheme = get_scheme(scheme)
    pred, gt = _check_pair(pred, gt)
    if gt.shape[1] != scheme.num_keypoints:
        raise ValueError(f"{gt.shape[1]} keypoints do not match scheme {scheme.name!r}")
    err = point_errors(pred, gt)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = np.isfinite(err)
        mean_err = np.where(present.any(axis=1), np.nansum(err, axis=1) / np.maximum(present.sum(axis=1), 1), np.nan)
        d = scheme.interocular(gt)
        return np.where(d > 0, mean_err / d, np.nan)


def rmse_px(pred, gt) -> float:
    """Root mean squared coordinate error over all present coordinates."""
    pred, gt = _check_pair(pred, gt)
    sq = (pred - gt) ** 2
    if not np.isfinite(sq).any():
        return float("nan")
    return float(np.sqrt(np.nanmean(sq)))


def per_keypoint_error(pred, gt, scheme: Scheme | str) -> np.ndarray:
    """(K,) mean over faces of each keypoint's error / the face's normalising distance."""
    scheme = get_scheme(scheme)
    pred, gt = _check_pair(pred, gt)
    d = scheme.interocular(gt)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = point_errors(pred, gt) / np.where(d > 0, d, np.nan)[:, None]
        return np.nanmean(norm, axis=0)


def _valid(nme) -> np.ndarray:
    nme = np.asarray(nme, dtype=np.float64).ravel()
    nme = nme[np.isfinite(nme)]
    if nme.size == 0:
        raise ValueError("no face with a defined NME")
    return nme


def ced(nme, thresholds) -> np.ndarray:
    """Fraction of faces with NME ≤ each threshold."""
    nme = _valid(nme)
    t = np.asarray(thresholds, dtype=np.float64)
    return (nme[None, :] <= t.ravel()[:, None]).mean(axis=1).reshape(t.shape)


def auc(nme, limit: float = CED_LIMIT) -> float:
    """Area under the CED on [0, limit], divided by ``limit`` (exact for the step-function CED).

    The CED is a step function, so the area is ``mean(max(0, limit - nme)) / limit``.
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    nme = _valid(nme)
    return float(np.mean(np.clip(limit - nme, 0.0, None)) / limit)


def failure_rate(nme, threshold: float = 0.08) -> float:
    """Fraction of faces whose NME exceeds ``threshold``."""
    return float(np.mean(_valid(nme) > threshold))


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------
def keypoint_model(model, runtime: str = "keras"):
    """A :class:`helpers.predict.KeypointModel` (compiled or exported forward pass) from a name, a ``.keras``
    path, a Keras model or a ``KeypointModel`` (returned as it is). ``runtime``: see
    :func:`helpers.predict.load_keypoint_model`; evaluation defaults to the Keras graph itself."""
    from .predict import load_keypoint_model

    return load_keypoint_model(model, warm_up=False, runtime=runtime)


def predict_keypoints(model, images, batch_size: int = 64, runtime: str = "keras") -> np.ndarray:
    """(N, K, 2) keypoints in pixels of the 96² crops from (N, 96, 96) uint8 (or float 0-1) images."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (config.IMAGE_SIZE, config.IMAGE_SIZE):
        raise ValueError(f"images must be (N, {config.IMAGE_SIZE}, {config.IMAGE_SIZE}), got {images.shape}")
    if len(images) == 0:
        raise ValueError("no images to predict")
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    km = keypoint_model(model, runtime)
    out = np.concatenate([km.forward(x[i:i + batch_size, ..., None]) for i in range(0, len(x), batch_size)])
    return denormalise_keypoints(out.reshape(len(x), -1, 2), size=config.IMAGE_SIZE)


def measure_speed(model, repeats: int = 20, batch_size: int = 64, runtime: str = "keras") -> dict:
    """1-image latency (median ms over ``repeats`` calls) and batch throughput (images/s, batches of
    ``batch_size``) of the model's forward pass (:class:`helpers.predict.KeypointModel`: compiled or exported,
    no ``model.predict`` overhead), on random inputs after a warm-up call."""
    km = keypoint_model(model, runtime)
    rng = np.random.default_rng(0)
    one = rng.random((1, config.IMAGE_SIZE, config.IMAGE_SIZE, 1), dtype=np.float32)
    batch = rng.random((batch_size, config.IMAGE_SIZE, config.IMAGE_SIZE, 1), dtype=np.float32)
    km.forward(one)
    times = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        km.forward(one)
        times.append(time.perf_counter() - t)
    km.forward(batch)
    n_batches = max(2, repeats // 5)
    t = time.perf_counter()
    for _ in range(n_batches):
        km.forward(batch)
    throughput = n_batches * batch_size / (time.perf_counter() - t)
    return {"latency_ms": 1000 * float(np.median(times)), "throughput_ips": float(throughput),
            "ms_per_face": 1000.0 / float(throughput), "batch_size": batch_size, "runtime": km.runtime}


def mirror_bias(model, faces: Faces, batch_size: int = 64, runtime: str = "keras") -> dict:
    """Mean signed error (prediction − ground truth, pixels of the 96² crop) of ``model`` on ``faces``, in x
    and y, for the faces as they are (``x``, ``y``) and for their mirror images, the predictions mapped back
    with :func:`helpers.augment.hflip` (``x_mirrored``, ``y_mirrored``).

    A network that treats a face and its mirror image alike has the same bias both ways. If the annotations sit
    a constant ``d`` pixels to the right of where the mirror symmetry of the face puts them, a network trained
    with 50 % flips sees ``+d`` on the original faces and ``−d`` on the flipped ones and cannot learn either:
    its ``x`` bias is about ``−d`` (and more negative mirrored), while its ``y`` bias, untouched by flips, is
    learnt away.
    """
    from .augment import hflip

    model = keypoint_model(model, runtime)
    pred = predict_keypoints(model, faces.images, batch_size)
    mirrored, _ = hflip(faces.images, faces.keypoints, faces.scheme)
    _, back = hflip(mirrored, predict_keypoints(model, mirrored, batch_size), faces.scheme)
    plain, mirror = np.nanmean(pred - faces.keypoints, axis=(0, 1)), np.nanmean(back - faces.keypoints, axis=(0, 1))
    return {"x": float(plain[0]), "y": float(plain[1]), "x_mirrored": float(mirror[0]),
            "y_mirrored": float(mirror[1])}


def activation_peaks(model, images, layers, batch_size: int = 64) -> pd.DataFrame:
    """Each face's largest activation at each of ``layers``: a (faces × layers) table.

    ``layers`` are names of layers of a Keras model (or its name) or of a sub-model applied directly to its
    input, as ResNet-50's trunk (``conv4_block6_out``). A ReLU network with batch normalisation is, at
    inference, a fixed piecewise-linear map: a face that drives a stage far beyond what the training faces did
    reaches the dense head with features it never learnt to read.
    """
    import keras

    from .models import load_model

    model = load_model(model) if isinstance(model, str) else model
    if not isinstance(model, keras.Model):
        raise TypeError(f"activation_peaks needs a Keras model or its name, got {type(model).__name__}")
    owners = [model] + [layer for layer in model.layers if isinstance(layer, keras.Model)]
    x = np.asarray(images)
    x = (x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32))[..., None]
    columns = {}
    for name in layers:
        owner = next((m for m in owners if name in {layer.name for layer in m.layers}), None)
        if owner is None:
            raise KeyError(f"no layer {name!r} in {model.name} or its sub-models")
        probe = keras.Model(owner.inputs[0], owner.get_layer(name).output)
        out = np.concatenate([keras.ops.convert_to_numpy(probe(x[i:i + batch_size], training=False))
                              for i in range(0, len(x), batch_size)])
        columns[name] = np.abs(out.reshape(len(out), -1)).max(axis=1)
    return pd.DataFrame(columns)


def plot_activation_peaks(peaks: pd.DataFrame, highlight, labels=None, ax=None):
    """Median and 5–95 % band of the per-face activation peaks at each layer (log scale), with the faces
    ``highlight`` (row positions) drawn as lines of their own."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.6))
    pos = np.arange(peaks.shape[1])
    lo, mid, hi = (np.percentile(peaks.to_numpy(), q, axis=0) for q in (5, 50, 95))
    ax.fill_between(pos, lo, hi, color="0.85", label="5–95 % of the faces")
    ax.plot(pos, mid, color="0.3", lw=2, label="median face")
    for j, i in enumerate(highlight):
        ax.plot(pos, peaks.iloc[i].to_numpy(), marker="o", ms=3,
                label=labels[j] if labels is not None else f"face {i}")
    ax.set(yscale="log", ylabel="largest activation", xticks=pos)
    ax.set_xticklabels(peaks.columns, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    return ax


def evaluate_model(model, faces: Faces, timing: bool = True, batch_size: int = 64, repeats: int | None = None,
                   n_examples: int = 6, runtime: str = "keras") -> dict:
    """All metrics of ``model`` on ``faces``; arrays for plots under ``per_face``, ``pred``, ``per_keypoint``.

    Fractions stay fractions here (NME 0.05 = 5 %). ``timing`` adds :func:`measure_speed`. ``runtime``
    (``keras``, ``onnx``, ``int8`` or ``auto``) chooses the forward pass, as for
    :func:`helpers.predict.load_keypoint_model`; a :class:`helpers.predict.KeypointModel` keeps its own.
    """
    model = keypoint_model(model, runtime)
    if len(faces) == 0:
        raise ValueError(f"no faces to evaluate in {faces.source!r}")
    k = model.scheme.num_keypoints
    if k != faces.scheme.num_keypoints:
        raise ValueError(f"model predicts {k} keypoints but {faces.source!r} has {faces.scheme.num_keypoints}")
    pred = predict_keypoints(model, faces.images, batch_size)
    gt = faces.keypoints
    nme = nme_per_face(pred, gt, faces.scheme)
    ok = np.isfinite(nme)
    order = np.argsort(np.where(ok, nme, np.inf))
    n_ok = int(ok.sum())
    out = {
        "model": model.name,
        "runtime": model.runtime,
        "data": faces.source,
        "faces": n_ok,
        "faces_without_nme": int(len(faces) - n_ok),
        "scheme": faces.scheme.name,
        "normaliser": faces.scheme.normaliser_name,
        "nme": float(np.mean(nme[ok])),
        "nme_median": float(np.median(nme[ok])),
        "rmse_px96": rmse_px(pred, gt) * (96.0 / config.IMAGE_SIZE),
        "auc08": auc(nme, CED_LIMIT),
        "fail08": failure_rate(nme, 0.08),
        "fail10": failure_rate(nme, 0.10),
        "per_face": nme,
        "pred": pred,
        "per_keypoint": per_keypoint_error(pred, gt, faces.scheme),
        "best": order[:n_examples].tolist(),
        "worst": order[:n_ok][::-1][:n_examples].tolist(),
    }
    if timing:
        repeats = repeats or config.get_profile().benchmark_repeats
        out.update(measure_speed(model, repeats=repeats, batch_size=batch_size))
    return out


def load_eval_faces(spec: str, split: str | None = "test", max_faces: int | None = None,
                    progress: bool = False) -> Faces:
    """Faces to evaluate on: the saved identity-disjoint ``split`` of a named data set, every face of
    ``300w/afw`` (test only) or of a ``300w:PATH`` folder (split ignored)."""
    from .splits import load_faces

    if spec.startswith("300w:"):
        faces = load_faces(spec, None, max_faces=max_faces, progress=progress)
    else:
        faces = load_faces(spec, split, max_faces=max_faces, progress=progress)
    if len(faces) == 0:
        raise ValueError(f"the {split!r} split of {spec!r} has no faces")
    return faces


def evaluate(model, spec: str, split: str | None = "test", max_faces: int | None = None, timing: bool = True,
             progress: bool = False, **kwargs) -> dict:
    """:func:`evaluate_model` of a model (name, path or object) on a data set spec and split."""
    faces = load_eval_faces(spec, split, max_faces=max_faces, progress=progress)
    out = evaluate_model(model, faces, timing=timing, **kwargs)
    out["split"] = "all" if spec.startswith("300w:") else split
    out["faces_obj"] = faces
    return out


def report_json(result: dict) -> dict:
    """The JSON-safe summary of an evaluation: NME, failure rates and AUC in **percent**."""
    keys = ("model", "runtime", "data", "split", "faces", "faces_without_nme", "scheme", "normaliser")
    out = {k: result[k] for k in keys if k in result}
    out.update({
        "nme": round(100 * result["nme"], 4),
        "nme_median": round(100 * result["nme_median"], 4),
        "rmse_px96": round(result["rmse_px96"], 4),
        "auc08": round(100 * result["auc08"], 4),
        "fail08": round(100 * result["fail08"], 4),
        "fail10": round(100 * result["fail10"], 4),
    })
    for k in ("ms_per_face", "latency_ms", "throughput_ips"):
        if k in result:
            out[k] = round(result[k], 4)
    if "model_path" in result:
        out["model_path"] = result["model_path"]
    return out


def results_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per ``{label: evaluate result}``: faces, NME %, RMSE px, AUC@0.08 %, failure rates %."""
    rows = {}
    for label, r in results.items():
        j = report_json(r)
        rows[label] = {"faces": j["faces"], "NME %": j["nme"], "median NME %": j["nme_median"],
                       "RMSE px (96²)": j["rmse_px96"], "AUC@0.08 %": j["auc08"], "failure >0.08 %": j["fail08"],
                       "failure >0.10 %": j["fail10"]}
    table = pd.DataFrame(rows).T
    table["faces"] = table["faces"].astype(int)
    return table.round(2)


# ----------------------------------------------------------------------------------------------------------
# Figures of chapter 06 (and the validation views of 04 and 05)
# ----------------------------------------------------------------------------------------------------------
def plot_ced(results: dict[str, dict], limit: float = 0.10, ax=None):
    """CED curves (NME on x, fraction of faces on y) of ``{label: evaluate result}``, AUC@0.08 in the legend."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.5))
    x = np.linspace(0, limit, 401)
    for label, r in results.items():
        ax.plot(100 * x, 100 * ced(r["per_face"], x), label=f"{label} (AUC@0.08 {100 * r['auc08']:.1f} %)")
    ax.axvline(100 * CED_LIMIT, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="NME (%)", ylabel="faces with NME ≤ x (%)", xlim=(0, 100 * limit), ylim=(0, 100))
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_per_keypoint(results: dict[str, dict], scheme, ax=None):
    """Grouped bars of each keypoint's mean normalised error (%) for ``{label: evaluate result}``."""
    import matplotlib.pyplot as plt

    scheme = get_scheme(scheme)
    if ax is None:
        _, ax = plt.subplots(figsize=(16, 3.8))
    k = scheme.num_keypoints
    width = 0.8 / max(len(results), 1)
    for i, (label, r) in enumerate(results.items()):
        ax.bar(np.arange(k) + (i - (len(results) - 1) / 2) * width, 100 * r["per_keypoint"], width, label=label)
    ax.set(xlabel="keypoint (iBUG index)" if k == 68 else "keypoint", ylabel="mean error / normaliser (%)",
           xlim=(-1, k))
    ax.set_xticks(np.arange(0, k, 1 if k <= 20 else 2))
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=8)
    return ax


def plot_examples(result: dict, faces: Faces, which: str = "worst", n: int = 6, cell: float = 2.4):
    """Ground truth (sides coloured) and prediction (green crosses) on the ``best``/``worst`` faces, or on the
    first ``n`` (``which="first"``). Titles give each face's NME."""
    from .plots import face_grid

    if which == "first":
        idx = np.flatnonzero(np.isfinite(result["per_face"]))[:n]
    elif which in ("best", "worst"):
        idx = np.asarray(result[which][:n])
    else:
        raise ValueError("which must be 'best', 'worst' or 'first'")
    import warnings

    titles = [f"NME {100 * result['per_face'][i]:.1f} %" for i in idx]
    with warnings.catch_warnings():          # matplotlib: edge colour of the unfilled 'x' markers
        warnings.simplefilter("ignore", UserWarning)
        return face_grid(faces.images[idx], faces.keypoints[idx], faces.scheme, titles=titles, ncols=n,
                         cell=cell, predictions=result["pred"][idx], size=8)


def plot_best_worst(results: dict[str, dict], faces: Faces, n: int = 6, cell: float = 2.1):
    """One row of best and one row of worst faces per model of ``{label: evaluate result}`` (same faces).

    Ground truth in the side colours, prediction as green crosses; titles give each face's NME.
    """
    import warnings

    import matplotlib.pyplot as plt

    from .plots import show_keypoints

    rows = [(label, which) for label in results for which in ("best", "worst")]
    fig, axes = plt.subplots(len(rows), n, figsize=(cell * n, cell * len(rows) + 0.3), squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for (label, which), row in zip(rows, axes):
            r = results[label]
            idx = list(r[which][:n])
            for j, ax in enumerate(row):
                ax.set_axis_off()
                if j >= len(idx):
                    continue
                i = idx[j]
                show_keypoints(ax, faces.images[i], faces.keypoints[i], faces.scheme, size=6)
                show_keypoints(ax, None, r["pred"][i], None, lines=False, colour="#3cb44b", marker="x", size=8)
                ax.set_title(f"NME {100 * r['per_face'][i]:.1f} %", fontsize=8)
                h, w = faces.images[i].shape[:2]
                ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5))     # points outside the crop are cut off
                ax.set_axis_off()
            row[0].text(-0.08, 0.5, f"{label}\n{which}", transform=row[0].transAxes, ha="right", va="center",
                        fontsize=9)
    return fig
