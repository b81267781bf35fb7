"""Training: a recipe (:mod:`helpers.recipes`) in, a run folder (:data:`helpers.models.FILES`, written atomically)
out. The backup holds weights, optimizer state and the run's state, and an epoch's batches depend on (seed, epoch)
only: a run killed at any moment and resumed (the same command again) ends as an uninterrupted one, weights and
summary alike."""
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from . import config, data, evaluate, recipes, splits
from .augment import Augmenter, KeypointSequence, to_model_inputs
from .models import FILES, build_model, compile_model, count_params, freeze_batchnorm, save_model
from .preprocess import Faces, denormalise_keypoints
from .schemes import get_scheme, to_15


def concat_faces(parts: list[Faces], source: str) -> Faces:
    """One :class:`Faces` from several of the same keypoint scheme."""
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError(f"no faces in {source}")
    cat = {k: np.concatenate([getattr(p, k) for p in parts]) for k in Faces.PER_FACE}
    return Faces(cat["images"], cat["keypoints"], cat["names"].astype(str), cat["identities"].astype(str),
                 cat["crops"], parts[0].scheme, source)


def _load(spec: str, split: str, recipe: dict, progress: bool) -> Faces:
    """A split of a data set for a scaled recipe, 68 points mapped to the thesis' 15 when the recipe asks for 15."""
    faces = splits.load_faces(spec, split, max_faces=recipe["meta"].get("max_faces"), progress=progress)
    k = recipe["model"]["keypoints"]
    if faces.scheme.num_keypoints == k:
        return faces
    if k != 15 or faces.scheme.num_keypoints != 68:
        raise ValueError(f"{faces.source} has {faces.scheme.num_keypoints} keypoints; the recipe wants {k}")
    return replace(faces, keypoints=to_15(faces.keypoints), scheme=get_scheme("15"))


def resolve_data(recipe: dict) -> dict:
    """The scaled recipe with ``[data]`` as this machine can run it: unchanged when every set is on disk (its hash
    stays the recipe's); else ``fallback_train`` for both parts if a ``train`` set is missing and it names one; else
    the sets on disk, with a warning (a clone with only YouTube-Faces runs chapters 01–07; ``meta["missing_data"]``)."""
    d, present = recipe["data"], set(data.available())
    if set(d["train"] + d["validation"]) <= present:
        return recipe
    specs = (d["train"], d["validation"]) if set(d["train"]) <= present or not d["fallback_train"] else \
        (d["fallback_train"], d["fallback_train"])
    use, missing = [[s for s in part if s in present] for part in specs], sorted(set(sum(specs, [])) - present)
    if not all(use):
        raise data.DatasetNotFoundError(f"{recipe['meta']['path']}: data set(s) {missing} not found under "
                                        f"{config.data_root()} (set FKP_DATA_DIR)")
    if missing:
        warnings.warn(f"{recipe['meta']['path']}: {', '.join(missing)} not found under {config.data_root()}: "
                      f"training on {', '.join(use[0])} and validating on {', '.join(use[1])} only", stacklevel=3)
    return {**recipe, "meta": {**recipe["meta"], "missing_data": missing},
            "data": {**d, "train": use[0], "validation": use[1], "fallback_train": [],
                     "repeat": {k: v for k, v in d["repeat"].items() if k in use[0]}}}


def training_data(recipe: dict, progress: bool = False) -> tuple[Faces, dict[str, Faces]]:
    """(training faces, {validation part: faces}) of a scaled recipe (:func:`resolve_data`), ``repeat`` applied."""
    recipe = resolve_data(recipe)
    d, parts, labels = recipe["data"], [], []
    for spec in d["train"]:
        times = d["repeat"].get(spec, 1)
        parts += [_load(spec, "train", recipe, progress)] * times
        labels.append(spec + (f"*{times}" if times > 1 else ""))
    val = {spec: _load(spec, "val", recipe, progress) for spec in d["validation"]}
    val = {s: f for s, f in val.items() if len(f)}
    if not val:
        raise ValueError(f"{recipe['meta']['path']}: no validation faces in {d['validation']}")
    return concat_faces(parts, "+".join(labels)), val


def save_backup(path: Path, model: keras.Model, state: dict) -> None:
    """Weights, optimizer variables and the run's state in one ``.npz``, atomically."""
    arrays = {f"w{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.weights)}
    arrays.update({f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
    config.write_npz(path, state=np.array(json.dumps(state)), **arrays)


def load_backup(path: Path, model: keras.Model | None = None) -> dict:
    """The run's state saved in a backup, after restoring ``model``'s weights and optimizer from it (if given)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            state = json.loads(str(z["state"]))
            if model is not None:
                model.optimizer.build(model.trainable_variables)
                model.set_weights([z[f"w{i}"] for i in range(len(model.weights))])
                for i, var in enumerate(model.optimizer.variables):
                    var.assign(z[f"o{i}"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:     # not a backup of this network
        raise recipes.RecipeError(f"{path} cannot be resumed ({e}); use another --out or --restart") from None
    return state


class RunKeeper(keras.callbacks.Callback):
    """After every epoch: validate (NME overall and per part), keep the best model, count for early stopping, back
    up. One callback in place of Keras' four, because their states must be saved together to resume exactly."""

    def __init__(self, run_dir: Path, state: dict, val: dict[str, Faces], train_seq: KeypointSequence, log):
        super().__init__()
        self.run_dir, self.state, self.train_seq, self.log, self.val_faces = run_dir, state, train_seq, log, val
        self.val = {spec: to_model_inputs(f.images, f.keypoints)[0] for spec, f in val.items()}

    def validate(self) -> dict:
        errors = {}
        for spec, x in self.val.items():
            y = np.concatenate([self.model.predict_on_batch(x[i:i + 128]) for i in range(0, len(x), 128)])
            pred, faces = denormalise_keypoints(y.reshape(len(x), -1, 2)), self.val_faces[spec]
            errors[spec] = evaluate.nme_per_face(pred, faces.keypoints, faces.scheme)
        out = {"val_nme": float(np.nanmean(np.concatenate(list(errors.values()))))}
        out.update({f"val_nme[{spec}]": float(np.nanmean(e)) for spec, e in errors.items()})
        return out

    def on_epoch_begin(self, epoch, logs=None):
        self.train_seq.epoch = epoch             # the batches of an epoch depend on (seed, epoch) only
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        s = self.state
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}, **self.validate(),
               "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
               "seconds": round(time.time() - self.t0, 1)}
        s["history"].append(row)
        s["epochs_done"] = epoch + 1
        if row["val_nme"] < s["best_val_nme"]:
            s.update(best_val_nme=row["val_nme"], best_epoch=epoch + 1, wait=0)
            save_model(self.model, self.run_dir / FILES["model"])
        else:
            s["wait"] += 1
        if s["wait"] >= s["patience"]:
            s["stopped_by"] = "early_stopping"
            self.model.stop_training = True
        save_backup(self.run_dir / FILES["backup"], self.model, s)
        config.write_atomic(self.run_dir / FILES["history"], pd.DataFrame(s["history"]).to_csv(index=False))
        self.log(f"epoch {epoch + 1}: " + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))


@dataclass
class RunResult:
    """A run folder with its summary and history."""
    run_dir: Path
    summary: dict
    history: pd.DataFrame

    @property
    def model_path(self) -> Path:
        return self.run_dir / FILES["model"]


def schedule(recipe: dict, steps_per_epoch: int):
    """Linear warm-up to the learning rate, then a cosine decay to ``final_fraction`` of it, per step."""
    lr, s, epochs = recipe["optimizer"]["learning_rate"], recipe["schedule"], recipe["training"]["epochs"]
    warmup = min(int(s["warmup_epochs"] * steps_per_epoch), max(0, (epochs - 1) * steps_per_epoch))
    decay = max(1, epochs * steps_per_epoch - warmup)
    return keras.optimizers.schedules.CosineDecay(lr * 0.1 if warmup else lr, decay, alpha=s["final_fraction"],
                                                  warmup_target=lr if warmup else None, warmup_steps=warmup)


def new_model(recipe: dict, steps_per_epoch: int, frozen_bn: bool = False) -> keras.Model:
    """The recipe's network, seeded and compiled (``frozen_bn``: batch norm frozen, for the last epochs)."""
    keras.utils.set_random_seed(recipe["training"]["seed"])
    m, loss, opt = recipe["model"], recipe["loss"], recipe["optimizer"]
    model = build_model(m["architecture"], str(m["keypoints"]), dropout=m["dropout"])
    if frozen_bn:
        freeze_batchnorm(model)
    return compile_model(model, str(m["keypoints"]), schedule(recipe, steps_per_epoch), loss["kind"],
                         loss["wing_px"], opt["weight_decay"], opt["clipnorm"])


def run_logger(run_dir: Path, quiet: bool = False):
    """A function that appends a timestamped line to the run's ``train.log`` (and prints it unless ``quiet``)."""
    def log(message: str) -> None:
        line = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} {message}"
        with open(run_dir / FILES["log"], "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if not quiet:
            print(line, flush=True)
    return log


def frozen_bn_phase(recipe: dict, model: keras.Model, steps_per_epoch: int) -> keras.Model:
    """``model`` with batch norm frozen, for the last ``frozen_bn_epochs``: a new optimizer (JAX wants its variables
    to be the trainable ones) with the step and the moments of every variable that still trains, as fresh zero
    moments at a late step would escape Adam's bias correction and take steps several times too large."""
    frozen = new_model(recipe, steps_per_epoch, frozen_bn=True)
    frozen.set_weights(model.get_weights())
    frozen.optimizer.build(frozen.trainable_variables)
    state = {v.name: v for v in model.optimizer.variables}     # e.g. "conv1_conv_kernel_momentum", "iteration"
    for v in frozen.optimizer.variables:
        v.assign(state[v.name])
    return frozen


def default_run_dir(recipe: dict) -> Path:
    """``models/runs/<recipe>-<profile>`` of a scaled, resolved recipe; a run on part of the data has its own."""
    partial = "".join(f"-{s.rpartition('/')[2]}" for s in recipe["data"]["train"]) \
        if recipe["meta"].get("missing_data") else ""
    return config.RUNS_DIR / f"{recipe['meta']['name']}-{recipe['meta']['profile']}{partial}"


def train(recipe_path, profile=None, out=None, restart: bool = False, quiet: bool = False,
          progress: bool = False) -> RunResult:
    """Train a recipe with a profile's sizes into ``out`` (default ``models/runs/<recipe>-<profile>``), resuming from
    its backup unless ``restart``; ``progress``: progress bars (data loading, and batches on a terminal)."""
    profile = profile if isinstance(profile, config.Profile) else config.get_profile(profile)
    recipe = resolve_data(recipes.scaled(recipes.load(recipe_path), profile))
    run_dir = Path(out or default_run_dir(recipe))
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES.values() if restart else ():
        (run_dir / name).unlink(missing_ok=True)
    log = run_logger(run_dir, quiet)
    train_faces, val = training_data(recipe, progress)
    t = recipe["training"]
    augmenter = Augmenter(train_faces.scheme, recipes.augment_params(recipe))
    seq = KeypointSequence(train_faces.images, train_faces.keypoints, train_faces.scheme, t["batch_size"],
                           augmenter=augmenter, shuffle=True, seed=t["seed"])
    key, backup = recipes.content_hash(recipe), run_dir / FILES["backup"]
    state = {"recipe_hash": key, "epochs_done": 0, "best_val_nme": float("inf"), "best_epoch": 0, "wait": 0,
             "patience": t["patience"], "history": [], "stopped_by": None, "frozen_bn": False}
    if backup.exists():
        state = load_backup(backup)
        if state["recipe_hash"] != key:
            raise recipes.RecipeError(f"{run_dir} holds a run of another recipe or profile; use another --out or "
                                      "--restart")
        log(f"resuming {run_dir} after epoch {state['epochs_done']}")
    model = new_model(recipe, len(seq), frozen_bn=state.get("frozen_bn", False))
    if backup.exists():
        load_backup(backup, model)
    if state["stopped_by"] is None and state["epochs_done"] < t["epochs"]:
        keeper = RunKeeper(run_dir, state, val, seq, log)
        log(f"training {recipe['meta']['name']} ({profile.name}): {len(train_faces)} faces "
            f"({train_faces.source}), validation {sum(map(len, val.values()))}, epochs {state['epochs_done'] + 1}"
            f"-{t['epochs']}, backend {keras.backend.backend()}")
        thaw_end = t["epochs"] - t["frozen_bn_epochs"]
        for end in (thaw_end, t["epochs"]):                     # batch norm learning, then (if asked) frozen
            if t["frozen_bn_epochs"] and state["epochs_done"] >= thaw_end and not state["frozen_bn"]:
                model, state["frozen_bn"] = frozen_bn_phase(recipe, model, len(seq)), True
                log(f"batch norm frozen for epochs {state['epochs_done'] + 1}-{t['epochs']}")
            if state["stopped_by"] is None and state["epochs_done"] < end:
                model.fit(seq, epochs=end, initial_epoch=state["epochs_done"], shuffle=False, callbacks=[keeper],
                          verbose=1 if progress and sys.stdout.isatty() else 0)
        state["stopped_by"] = state["stopped_by"] or "epochs"
        save_backup(backup, model, state)
    summary = summarise(run_dir, recipe, state, train_faces, val)
    return RunResult(run_dir, summary, pd.DataFrame(state["history"]))


def summarise(run_dir: Path, recipe: dict, state: dict, train_faces: Faces, val: dict[str, Faces]) -> dict:
    """Write and return ``summary.json`` (a hash of the weights: the ``.keras`` file also records when it was saved)."""
    best = next(r for r in state["history"] if r["epoch"] == state["best_epoch"])
    best_model = keras.models.load_model(run_dir / FILES["model"], compile=False)
    specs = sorted(set(recipe["data"]["train"] + recipe["data"]["validation"] + recipe["data"]["fallback_train"])
                   & set(data.available()))
    summary = {
        "recipe": recipe["meta"], "recipe_hash": state["recipe_hash"],
        "settings": {k: v for k, v in recipe.items() if k != "meta"},
        "data_fingerprint": splits.data_fingerprint(specs),
        "train_faces": len(train_faces), "train_source": train_faces.source,
        "val_faces": {s: len(f) for s, f in val.items()},
        "epochs_run": state["epochs_done"], "stopped_by": state["stopped_by"], "best_epoch": state["best_epoch"],
        "best_val_nme": state["best_val_nme"],
        "best_val_nme_parts": {k[8:-1]: v for k, v in best.items() if k.startswith("val_nme[")},
        "params": count_params(best_model),
        "weights_sha256": hashlib.sha256(b"".join(keras.ops.convert_to_numpy(w).tobytes()
                                                  for w in best_model.weights)).hexdigest(),
        "train_seconds": round(sum(r["seconds"] for r in state["history"]), 1),
        "versions": {"python": platform.python_version(), "backend": keras.backend.backend(),
                     keras.backend.backend(): getattr(sys.modules.get(keras.backend.backend()), "__version__", "?"),
                     "keras": keras.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                     **({"TF_XLA_FLAGS": os.environ["TF_XLA_FLAGS"]} if os.environ.get("TF_XLA_FLAGS") else {})},
        "machine": config.machine(), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    config.write_atomic(run_dir / FILES["summary"], json.dumps(summary, indent=2) + "\n")
    return summary


def experiments_table(run_dirs) -> pd.DataFrame:
    """One row per run folder: what its recipe changed from its base, and what it reached on validation."""
    rows = []
    for run_dir in map(Path, run_dirs):
        s = json.loads((run_dir / FILES["summary"]).read_text())
        files = s["recipe"]["files"]
        base = (recipes.scaled(recipes.load(config.ROOT / files[0]), config.get_profile(s["recipe"]["profile"]))
                if len(files) > 1 else None)                           # scaled like the run: epochs compare
        changed = [f"{t}.{k}={v}" for t, table in s["settings"].items() for k, v in table.items()
                   if base and base[t].get(k) != v]
        rows.append({"experiment": s["recipe"]["name"], "changes": ", ".join(changed) or "none (the base recipe)",
                     "epochs": s["epochs_run"], "best epoch": s["best_epoch"],
                     "val NME %": round(100 * s["best_val_nme"], 3),
                     **{f"val NME % {k}": round(100 * v, 3) for k, v in s["best_val_nme_parts"].items()},
                     "minutes": round(s["train_seconds"] / 60, 1)})
    return pd.DataFrame(rows)


def saved_or_trained(name: str, profile=None, train_now: bool = False, *, prefer_saved: bool = False
                         ) -> RunResult:
    """For the chapters: the saved run ``models/<name>/`` in the full profile (in any with ``prefer_saved``);
    else, or with ``train_now``, :func:`train` of ``recipes/<name>.toml`` in the profile. In the full profile a
    missing model is an error unless ``train_now``: hours of training must be asked for."""
    profile = profile if isinstance(profile, config.Profile) else config.get_profile(profile)
    saved = config.MODELS_DIR / name
    if (profile.name == "full" or prefer_saved) and not train_now and (saved / FILES["summary"]).exists():
        return RunResult(saved, json.loads((saved / FILES["summary"]).read_text()),
                         pd.read_csv(saved / FILES["history"]))
    if profile.name == "full" and not train_now:
        raise FileNotFoundError(f"{saved} holds no trained model: train it with `facekp train recipes/{name}.toml "
                                f"--profile full --out {config.shown(saved)}` (hours on a CPU), set TRAIN = True in "
                                "the chapter, or run the chapter in the quick profile")
    return train_in_child(config.ROOT / "recipes" / f"{name}.toml", profile)


def train_in_child(recipe_path, profile=None) -> RunResult:
    """Train as ``facekp train recipe --profile P`` does, in a fresh process (on TensorFlow with XLA's
    auto-clustering, which a process must turn on before its first graph; the smoke profile, seconds of training,
    skips that compilation), printing its log as it comes: a chapter gets the command line's model and keeps its
    own process as it was. A run of an older version of the recipe in the folder is retrained from scratch."""
    profile = profile if isinstance(profile, config.Profile) else config.get_profile(profile)
    if profile != config.get_profile(profile.name):
        raise ValueError(f"a child process trains a named profile; this {profile.name!r} has other sizes")
    with warnings.catch_warnings():               # the child warns about missing data sets itself
        warnings.simplefilter("ignore")
        run_dir = default_run_dir(resolve_data(recipes.scaled(recipes.load(recipe_path), profile)))
    out = config.shown(run_dir)                                   # what it prints
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if profile.name == "smoke":
        env.setdefault("TF_XLA_FLAGS", "")
    for restart in (False, True):
        command = [sys.executable, "-m", "helpers.cli", "train", str(recipe_path), "--profile", profile.name,
                   "--out", str(out)] + ["--restart"] * restart
        lines = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=config.ROOT) as child:
            for line in child.stdout:
                lines.append(line.rpartition("\r")[2])           # a progress bar: its final state
                print(lines[-1], end="", flush=True)
        if child.returncode == 0:
            return RunResult(run_dir, json.loads((run_dir / FILES["summary"]).read_text()),
                             pd.read_csv(run_dir / FILES["history"]))
        if restart or not any("another recipe" in line for line in lines):
            raise RuntimeError(f"facekp train {recipe_path} --profile {profile.name} failed: "
                               + (lines[-1].strip() if lines else f"exit status {child.returncode}"))
        print("retraining it from scratch")


# models/README.md, generated from the committed run folders
TEST_SETS = {"YouTube-Faces test": ("youtube-faces-68", "test"), "AFW": ("300w/afw", "test")}
TARGETS = {"lenet": (5.5, 7.0), "resnet50": (4.3, 5.5)}      # NME % the models are asked to reach on TEST_SETS
README_HEAD = """# Trained models

Generated by `facekp readme`; do not edit. Each folder `models/<name>/` is exactly what `facekp train
recipes/<name>.toml --profile full --out models/<name>` writes from scratch (resumed after interruptions, nothing
else): `model.keras` (the best epoch by validation NME), `history.csv` (one row per epoch) and `summary.json` (the
recipe and its hash, the data files' fingerprint, package versions, times). `make models` runs every recipe.
NME in percent (outer-eye-corner distance), on 96×96 crops of the landmark box; validation (YouTube-Faces people
and held-out HELEN and LFPW photographs) selects the epoch; the test people and AFW, measured now by `facekp
evaluate`, are never used in training or selection.
"""


def _nme_cell(result: dict | None, target: float | None) -> str:
    if result is None:
        return "—"
    nme = 100 * result["nme"]
    return f"{nme:.2f}" + (f" (≤ {target}: {'met' if nme <= target else 'not met'})" if target else "")


def models_readme(root: Path | None = None) -> str:
    """The text of ``models/README.md``: one row per committed run folder, every number measured or recorded."""
    root = Path(root or config.MODELS_DIR)
    rows, cards = [], []
    for summary_file in sorted(root.glob("*/summary.json")):
        name, s = summary_file.parent.name, json.loads(summary_file.read_text())
        recipe_file = config.ROOT / s["recipe"]["path"]
        current = recipe_file.exists() and recipes.same_settings(
            recipes.scaled(recipes.load(recipe_file), config.get_profile(s["recipe"]["profile"])), s["settings"])
        tests = {label: (evaluate.evaluate(str(summary_file.parent / FILES["model"]), spec, split, timing=False)
                         if spec in data.available() else None) for label, (spec, split) in TEST_SETS.items()}
        parts = ", ".join(f"{k} {100 * v:.2f}" for k, v in s["best_val_nme_parts"].items())
        goals = TARGETS.get(name, (None,) * len(TEST_SETS))
        cells = [_nme_cell(r, g) for r, g in zip(tests.values(), goals)]
        rows.append(f"| `{name}` | {s['params']['total'] / 1e6:.2f} M | {s['best_epoch']} of {s['epochs_run']} "
                    f"({s['stopped_by']}) | {s['train_seconds'] / 60:.0f} | {100 * s['best_val_nme']:.2f} | "
                    + " | ".join(cells) + f" | {'yes' if current else '**no**'} |")
        cards += [f"### `{name}`", "",
                  f"- command: `facekp train {s['recipe']['path']} --profile full --out models/{name}`",
                  f"- settings: {'match' if current else 'do NOT match'} `{s['recipe']['path']}` in the repository "
                  f"(its file's sha256 then: `{s['recipe']['sha256'][:16]}`); data fingerprint "
                  f"`{s['data_fingerprint'][:16]}`",
                  f"- {s['train_faces']} training faces ({s['train_source']}); validation NME by part: {parts}",
                  f"- weights sha256 `{s['weights_sha256'][:16]}`; versions: "
                  + ", ".join(f"{k} {v}" for k, v in s["versions"].items())
                  + (f"; machine {s['machine']}" if "machine" in s else "") + f"; finished {s['finished']}", ""]
    table = ["| model | parameters | best epoch | training minutes | val NME % | "
             + " | ".join(f"{k} NME %" for k in TEST_SETS) + " | recipe matches |",
             "|---|---|---|---|---|" + "---|" * len(TEST_SETS) + "---|", *rows]
    tables = [f"- `{t.relative_to(config.ROOT).as_posix()}`: `make experiments-{t.stem}` (`facekp train` of each "
              f"`experiments/{t.stem}_*.toml`, then `facekp table`; the profile is the Makefile's)"
              for t in sorted(root.glob("experiments/*.csv"))]
    others = [f"- `models/{p.name}`: `facekp shape --fit` (chapter 09's statistical shape model of the training "
              "splits' faces)" for p in sorted(root.glob("shape*.json"))]
    others += [f"- `{p.relative_to(root.parent).as_posix()}`: `facekp export {p.parent.name}` (int8 ONNX for fast "
               "inference)" for p in sorted(root.glob("*/model.int8.onnx"))]
    targets = "Targets: the NME each model is asked to reach (`helpers.train.TARGETS`)."
    return "\n".join([README_HEAD, *table, "", targets, "", *cards, "## Experiment tables", "", *tables, "",
                      "## Other files", "", *others, ""])
