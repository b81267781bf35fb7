"""Every number the project reports about a model, and its figures. **NME**: per face, the mean error of its present
keypoints / the outer-eye-corner (68 points) or eye-centre (15) distance; **CED**: the fraction of faces with NME ≤ x;
**AUC@0.08**: its area up to 0.08, / 0.08. Fractions stay fractions (percent: :func:`report_json`)."""
import warnings
from itertools import zip_longest

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import config, export, models, predict, splits
from .augment import hflip
from .plots import show_keypoints
from .preprocess import Faces
from .schemes import Scheme, five_points, get_scheme

CED_LIMIT = 0.08


def _errors(pred, gt) -> np.ndarray:
    """(N, K) Euclidean error of each keypoint; NaN where the truth is missing."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"predictions and ground truth must both be (N, K, 2), got {pred.shape} and {gt.shape}")
    return np.linalg.norm(pred - gt, axis=-1)


def nme_per_face(pred, gt, scheme: Scheme | str) -> np.ndarray:
    """(N,) mean error over present points / the scheme's normalising distance (NaN if undefined)."""
    scheme, err = get_scheme(scheme), _errors(pred, gt)
    if err.shape[1] != scheme.num_keypoints:
        raise ValueError(f"{err.shape[1]} keypoints do not match scheme {scheme.name!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.isfinite(err).sum(axis=1)
        d = scheme.interocular(np.asarray(gt, dtype=np.float64))
        return np.where((n > 0) & (d > 0), np.nansum(err, axis=1) / np.maximum(n, 1) / d, np.nan)


def rmse_px(pred, gt) -> float:
    """Root mean squared coordinate error over all present coordinates."""
    sq = _errors(pred, gt) ** 2                  # x² + y² per point: a point's two coordinates are both present
    return float(np.sqrt(np.nanmean(sq) / 2)) if np.isfinite(sq).any() else float("nan")


def per_keypoint_error(pred, gt, scheme: Scheme | str) -> np.ndarray:
    """(K,) mean over faces of each keypoint's error / the face's normalising distance."""
    d = get_scheme(scheme).interocular(np.asarray(gt, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(_errors(pred, gt) / np.where(d > 0, d, np.nan)[:, None], axis=0)


def _valid(nme) -> np.ndarray:
    nme = np.asarray(nme, dtype=np.float64).ravel()
    if not np.isfinite(nme).any():
        raise ValueError("no face with a defined NME")
    return nme[np.isfinite(nme)]


def ced(nme, thresholds) -> np.ndarray:
    """Fraction of faces with NME ≤ each threshold."""
    t = np.asarray(thresholds, dtype=np.float64)
    return (_valid(nme)[None, :] <= t.ravel()[:, None]).mean(axis=1).reshape(t.shape)


def auc(nme, limit: float = CED_LIMIT) -> float:
    """Area under the (step-function) CED on [0, limit] / ``limit`` = ``mean(max(0, limit - nme)) / limit``."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    return float(np.mean(np.clip(limit - _valid(nme), 0.0, None)) / limit)


def failure_rate(nme, threshold: float = 0.08) -> float:
    """Fraction of faces whose NME exceeds ``threshold``."""
    return float(np.mean(_valid(nme) > threshold))


def paired_bootstrap(values: dict, groups, samples: int = 2000, size: int | None = None,
                     seed: int = config.DEFAULT_SEED) -> dict:
    """``{key: (samples,) means}`` for ``{key: (N,) per-face values}`` on the same faces (a face NaN under any key is
    left out): each sample draws ``size`` groups (default: as many as there are), e.g. people, with replacement, each
    with all its faces, and the same draws serve every key, so differences between keys are paired."""
    ok = np.all([np.isfinite(v) for v in values.values()], axis=0)
    _, g = np.unique(np.asarray(groups)[ok], return_inverse=True)
    k = int(g.max()) + 1
    draw = np.random.default_rng(seed).integers(0, k, size=(samples, size or k))
    faces = np.bincount(g, minlength=k)[draw].sum(axis=1)
    return {key: np.bincount(g, np.asarray(v)[ok], minlength=k)[draw].sum(axis=1) / faces
            for key, v in values.items()}


def _detection_metrics(nme, detected) -> dict:
    """NME over the detected faces; failure rates and AUC over all, an undetected face failing with area 0."""
    detected = np.asarray(detected, dtype=bool)
    n, ok = len(detected), np.asarray(nme)[detected & np.isfinite(nme)]
    out = {"faces": n, "detected": int(detected.sum()), "detection_rate": float(detected.mean()) if n else np.nan,
           "nme_detected": float(np.mean(ok)) if len(ok) else np.nan,
           "nme_detected_median": float(np.median(ok)) if len(ok) else np.nan}
    for t in (0.08, 0.10):
        out[f"failure_rate_{t:g}"] = (n - len(ok) + int(np.sum(ok > t))) / n if n else np.nan
    return out | {f"auc_{CED_LIMIT:g}": auc(ok) * len(ok) / n if len(ok) else 0.0}


def end_to_end_metrics(result: dict, keypoints_true: np.ndarray, scheme: Scheme | str) -> dict:
    """The detection metrics of ``predict.run_dataset``'s ``result``, and ``nme_per_face`` (NaN where undetected)."""
    nme = nme_per_face(result["keypoints"], keypoints_true, scheme)
    return _detection_metrics(nme, result["detected"]) | {"nme_per_face": nme}


# point sets every method can be compared on (chapter 10): indices of the 68-point scheme
SEVEN = (36, 39, 42, 45, 30, 48, 54)          # eye corners, nose tip, mouth corners (MediaPipe's mesh has them)
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
           "mouth": range(48, 68)}


def point_set_nme(pred, truth) -> pd.DataFrame:
    """Per face, the NME of (N, 68, 2) predictions on ``nme68``, ``nme7`` (:data:`SEVEN`), ``nme5`` (MTCNN's points)
    and each of :data:`REGIONS` (outer-eye-corner distance of the truth); NaN where a face has no prediction."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    d = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)[:, None]
    e = np.linalg.norm(pred - truth, axis=-1) / d
    five = [five_points(kp) for kp in (pred, truth)]
    cols = {"nme68": e.mean(1), "nme7": e[:, list(SEVEN)].mean(1),
            "nme5": (np.linalg.norm(five[0] - five[1], axis=-1) / d).mean(1)}
    return pd.DataFrame(cols | {f"nme_{r}": e[:, list(i)].mean(1) for r, i in REGIONS.items()})


def comparison_table(faces: pd.DataFrame, point_set: str = "nme5") -> pd.DataFrame:
    """Per data set, method and setting, from one row per face (``detected`` and :func:`point_set_nme`'s columns):
    the metrics of :func:`end_to_end_metrics` in percent."""
    names = {"detection_rate": "detected %", "nme_detected": "mean NME % (found faces)",
             "nme_detected_median": "median NME % (found faces)", "failure_rate_0.08": "failures >0.08, % (all faces)",
             "failure_rate_0.1": "failures >0.10, % (all faces)", "auc_0.08": "AUC@0.08, % (all faces)"}

    def summary(g):
        m = _detection_metrics(g[point_set].to_numpy(), g["detected"].to_numpy())
        return pd.Series({"faces": m["faces"], **{name: 100 * m[key] for key, name in names.items()}})
    table = faces.groupby(["data", "method", "setting"])[["detected", point_set]].apply(summary)
    return table.astype({"faces": int})


def predict_keypoints(model, images) -> np.ndarray:
    """(N, K, 2) keypoints in crop pixels of (N, 96, 96) uint8 crops (``model``: as for ``load_keypoint_model``)."""
    images, s = np.asarray(images), config.IMAGE_SIZE
    if images.dtype != np.uint8 or images.shape[1:] != (s, s) or len(images) == 0:
        raise ValueError(f"images must be uint8 (N, {s}, {s}) with N > 0, got {images.dtype} {images.shape}")
    return predict.load_keypoint_model(model, False, "keras").predict_faces(images)


def measure_speed(model, repeats: int = 20, batch_size: int = 64, runtime: str = "keras") -> dict:
    """1-face latency (median ms) and batch throughput (faces/s) of the model's forward pass, on random inputs."""
    km = predict.load_keypoint_model(model, False, runtime)
    rng, s = np.random.default_rng(0), config.IMAGE_SIZE
    one, batch = (rng.random((n, s, s, 1), dtype=np.float32) for n in (1, batch_size))
    latency_ms = export.one_face_ms([km.forward], one, max(repeats, 1))[0]
    ms_per_face = export.one_face_ms([km.forward], batch, max(2, repeats // 5))[0] / batch_size
    return {"latency_ms": latency_ms, "throughput_ips": 1000.0 / ms_per_face, "ms_per_face": ms_per_face,
            "batch_size": batch_size, "runtime": km.runtime}


def mirror_gap(model, faces: Faces) -> np.ndarray:
    """(N, K, 2) crop pixels: the prediction on each face minus that on its mirror image mapped back (x → W − 1 − x,
    :func:`helpers.augment.hflip`); zero for a network that treats both alike. A pixel-centre/edge mix-up in the
    labels gives a gap constant in the original image's pixels, a learnt prior a varying one."""
    model = predict.load_keypoint_model(model, False, "keras")
    mirrored, _ = hflip(faces.images, faces.keypoints, faces.scheme)
    _, back = hflip(mirrored, predict_keypoints(model, mirrored), faces.scheme)
    return predict_keypoints(model, faces.images) - back


def activation_peaks(model, images, layers, batch_size: int = 64) -> pd.DataFrame:
    """(faces × layers) table: each uint8 image's largest absolute activation at each of ``layers`` (names in the
    Keras model, or in a sub-model such as ResNet-50's trunk)."""
    model = models.load_model(model) if isinstance(model, str) else model
    if not isinstance(model, keras.Model):
        raise TypeError(f"activation_peaks needs a Keras model or its name, got {type(model).__name__}")
    owners = [model] + [layer for layer in model.layers if isinstance(layer, keras.Model)]
    x, columns = np.asarray(images, np.float32)[..., None] / 255.0, {}
    for name in layers:
        owner = next((m for m in owners if name in {layer.name for layer in m.layers}), None)
        if owner is None:
            raise KeyError(f"no layer {name!r} in {model.name} or its sub-models")
        probe = keras.Model(owner.inputs[0], owner.get_layer(name).output)
        out = np.concatenate([keras.ops.convert_to_numpy(probe(x[i:i + batch_size], training=False))
                              for i in range(0, len(x), batch_size)])
        columns[name] = np.abs(out.reshape(len(out), -1)).max(axis=1)
    return pd.DataFrame(columns)


def evaluate_model(model, faces: Faces, timing: bool = True, repeats: int | None = None,
                   runtime: str = "keras") -> dict:
    """All metrics of ``model`` on ``faces``, the ``per_face``, ``pred`` and ``per_keypoint`` arrays and the six
    ``best``/``worst`` faces; ``timing`` adds :func:`measure_speed` (a ``KeypointModel`` keeps its ``runtime``)."""
    model = predict.load_keypoint_model(model, False, runtime)
    if len(faces) == 0:
        raise ValueError(f"no faces to evaluate in {faces.source!r}")
    if model.scheme.num_keypoints != faces.scheme.num_keypoints:
        raise ValueError(f"model predicts {model.scheme.num_keypoints} keypoints but {faces.source!r} has "
                         f"{faces.scheme.num_keypoints}")
    pred = predict_keypoints(model, faces.images)
    nme = nme_per_face(pred, faces.keypoints, faces.scheme)
    ok = np.isfinite(nme)
    order = np.argsort(np.where(ok, nme, np.inf), kind="stable")[:int(ok.sum())]
    out = {"model": model.name, "runtime": model.runtime, "data": faces.source, "faces": int(ok.sum()),
           "faces_without_nme": int((~ok).sum()), "scheme": faces.scheme.name, "skipped": faces.skipped_records(),
           "normaliser": faces.scheme.normaliser_name, "nme": float(np.mean(nme[ok])),
           "nme_median": float(np.median(nme[ok])),
           "rmse_px96": rmse_px(pred, faces.keypoints) * 96.0 / config.IMAGE_SIZE,
           "auc08": auc(nme, CED_LIMIT), "fail08": failure_rate(nme, 0.08), "fail10": failure_rate(nme, 0.10),
           "per_face": nme, "pred": pred, "per_keypoint": per_keypoint_error(pred, faces.keypoints, faces.scheme),
           "best": order[:6].tolist(), "worst": order[::-1][:6].tolist()}
    if timing:
        out.update(measure_speed(model, repeats=repeats or config.get_profile().benchmark_repeats))
    return out


def load_eval_faces(spec: str, split: str | None = "test", max_faces: int | None = None,
                    progress: bool = False) -> Faces:
    """The faces of ``split`` of a named data set, or every face of a ``300w:PATH`` folder (split ignored)."""
    split = None if spec.startswith("300w:") else split
    faces = splits.load_faces(spec, split, max_faces=max_faces, progress=progress)
    if len(faces) == 0:
        why = f" ({len(faces.skipped)} skipped, e.g. {': '.join(faces.skipped[0])})" if faces.skipped else ""
        raise ValueError(f"the {split!r} split of {spec!r} has no faces{why}")
    return faces


def evaluate(model, spec: str, split: str | None = "test", max_faces: int | None = None, timing: bool = True,
             progress: bool = False) -> dict:
    """:func:`evaluate_model` of a model (name, path or object) on a data set spec and split."""
    out = evaluate_model(model, load_eval_faces(spec, split, max_faces, progress), timing=timing)
    return out | {"split": "all" if spec.startswith("300w:") else split}


def report_json(result: dict) -> dict:
    """The JSON-safe summary of an evaluation: NME, failure rates and AUC in **percent**."""
    keys = ("model", "runtime", "data", "split", "faces", "faces_without_nme", "scheme", "normaliser", "model_path",
            "skipped")
    out = {k: result[k] for k in keys if k in result}
    out.update({k: round(100 * result[k], 4) for k in ("nme", "nme_median", "auc08", "fail08", "fail10")})
    out.update({k: round(result[k], 4) for k in ("rmse_px96", "ms_per_face", "latency_ms", "throughput_ips")
                if k in result})
    return out


def results_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per ``{label: evaluate result}``: faces, NME %, RMSE px, AUC@0.08 and failure rates in %."""
    columns = {"faces": "faces", "nme": "NME %", "nme_median": "median NME %", "rmse_px96": "RMSE px (96²)",
               "auc08": "AUC@0.08, %", "fail08": "failures >0.08, %", "fail10": "failures >0.10, %"}
    table = pd.DataFrame({label: report_json(r) for label, r in results.items()}).T[list(columns)]
    return table.rename(columns=columns).astype(float).astype({"faces": int}).round(2)


def plot_ced(results: dict[str, dict], limit: float = 0.10, ax=None):
    """CED curves (NME on x, fraction of faces on y) of ``{label: evaluate result}``, AUC@0.08 in the legend."""
    ax = ax or plt.subplots(figsize=(6.5, 4.5))[1]
    x = np.linspace(0, limit, 401)
    for label, r in results.items():
        ax.plot(100 * x, 100 * ced(r["per_face"], x), label=f"{label} (AUC@0.08 {100 * r['auc08']:.1f} %)")
    ax.axvline(100 * CED_LIMIT, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="NME (%)", ylabel="faces with NME ≤ x (%)", xlim=(0, 100 * limit), ylim=(0, 100))
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_per_keypoint(results: dict[str, dict], scheme, ax=None):
    """Grouped bars of each keypoint's mean normalised error (%) for ``{label: evaluate result}``."""
    ax = ax or plt.subplots(figsize=(16, 3.8))[1]
    k, width = get_scheme(scheme).num_keypoints, 0.8 / max(len(results), 1)
    for i, (label, r) in enumerate(results.items()):
        ax.bar(np.arange(k) + (i - (len(results) - 1) / 2) * width, 100 * r["per_keypoint"], width, label=label)
    ax.set(xlabel="keypoint (iBUG index)" if k == 68 else "keypoint", ylabel="mean error / normaliser (%)",
           xlim=(-1, k), xticks=np.arange(0, k, 1 if k <= 20 else 2))
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=8)
    return ax


def _face_rows(rows, faces: Faces, n: int, cell: float):
    """A row of up to ``n`` faces per ``(label, result, indices)``: truth in side colours, prediction green crosses."""
    fig, axes = plt.subplots(len(rows), n, figsize=(cell * n, cell * len(rows) + 0.3), squeeze=False)
    with warnings.catch_warnings():          # matplotlib: edge colour of the unfilled 'x' markers
        warnings.simplefilter("ignore", UserWarning)
        for (label, r, idx), row in zip(rows, axes):
            for ax, i in zip_longest(row, list(idx)[:n]):
                if i is not None:
                    show_keypoints(ax, faces.images[i], faces.keypoints[i], faces.scheme, size=6)
                    show_keypoints(ax, None, r["pred"][i], size=8, predicted=True)
                    ax.set_title(f"NME {100 * r['per_face'][i]:.1f} %", fontsize=8)
                    h, w = faces.images[i].shape[:2]
                    ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5))      # points outside the crop are cut off
                ax.set_axis_off()
            if label:
                row[0].text(-0.08, 0.5, label, transform=row[0].transAxes, ha="right", va="center", fontsize=9)
    return fig


def plot_examples(result: dict, faces: Faces, which: str = "worst", n: int = 6, cell: float = 2.4):
    """Truth and prediction on the ``best`` or ``worst`` faces of an evaluation, or the ``first`` ``n``."""
    if which not in ("best", "worst", "first"):
        raise ValueError("which must be 'best', 'worst' or 'first'")
    idx = np.flatnonzero(np.isfinite(result["per_face"])) if which == "first" else result[which]
    return _face_rows([(None, result, idx)], faces, n, cell)


def plot_best_worst(results: dict[str, dict], faces: Faces, n: int = 6, cell: float = 2.1):
    """A row of best and a row of worst faces per model of ``{label: evaluate result}`` (all on ``faces``)."""
    return _face_rows([(f"{label}\n{which}", r, r[which]) for label, r in results.items()
                       for which in ("best", "worst")], faces, n, cell)
