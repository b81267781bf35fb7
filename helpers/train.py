"""The one training function of the project (chapters 04 and 05) and its command line.

:func:`train_model` trains ``lenet`` or ``resnet50`` with

* Adam and a **cosine learning-rate decay** that follows whichever runs out first, the planned epochs or the
  time budget (so a run stopped by its deadline has still annealed its learning rate);
* on-the-fly augmentation of the training split (:func:`helpers.augment.make_sequences`);
* callbacks: ``ModelCheckpoint`` (the best ``.keras`` by validation NME), ``EarlyStopping`` (patience from the
  profile, best weights restored), ``BackupAndRestore`` (a killed run resumes from its last finished epoch),
  ``CSVLogger`` (appending across resumes) and a time limit that stops after the epoch that would overrun;
* seeds via ``keras.utils.set_random_seed``; batch size, epochs and patience from the profile.

Everything a run writes lives in ``models/runs/<name>/`` (git-ignored): ``best.keras``, ``backup/``,
``log.csv``, ``state.json`` and ``train.log`` when started from the command line::

    python -m helpers.train --model resnet50 --profile full --deadline 02:35
    python -m helpers.train --model lenet --profile full

Run the same command again after an interruption: it continues from the backup.
:func:`publish` copies a run's best model to ``models/<name>.keras`` only if it beats the committed one on
validation, together with its training history (``models/<name>_history.csv``).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from . import config
from .augment import AugmentParams
from .models import (MODEL_NAMES, MaskedLoss, build_model, compile_model, count_params, freeze_batchnorm, save_model,
                     widen_lenet)
from .preprocess import Faces

__all__ = ["load_training_data", "train_model", "summarise_run", "TrainResult", "publish", "export_model",
           "read_history", "get_or_train", "ModelRecord", "plot_history", "runs_table", "describe_augment",
           "model_card", "write_model_cards", "TRAIN_SPECS", "VAL_SPEC", "TRAIN_AUGMENT", "parse_augment",
           "augment_changes", "parse_repeats"]

TRAIN_SPECS = ("youtube-faces-68", "300w/helen-train")   # training splits of these (never AFW, never test)
VAL_SPEC = "youtube-faces-68"                           # its identity-disjoint validation split
# The training setting: chapter 03's augmentation without its horizontal flip. The annotations of both data sets
# sit a fraction of a pixel to the right of their mirror-symmetric position; a network trained on 50 % flipped
# faces cannot learn that offset and carries it as a bias (measured with helpers.evaluate.mirror_bias, chapter 04).
TRAIN_AUGMENT = AugmentParams(flip_p=0.0)


def concat_faces(parts: list[Faces], source: str) -> Faces:
    """Concatenate Faces of the same scheme."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("no faces to concatenate")
    k = {p.scheme.num_keypoints for p in parts}
    if len(k) != 1:
        raise ValueError(f"cannot mix keypoint schemes {k}")
    return Faces(np.concatenate([p.images for p in parts]), np.concatenate([p.keypoints for p in parts]),
                 np.concatenate([p.names.astype(str) for p in parts]),
                 np.concatenate([p.identities.astype(str) for p in parts]),
                 np.concatenate([p.crops for p in parts]), parts[0].scheme, source)


def load_training_data(profile=None, train_specs=TRAIN_SPECS, val_spec: str = VAL_SPEC,
                       progress: bool = False, repeats: dict[str, int] | None = None) -> tuple[Faces, Faces]:
    """(training faces, validation faces): the ``train`` splits of ``train_specs`` and ``val_spec``'s ``val``.

    ``repeats`` oversamples: ``{"300w/helen-train": 3}`` puts each HELEN training face into the training set three
    times (on-the-fly augmentation makes every copy a different sample). The training source then reads
    ``300w/helen-train:train*3``.
    """
    from .splits import load_faces

    repeats = dict(repeats or {})
    unknown = sorted(set(repeats) - set(train_specs))
    if unknown:
        raise ValueError(f"repeats name data sets that are not trained on: {unknown} (training: {list(train_specs)})")
    bad = {s: k for s, k in repeats.items() if not isinstance(k, int) or isinstance(k, bool) or k < 1}
    if bad:
        raise ValueError(f"repeats must be whole numbers >= 1, got {bad}")
    profile = profile or config.get_profile()
    parts, labels = [], []
    for spec in train_specs:
        k = repeats.get(spec, 1)
        parts += [load_faces(spec, "train", max_faces=profile.max_faces, progress=progress)] * k
        labels.append(f"{spec}:train" + (f"*{k}" if k > 1 else ""))
    train = concat_faces(parts, "+".join(labels))
    val = load_faces(val_spec, "val", max_faces=profile.max_faces, progress=progress)
    return train, val


# ----------------------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------------------
class CosineTimeSchedule(keras.callbacks.Callback):
    """Cosine decay from ``lr`` to ``lr · final_fraction``; progress is the larger of epoch / epochs and the
    elapsed fraction of the time budget (from ``state["started"]`` to ``state["deadline"]``)."""

    def __init__(self, lr: float, epochs: int, state: dict, final_fraction: float = 0.02, warmup_epochs: int = 1):
        super().__init__()
        self.lr, self.epochs, self.state = lr, epochs, state
        self.final_fraction, self.warmup_epochs = final_fraction, warmup_epochs

    def rate(self, epoch: int) -> float:
        progress = epoch / max(self.epochs, 1)
        if self.state.get("deadline"):
            span = self.state["deadline"] - self.state["started"]
            progress = max(progress, (time.time() - self.state["started"]) / max(span, 1.0))
        progress = min(progress, 1.0)
        lr = self.lr * (self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
        if epoch < self.warmup_epochs:
            lr *= (epoch + 1) / (self.warmup_epochs + 1)
        return float(lr)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(epoch))


class EpochInfo(keras.callbacks.Callback):
    """Adds ``lr`` and ``seconds`` to each epoch's logs (so CSVLogger records them) and prints a line."""

    def __init__(self, printer=None):
        super().__init__()
        self.printer = printer

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["seconds"] = round(time.time() - self._t0, 1)
        if self.printer:
            self.printer(f"{datetime.now(timezone.utc):%H:%M:%S} epoch {epoch + 1}: "
                         + " ".join(f"{k}={v:.4g}" for k, v in logs.items()))


class TimeLimit(keras.callbacks.Callback):
    """Stops training after an epoch when the next one would end after ``deadline`` (a UNIX time)."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.deadline is None:
            return
        took = time.time() - self._t0
        if time.time() + took > self.deadline:
            self.stopped = True
            self.model.stop_training = True


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model: keras.Model          # the best model (by validation NME)
    history: pd.DataFrame       # one row per epoch (all sessions of a resumed run)
    run_dir: Path
    seconds: float              # training time of all sessions (sum of epoch times)
    epochs: int                 # epochs completed
    best_epoch: int
    best_val_nme: float
    stopped_by: str             # "epochs", "early_stopping" or "time_limit"


def read_history(path) -> pd.DataFrame:
    """A run's ``log.csv`` (duplicate epochs from an interrupted session: the last one wins)."""
    df = pd.read_csv(path)
    return df.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def _records_of(model_file: Path) -> tuple[Path, Path]:
    """(history CSV, summary JSON) stored with a model file: a run's ``log.csv``/``summary.json`` for its
    ``best.keras``, ``<name>_history.csv``/``<name>_summary.json`` for a committed ``models/<name>.keras``."""
    model_file = Path(model_file)
    if model_file.name == "best.keras":
        return model_file.parent / "log.csv", model_file.parent / "summary.json"
    return (model_file.with_name(model_file.stem + "_history.csv"),
            model_file.with_name(model_file.stem + "_summary.json"))


def _project_relative(path) -> str | None:
    """``path`` relative to the project root when it lies inside it (what summaries store), else as it is."""
    if not path:
        return None
    p = Path(path)
    try:
        return p.resolve().relative_to(config.ROOT.resolve()).as_posix()
    except ValueError:
        return str(path)


def lineage(run_dir) -> tuple[pd.DataFrame, dict]:
    """A run's whole history and summary, including the runs it was warm-started from (``init_from``).

    Only the parent's epochs up to its best one count (the weights the child started from); the child's epochs
    follow them, numbered on. In the returned summary ``epochs_run``, ``best_epoch`` and ``train_seconds`` count
    the whole lineage; ``lineage`` lists each run's own numbers. A run that started from a committed model and was
    then published over it returns the published record.
    """
    run_dir = Path(run_dir)
    history = read_history(run_dir / "log.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    parts = [(history, summary)]
    parent = summary.get("init_from")
    while parent:
        log, summ = _records_of(parent if Path(parent).is_absolute() else config.ROOT / parent)
        if not (log.exists() and summ.exists()):
            break
        ps = json.loads(summ.read_text())
        ph = read_history(log)
        if "lineage" in ps and summary.get("finished") and ps.get("finished") == summary["finished"]:
            return ph, ps               # the run was published over its own start: that record is already whole
        if "lineage" in ps:             # a published history is already the whole lineage
            parts.append((ph.iloc[:ps["best_epoch"]], ps))
            break
        parts.append((ph.iloc[:ps["best_epoch"]], ps))
        parent = ps.get("init_from")
    frames, offset = [], 0
    for h, _ in reversed(parts):
        h = h.copy()
        h["epoch"] = h["epoch"] - h["epoch"].min() + offset
        offset += len(h)
        frames.append(h)
    whole = pd.concat(frames, ignore_index=True)
    out = dict(summary)
    keys = ("epochs_run", "best_epoch", "train_seconds", "stopped_by", "model_kwargs", "loss", "learning_rate",
            "augment", "init_from", "ema", "freeze_bn", "finished")
    out["lineage"] = [entry for _, s in reversed(parts)
                      for entry in (s["lineage"] if "lineage" in s else [{k: s.get(k) for k in keys}])]
    for entry in [out] + out["lineage"]:
        entry["init_from"] = _project_relative(entry.get("init_from"))
    out["epochs_run"] = int(len(whole))
    out["best_epoch"] = int(len(whole) - len(history) + summary["best_epoch"])
    out["train_seconds"] = float(whole["seconds"].sum())
    return whole, out


def augment_changes(params=None) -> dict:
    """The fields of ``params`` (:class:`helpers.augment.AugmentParams`) that differ from ``AugmentParams()``,
    chapter 03's defaults."""
    from dataclasses import asdict

    if params is None:
        return {}
    default = asdict(AugmentParams())
    return {k: v for k, v in asdict(params).items() if default[k] != v}


def train_model(model_name: str, train_faces: Faces, val_faces: Faces, profile=None, run_dir=None,
                epochs: int | None = None, learning_rate: float = 1e-3, loss: str = "mae", augment: bool = True,
                seed: int = config.DEFAULT_SEED, max_minutes: float | None = None, deadline: float | None = None,
                resume: bool = True, verbose: int | str = "auto", log=None, steps_per_execution: int = 1,
                workers: int = 1, model_kwargs: dict | None = None, init_from=None,
                patience: int | None = None, augment_params=None, ema: float | None = None,
                freeze_bn: bool = False) -> TrainResult:
    """Train ``lenet`` or ``resnet50`` on ``train_faces`` (augmented on the fly), selecting on ``val_faces``.

    Args:
        model_name: ``"lenet"`` or ``"resnet50"``.
        train_faces, val_faces: :class:`helpers.preprocess.Faces` of the same scheme.
        profile: sizes (default :func:`helpers.config.get_profile`); ``epochs`` overrides its epoch count.
        run_dir: where checkpoints, backup and logs go (default ``models/runs/<model_name>``).
        learning_rate: Adam's initial rate, decayed by a cosine to 2 % of it.
        loss: ``"mae"`` (default), ``"mse"`` or ``"wing"``, masked (:class:`helpers.models.MaskedLoss`).
        max_minutes / deadline: stop gracefully after the epoch that would overrun this many minutes from the
            run's first start / this UNIX time (whichever is earlier). The best checkpoint is kept.
        resume: continue from ``run_dir/backup`` if it exists; ``False`` starts afresh (deleting the run).
        log: a function taking one string per epoch (the CLI writes to ``train.log``).
        model_kwargs: passed to the architecture (e.g. ``{"dropout": 0.1}``). For ``lenet`` with ``filters``
            wider than those of ``init_from``, the start is widened function-preservingly
            (:func:`helpers.models.widen_lenet`).
        init_from: a ``.keras`` file of the same architecture whose weights start a new run (a warm start,
            e.g. continuing the committed model with a fresh learning-rate schedule); ignored when resuming.
        patience: EarlyStopping's patience in epochs (default: the profile's).
        augment_params: :class:`helpers.augment.AugmentParams` (default: :data:`TRAIN_AUGMENT`, the project's
            training setting); the fields that differ from ``AugmentParams()`` are recorded in the run's summary.
        ema: momentum of an exponential moving average of the weights (e.g. 0.998, a horizon of about
            500 steps); validation, the best checkpoint and the returned model then use the averaged weights,
            while training (and the backup) go on from the raw ones. ``None`` (default): no averaging. Caveat:
            Keras averages the trainable weights only; batch normalisation keeps the statistics of the raw
            weights. On the committed ResNet-50 that mismatch cost more than the averaging gained (validation
            NME 7.27 % with EMA against 5.41 % raw after three epochs; ``models/ablations/resnet50_ema_*``).
        freeze_bn: run batch normalisation in inference mode with its statistics fixed
            (:func:`helpers.models.freeze_batchnorm`), for fine-tuning a trained model (``init_from``): training
            then optimises the network that validation and inference use. The saved model is unfrozen again
            when published (:func:`export_model`).
    """
    from .augment import make_sequences

    augment_params = TRAIN_AUGMENT if augment_params is None else augment_params

    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; choose from {MODEL_NAMES}")
    if len(train_faces) == 0 or len(val_faces) == 0:
        raise ValueError("training and validation sets must not be empty")
    if train_faces.scheme.num_keypoints != val_faces.scheme.num_keypoints:
        raise ValueError("training and validation faces use different keypoint schemes")
    profile = profile or config.get_profile()
    epochs = int(epochs or (profile.lenet_epochs if model_name == "lenet" else profile.resnet_epochs))
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    run_dir = Path(run_dir or config.RUNS_DIR / model_name)
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    backup_dir, log_csv, best_path, state_path = (run_dir / "backup", run_dir / "log.csv", run_dir / "best.keras",
                                                  run_dir / "state.json")
    resuming = backup_dir.exists() and any(backup_dir.iterdir())
    if not resuming:
        for p in (log_csv, best_path, state_path):
            p.unlink(missing_ok=True)
    state = json.loads(state_path.read_text()) if resuming and state_path.exists() else {}
    if "started" not in state:
        state["started"] = time.time()
    limits = [d for d in (deadline, state["started"] + 60 * max_minutes if max_minutes else None) if d]
    state["deadline"] = min(limits) if limits else state.get("deadline")
    state.update(model=model_name, epochs=epochs, profile=profile.name, learning_rate=learning_rate, loss=loss,
                 augment=augment, seed=seed, train_faces=len(train_faces), val_faces=len(val_faces),
                 train_source=train_faces.source, val_source=val_faces.source,
                 batch_size=profile.batch_size, patience=patience or profile.patience,
                 model_kwargs=model_kwargs or {}, augment_changes=augment_changes(augment_params), ema=ema,
                 freeze_bn=freeze_bn)
    if init_from and not resuming:
        state["init_from"] = _project_relative(init_from)
    state_path.write_text(json.dumps(state, indent=2))

    keras.utils.set_random_seed(seed)
    scheme = train_faces.scheme
    train_seq, val_seq = make_sequences(train_faces, val_faces, batch_size=profile.batch_size, augment=augment,
                                        seed=seed, params=augment_params, workers=workers)
    if resuming:    # go on with the augmentation of the epochs to come, not that of the run's first epochs
        train_seq.epoch = len(read_history(log_csv))
    model = build_model(model_name, scheme, **(model_kwargs or {}))
    if init_from and not resuming:
        from .models import load_model
        start = load_model(init_from)
        if model_name == "lenet" and "filters" in (model_kwargs or {}):
            start = widen_lenet(start, model_kwargs["filters"], seed=seed)      # no-op widths: a plain copy
        if [tuple(w.shape) for w in start.weights] != [tuple(w.shape) for w in model.weights]:
            raise ValueError(f"{init_from} is not a {model_name} of this architecture and scheme")
        model.set_weights([np.asarray(w, dtype="float32") for w in start.get_weights()])
    freeze_batchnorm(model, freeze_bn)
    compile_model(model, scheme, learning_rate=learning_rate, loss=loss, steps_per_execution=steps_per_execution,
                  ema=ema)

    time_limit = TimeLimit(state["deadline"])
    early = keras.callbacks.EarlyStopping(monitor="val_nme", mode="min", patience=state["patience"],
                                          restore_best_weights=True, verbose=0)
    callbacks = [
        CosineTimeSchedule(learning_rate, epochs, state),
        EpochInfo(log),
        keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False),   # raw weights: resume these
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []),        # what follows sees the EMA
        keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_nme", mode="min", save_best_only=True),
        early,
        keras.callbacks.CSVLogger(str(log_csv), append=True),
        time_limit,
    ]
    model.fit(train_seq, validation_data=val_seq, epochs=epochs, callbacks=callbacks, verbose=verbose)

    if time_limit.stopped:
        stopped_by = "time_limit"
    elif len(read_history(log_csv)) < epochs:
        stopped_by = "early_stopping"
    else:
        stopped_by = "epochs"
    return summarise_run(run_dir, stopped_by, model)


def summarise_run(run_dir, stopped_by: str = "interrupted", model: keras.Model | None = None) -> TrainResult:
    """Write ``run_dir/summary.json`` from the run's ``state.json``, ``log.csv`` and best checkpoint, and return
    its :class:`TrainResult`. :func:`train_model` calls it at the end; call it yourself for a run that was
    stopped for good before it finished (``stopped_by="interrupted"``), so that it can be published or
    warm-started from with its record."""
    run_dir = Path(run_dir)
    state = json.loads((run_dir / "state.json").read_text())
    history = read_history(run_dir / "log.csv")
    if history.empty:
        raise ValueError(f"{run_dir} has no finished epoch to summarise")
    best_path = run_dir / "best.keras"
    best = keras.models.load_model(best_path, safe_mode=True) if best_path.exists() else model
    if best is None:
        raise FileNotFoundError(f"{run_dir} has no best.keras")
    best_row = history.loc[history["val_nme"].idxmin()]
    result = TrainResult(best, history, run_dir, float(history["seconds"].sum()), int(len(history)),
                         int(best_row["epoch"]) + 1, float(best_row["val_nme"]), stopped_by)
    summary = {"model": state["model"], "profile": state["profile"], "epochs_planned": state["epochs"],
               "epochs_run": result.epochs, "best_epoch": result.best_epoch, "best_val_nme": result.best_val_nme,
               "train_seconds": result.seconds, "stopped_by": stopped_by, "params": count_params(best),
               "train_faces": state["train_faces"], "val_faces": state["val_faces"],
               "train_source": state["train_source"], "model_kwargs": state.get("model_kwargs") or {},
               "loss": state.get("loss"), "learning_rate": state.get("learning_rate"),
               "augment": state.get("augment_changes", {}) if state.get("augment", True) else "off",
               "init_from": state.get("init_from"), **({"ema": state["ema"]} if state.get("ema") else {}),
               **({"freeze_bn": True} if state.get("freeze_bn") else {}),
               "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return result


# ----------------------------------------------------------------------------------------------------------
# Publishing a trained model
# ----------------------------------------------------------------------------------------------------------
def export_model(model: keras.Model, path, half_precision: bool | None = None) -> Path:
    """Save ``model`` without optimizer state (a fresh compile); half precision if the file would be ≥ 95 MB."""
    fresh = keras.models.clone_model(model)
    freeze_batchnorm(fresh, False)           # a run with freeze_bn: the published model trains as usual
    fresh.set_weights(model.get_weights())
    k = int(fresh.output_shape[-1]) // 2
    compile_model(fresh, "68" if k == 68 else "15")
    if half_precision is None:
        n_bytes = sum(int(np.prod(w.shape)) * 4 for w in fresh.weights)
        half_precision = n_bytes > 90e6
    return save_model(fresh, path, half_precision=half_precision)


def publish(model_name: str, run_dir=None, val_faces: Faces | None = None, force: bool = False,
            int8: bool = True) -> dict:
    """Copy ``run_dir/best.keras`` to ``models/<name>.keras`` if it beats the committed model on validation.

    Also writes the run's history to ``models/<name>_history.csv`` and its summary to ``<name>_summary.json``,
    both including the runs it was warm-started from (:func:`lineage`), and, with ``int8``, the quantized
    export ``models/<name>.int8.onnx`` (:func:`helpers.export.export_int8`). Returns what was compared and
    decided.
    """
    from .evaluate import evaluate_model
    from .models import load_model, model_path

    run_dir = Path(run_dir or config.RUNS_DIR / model_name)
    candidate = run_dir / "best.keras"
    if not candidate.exists():
        raise FileNotFoundError(f"no checkpoint at {candidate}")
    if val_faces is None:
        _, val_faces = load_training_data(config.get_profile("full"))
    new = evaluate_model(load_model(candidate), val_faces, timing=False)
    target = model_path(model_name)
    old = evaluate_model(load_model(target), val_faces, timing=False) if target.exists() else None
    better = force or old is None or new["nme"] < old["nme"]
    out = {"candidate_val_nme": new["nme"], "committed_val_nme": old["nme"] if old else None, "published": better}
    if better:
        tmp = target.with_suffix(".tmp.keras")
        export_model(load_model(candidate), tmp)
        exported = evaluate_model(load_model(tmp), val_faces, timing=False)
        tmp.replace(target)
        out["exported_val_nme"] = exported["nme"]
        if (run_dir / "log.csv").exists() and (run_dir / "summary.json").exists():
            history, summary = lineage(run_dir)
            history.to_csv(config.MODELS_DIR / f"{model_name}_history.csv", index=False)
            (config.MODELS_DIR / f"{model_name}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if int8:
            from .export import export_int8

            out["int8_path"] = str(export_int8(target))
            out["int8_val_nme"] = evaluate_model(target, val_faces, timing=False, runtime="int8")["nme"]
    return out


def _parse_deadline(text: str | None) -> float | None:
    """``HH:MM`` (UTC, today or tomorrow) or an ISO time → UNIX time."""
    if not text:
        return None
    now = datetime.now(timezone.utc)
    try:
        if len(text) <= 5 and ":" in text:
            h, m = (int(v) for v in text.split(":"))
            t = now.replace(hour=h, minute=m, second=0, microsecond=0)
            if t < now:
                t = t.replace(day=now.day) + pd.Timedelta(days=1)
            return t.timestamp()
        t = datetime.fromisoformat(text)
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    except ValueError as e:
        raise ValueError(f"--deadline must be HH:MM (UTC) or an ISO date-time, got {text!r}") from e


CARD_START = "<!-- model cards: generated by `python -m helpers.train --cards` -->"
CARD_END = "<!-- end of model cards -->"
CARD_SPLITS = {"YouTube-Faces validation": ("youtube-faces-68", "val"),
               "YouTube-Faces test": ("youtube-faces-68", "test"), "AFW (300-W)": ("300w/afw", "test")}


def model_card(model_name: str, repeats: int = 50) -> tuple[str, dict]:
    """(markdown, metrics) describing ``models/<name>.keras``: file, training run, accuracy on validation, test
    and AFW (float32 and, when exported, int8) and speed under each runtime — every number measured now by
    :mod:`helpers.evaluate` from the committed files and the run summary stored with them."""
    import os

    from . import evaluate, export, predict
    from .data import sha256sum
    from .models import load_model, model_path

    path = model_path(model_name)
    model = load_model(path, compile=False)
    summary_path = config.MODELS_DIR / f"{model_name}_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    int8 = export.int8_for(path)
    runtimes = {"keras": predict.KeypointModel(model, model_name, runtime="keras")}
    runtimes["onnx"] = predict.KeypointModel(model, model_name, runtime="onnx")
    if int8:
        runtimes["int8"] = predict.KeypointModel(model, model_name, runtime="int8", int8=int8)
    metrics = {"file": path.name, "sha256": sha256sum(path), "file_mb": path.stat().st_size / 1e6,
               "params": count_params(model), "summary": summary, "splits": {}, "speed": {}}
    if int8:
        metrics.update(int8_file=int8.name, int8_sha256=sha256sum(int8), int8_mb=int8.stat().st_size / 1e6)
    for label, (spec, split) in CARD_SPLITS.items():
        faces = evaluate.load_eval_faces(spec, split)
        row = evaluate.report_json(evaluate.evaluate_model(runtimes["keras"], faces, timing=False))
        row["people"] = faces.num_people
        if int8:
            row["int8_nme"] = evaluate.report_json(evaluate.evaluate_model(runtimes["int8"], faces,
                                                                           timing=False))["nme"]
        metrics["splits"][label] = row
    for runtime, km in runtimes.items():
        metrics["speed"][runtime] = evaluate.measure_speed(km, repeats=repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    metrics["speed_machine"] = f"{os.cpu_count()} CPUs, load average {load:.1f} at the start"

    s = summary
    lines = [f"### `{path.name}` — {'LeNet-inspired CNN' if model_name == 'lenet' else 'ResNet-50'} "
             f"(`helpers.models.{model_name}`)", "",
             f"- sha256 `{metrics['sha256']}`, {metrics['file_mb']:.1f} MB, {metrics['params']['total'] / 1e6:.2f} M "
             "parameters"]
    if int8:
        lines.append(f"- int8 export `{int8.name}` (`helpers.export.export_int8`), {metrics['int8_mb']:.1f} MB, "
                     f"sha256 `{metrics['int8_sha256']}`")
    if s:
        runs = s.get("lineage") or []
        init = (f"; {len(runs)} runs, each warm-started from the best epoch of the one before: "
                + ", ".join(f"{r['epochs_run']} epochs ({r['train_seconds'] / 60:.0f} min, "
                            + (f"{r['loss']} loss at lr {r['learning_rate']:g}, " if r.get("loss") else "")
                            + (f"augmentation: {describe_augment(r.get('augment'))}, " if "augment" in r else "")
                            + ("batch normalisation frozen, " if r.get("freeze_bn") else "")
                            + f"model arguments {r.get('model_kwargs') or 'default'})" for r in runs)
                ) if len(runs) > 1 else ""
        lines.append(f"- training: profile `{s.get('profile')}`, {s.get('epochs_run')} epochs (the last run planned "
                     f"{s.get('epochs_planned')}), stopped by {s.get('stopped_by')}; best epoch "
                     f"{s.get('best_epoch')}; {s.get('train_seconds', 0) / 60:.1f} min of training (sum of epoch "
                     f"times){init}; model arguments {s.get('model_kwargs') or 'default'}; "
                     f"finished {s.get('finished')}")
        lines.append(f"- data: {s.get('train_faces')} training faces ({s.get('train_source')}); validation "
                     f"{s.get('val_faces')} faces")
    lines += ["", "| split | faces | people | NME % | NME % int8 | RMSE px (96²) | AUC@0.08 % | failure >0.08 % "
              "| failure >0.10 % |", "|---|---|---|---|---|---|---|---|---|"]
    for label, r in metrics["splits"].items():
        q = f"{r['int8_nme']:.2f}" if "int8_nme" in r else "—"
        lines.append(f"| {label} | {r['faces']} | {r['people']} | {r['nme']:.2f} | {q} | {r['rmse_px96']:.2f} | "
                     f"{r['auc08']:.2f} | {r['fail08']:.2f} | {r['fail10']:.2f} |")
    speed = "; ".join(f"{rt} {v['latency_ms']:.2f} ms for one face, {v['throughput_ips']:.0f} faces/s in batches "
                      f"of {v['batch_size']}" for rt, v in metrics["speed"].items())
    lines += ["", f"Speed ({metrics['speed_machine']}): {speed}.", ""]
    return "\n".join(lines), metrics


def write_model_cards(names=MODEL_NAMES, readme=None, repeats: int = 50) -> Path:
    """Regenerate the model cards in ``models/README.md`` (between its markers) and ``models/<name>_metrics.json``
    for every committed model in ``names``."""
    readme = Path(readme or config.MODELS_DIR / "README.md")
    text = readme.read_text()
    if CARD_START not in text or CARD_END not in text:
        raise ValueError(f"{readme} lacks the model-card markers {CARD_START!r} … {CARD_END!r}")
    from .models import model_path

    rows, cards = [], []
    for name in names:
        if not model_path(name).exists():
            continue
        card, metrics = model_card(name, repeats=repeats)
        (config.MODELS_DIR / f"{name}_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        s, sp = metrics["summary"], metrics["splits"]
        rows.append(f"| `{metrics['file']}` | {metrics['params']['total'] / 1e6:.2f} M | {s.get('epochs_run')} "
                    f"({s.get('stopped_by')}) | {s.get('train_seconds', 0) / 60:.0f} min | "
                    + " | ".join(f"{sp[k]['nme']:.2f}" for k in CARD_SPLITS)
                    + f" | {metrics['file_mb']:.1f} MB |")
        cards.append(card)
    table = ["| file | parameters | epochs run | training time | val NME % | test NME % | AFW NME % | size |",
             "|---|---|---|---|---|---|---|---|", *rows]
    body = "\n".join([CARD_START, "", *table, "", *cards, CARD_END])
    head, rest = text.split(CARD_START, 1)
    readme.write_text(head + body + rest.split(CARD_END, 1)[1])
    return readme


def _init_path(model_name: str, init: str | None):
    if not init:
        return None
    from .models import model_path
    path = model_path(model_name) if init == "committed" else Path(init)
    if not path.exists():
        raise FileNotFoundError(f"--init: no model at {path}")
    return path


def _model_kwargs(args) -> dict | None:
    kwargs = {"dropout": args.dropout, "filters": args.filters and tuple(args.filters)}
    return {k: v for k, v in kwargs.items() if v is not None} or None


def parse_repeats(items, error=None) -> dict[str, int]:
    """``["300w/helen-train=3"]`` → ``{"300w/helen-train": 3}``; a malformed item calls ``error`` (or raises)."""
    out = {}
    for item in items or ():
        spec, sep, text = item.rpartition("=")
        if not sep or not spec.strip() or not text.strip().isdigit():
            message = f"--repeat {item!r}: expected SPEC=K with K a whole number, e.g. 300w/helen-train=3"
            if error is None:
                raise ValueError(message)
            error(message)
        out[spec.strip()] = int(text)
    return out


def parse_augment(items, error=None):
    """:data:`TRAIN_AUGMENT` with the changes ``["rotation_deg=10", "scale=(0.95, 1.05)", ...]`` (None: unchanged).

    Values are Python literals; an unknown field or a bad value calls ``error`` (or raises ``ValueError``)."""
    import ast
    from dataclasses import fields, replace

    if not items:
        return None
    known = {f.name for f in fields(AugmentParams)}
    changes = {}
    try:
        for item in items:
            key, sep, text = item.partition("=")
            if not sep or key.strip() not in known:
                raise ValueError(f"--augment {item!r}: expected FIELD=VALUE with FIELD one of {sorted(known)}")
            try:
                value = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                value = text.strip()                 # a bare word, e.g. border=reflect
            changes[key.strip()] = tuple(value) if isinstance(value, list) else value
        return replace(TRAIN_AUGMENT, **changes)
    except (ValueError, TypeError) as exc:
        if error is None:
            raise ValueError(str(exc)) from exc
        error(str(exc))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODEL_NAMES)
    parser.add_argument("--cards", action="store_true", help="instead of training: measure the committed models "
                        "and regenerate models/README.md's model cards and models/<name>_metrics.json")
    parser.add_argument("--profile", default=None, help="smoke | quick | full (default: $FKP_PROFILE)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--loss", default="mae", choices=MaskedLoss.KINDS)
    parser.add_argument("--no-helen", action="store_true", help="train on YouTube-Faces only")
    parser.add_argument("--repeat", nargs="+", default=None, metavar="SPEC=K",
                        help="oversample a training data set K times, e.g. --repeat 300w/helen-train=3")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--augment", nargs="+", default=None, metavar="FIELD=VALUE",
                        help="change fields of the training augmentation (helpers.train.TRAIN_AUGMENT), e.g. "
                        "--augment flip_p=0.5 rotation_deg=10 'scale=(0.95, 1.05)'")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: stop after the epoch that would overrun it")
    parser.add_argument("--restart", action="store_true", help="discard the run's backup and start afresh")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--seed", type=int, default=config.DEFAULT_SEED)
    parser.add_argument("--patience", type=int, default=None, help="EarlyStopping patience in epochs "
                        "(default: the profile's)")
    parser.add_argument("--init", default=None, help="start from the weights of this .keras file (or 'committed' "
                        "for models/<model>.keras); ignored when resuming")
    parser.add_argument("--dropout", type=float, default=None, help="dropout before the output layer "
                        "(default: the architecture's)")
    parser.add_argument("--filters", type=int, nargs=4, default=None, metavar="N",
                        help="LeNet's four stage widths (default: the architecture's); with --init of a narrower "
                        "LeNet, its weights are widened function-preservingly (Net2Net)")
    parser.add_argument("--ema", type=float, default=None, metavar="MOMENTUM", help="validate and keep an "
                        "exponential moving average of the weights, e.g. 0.998 (default: none; batch-norm "
                        "statistics are not averaged, see train_model)")
    parser.add_argument("--freeze-bn", action="store_true", help="fine-tune with batch normalisation in "
                        "inference mode and its statistics fixed (use with --init)")
    args = parser.parse_args(argv)
    if args.cards:
        print(f"written: {write_model_cards()}")
        return 0
    if not args.model:
        parser.error("--model is required (or --cards)")
    if args.filters and args.model != "lenet":
        parser.error("--filters applies to --model lenet only")

    profile = config.get_profile(args.profile)
    run_dir = Path(args.run_dir or config.RUNS_DIR / args.model)
    if args.restart and run_dir.exists():
        shutil.rmtree(run_dir)               # before the log file is opened in it
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(run_dir / "train.log", "a", buffering=1)

    def log(msg):
        print(msg, file=log_file)
        print(msg, flush=True)

    specs = ("youtube-faces-68",) if args.no_helen else TRAIN_SPECS
    try:
        train_faces, val_faces = load_training_data(profile, specs, repeats=parse_repeats(args.repeat, parser.error))
    except ValueError as exc:                # e.g. --repeat of a data set left out by --no-helen
        parser.error(str(exc))
    log(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} start {args.model} profile={profile.name} "
        f"train={len(train_faces)} ({train_faces.source}) val={len(val_faces)} keras={keras.__version__} "
        f"backend={keras.backend.backend()}")
    result = train_model(args.model, train_faces, val_faces, profile, run_dir, epochs=args.epochs,
                         learning_rate=args.lr, loss=args.loss, augment=not args.no_augment, seed=args.seed,
                         max_minutes=args.max_minutes, deadline=_parse_deadline(args.deadline),
                         # resume: --restart already emptied run_dir (and the log is open in it)
                         resume=True, verbose=0, log=log,
                         model_kwargs=_model_kwargs(args),
                         init_from=_init_path(args.model, args.init), patience=args.patience,
                         augment_params=parse_augment(args.augment, parser.error), ema=args.ema,
                         freeze_bn=args.freeze_bn)
    log(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} done: {result.epochs} epochs, {result.seconds:.0f} s, "
        f"best epoch {result.best_epoch} val NME {100 * result.best_val_nme:.2f} %, stopped by {result.stopped_by}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# For the chapters: the committed model, or a training run
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ModelRecord:
    model: keras.Model
    history: pd.DataFrame | None     # one row per epoch (None if the model came without its log)
    summary: dict                    # what the run recorded (epochs, time, best validation NME, data)
    source: str                      # "committed" or "trained"
    path: Path

    def describe(self) -> str:
        """Where the model came from and what its training recorded, in two lines."""
        s = self.summary
        lines = [f"model: {self.source} ({_project_relative(self.path)})"]
        if s:
            runs = len(s.get("lineage") or [s])
            lines.append(f"profile {s.get('profile')}: {s.get('epochs_run')} epochs in {runs} "
                         f"run(s), stopped by {s.get('stopped_by')}, best epoch {s.get('best_epoch')}, training time "
                         f"{s.get('train_seconds', 0) / 60:.1f} min, best validation NME "
                         f"{100 * s.get('best_val_nme', float('nan')):.2f} %")
        return "\n".join(lines)


def get_or_train(model_name: str, profile=None, train: bool = False, train_faces: Faces | None = None,
                 val_faces: Faces | None = None, log=print) -> ModelRecord:
    """The committed ``models/<name>.keras`` with its history, or — if ``train`` or none is committed — a
    training run on the profile's data (``full``: ``models/runs/<name>``, resumable; other profiles:
    ``models/runs/<name>-<profile>``). A training run never overwrites the committed model (see
    :func:`publish`)."""
    from .models import load_model, model_path

    profile = profile or config.get_profile()
    committed = model_path(model_name)
    if committed.exists() and not train:
        hist_path = config.MODELS_DIR / f"{model_name}_history.csv"
        summ_path = config.MODELS_DIR / f"{model_name}_summary.json"
        history = read_history(hist_path) if hist_path.exists() else None
        summary = json.loads(summ_path.read_text()) if summ_path.exists() else {}
        return ModelRecord(load_model(committed), history, summary, "committed", committed)
    if train_faces is None or val_faces is None:
        train_faces, val_faces = load_training_data(profile)
    run_dir = config.RUNS_DIR / (model_name if profile.name == "full" else f"{model_name}-{profile.name}")
    if log:
        log(f"training {model_name} ({profile.name} profile) in {run_dir.relative_to(config.ROOT)}")
    result = train_model(model_name, train_faces, val_faces, profile, run_dir, verbose=0,
                         resume=profile.name == "full")
    summary = json.loads((run_dir / "summary.json").read_text())
    return ModelRecord(result.model, result.history, summary, "trained", run_dir / "best.keras")


def describe_augment(changes) -> str:
    """A run's recorded augmentation (changes to chapter 03's defaults) as one short line."""
    if changes is None:
        return "not recorded"
    if changes == "off" or not isinstance(changes, dict):
        return str(changes)
    if not changes:
        return "chapter 03 defaults (with flips)"

    def value(v):
        if isinstance(v, (list, tuple)):
            return "(" + ", ".join(value(x) for x in v) + ")"
        return f"{v:g}" if isinstance(v, (int, float)) else str(v)

    return ", ".join(f"{k}={value(v)}" for k, v in changes.items())


def runs_table(summary: dict) -> pd.DataFrame:
    """One row per run of a model's lineage (``summary["lineage"]``, see :func:`lineage`): epochs, best epoch,
    minutes, what stopped it, loss, learning rate, augmentation (changes to chapter 03's defaults), whether batch
    normalisation was frozen (``freeze_bn``) and what it started from."""
    runs = summary.get("lineage") or [summary]
    rows = [{"epochs": r.get("epochs_run"), "best epoch": r.get("best_epoch"),
             "minutes": round((r.get("train_seconds") or 0) / 60, 1), "stopped by": r.get("stopped_by"),
             "loss": r.get("loss") or "not recorded", "learning rate": r.get("learning_rate") or "not recorded",
             "augmentation": describe_augment(r.get("augment")),
             "batch norm": "frozen" if r.get("freeze_bn") else "trained",
             "started from": r.get("init_from") or "random weights"} for r in runs]
    return pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1, name="run"))


def plot_history(history: pd.DataFrame, title: str = ""):
    """Training curves: masked loss, NME (%) and RMSE (px) of training and validation, and the learning rate.

    Training values are averaged over each epoch's augmented batches (dropout on); validation values are
    measured at the epoch's end on unaugmented faces. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if history is None or len(history) == 0:
        raise ValueError("no training history to plot")
    ep = history["epoch"] + 1
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for ax, key, label, scale in ((axes[0], "loss", "masked loss", 1), (axes[1], "nme", "NME (%)", 100),
                                  (axes[2], "rmse_px", "RMSE (px at 96²)", 1)):
        ax.plot(ep, history[key] * scale, label="training (augmented)")
        ax.plot(ep, history[f"val_{key}"] * scale, label="validation")
        ax.set(xlabel="epoch", ylabel=label, yscale="log" if key == "loss" else "linear")
        if key != "loss":
            top = float(np.nanpercentile(np.r_[history[key], history[f"val_{key}"]] * scale, 90))
            ax.set_ylim(0, max(top, 1e-6) * 1.1)
        ax.legend()
    best = int(history["val_nme"].idxmin())
    axes[1].axvline(ep[best], color="grey", ls="--", lw=0.8)
    axes[1].annotate(f"best {100 * history['val_nme'][best]:.2f} %", (ep[best], 100 * history["val_nme"][best]),
                     xytext=(5, 10), textcoords="offset points", fontsize=9)
    axes[3].plot(ep, history["lr"], color="black")
    axes[3].set(xlabel="epoch", ylabel="learning rate", yscale="log")
    fig.suptitle(title)
    return fig


if __name__ == "__main__":
    sys.exit(main())
