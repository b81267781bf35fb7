"""Training runs as data: a recipe (``recipes/*.toml``) holds every choice of a run in the tables of :data:`DEFAULTS`
(``[augment]``: fields of :class:`helpers.augment.AugmentParams`); an experiment (``experiments/*.toml``) holds
``base = "../recipes/lenet.toml"`` (relative to itself) and the keys it changes. A bad key or value is an error naming
the file and the key. A profile (:mod:`helpers.config`) scales only the sizes (:func:`scaled`)."""
import copy
import hashlib
import json
import tomllib
from dataclasses import fields
from pathlib import Path

from . import config
from .augment import AugmentParams
from .models import MODEL_NAMES as ARCHITECTURES, MaskedLoss

DEFAULTS: dict = {
    "model": {"architecture": None, "keypoints": 68, "dropout": 0.0},
    "data": {"train": None, "repeat": {}, "validation": None, "fallback_train": []},   # see train.resolve_data
    "augment": {},
    "loss": {"kind": "mae", "wing_px": [10.0, 2.0]},                # wing_px: the Wing loss' (w, epsilon), pixels
    "optimizer": {"learning_rate": 1e-3, "weight_decay": 0.0, "clipnorm": None},
    "schedule": {"warmup_epochs": 1, "final_fraction": 0.02},       # cosine decay to learning_rate · final_fraction
    "training": {"epochs": None, "batch_size": 32, "seed": config.DEFAULT_SEED, "patience": 20,
                 "frozen_bn_epochs": 0},                          # the last epochs train with batch norm frozen
}
AUGMENT_KEYS = {f.name for f in fields(AugmentParams)}


class RecipeError(ValueError):
    """A recipe that cannot be run: the message names the file and the key."""


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read(path: Path, seen: tuple = ()) -> tuple[dict, list[Path]]:
    """(merged tables, files read: the recipe and its bases)."""
    path = path.resolve()
    if path in seen:
        raise RecipeError(f"{path}: 'base' chain loops back to itself")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: not valid TOML ({e})") from None
    base = raw.pop("base", None)
    raw.pop("description", None)
    if base is None:
        return raw, [path]
    if not isinstance(base, str):
        raise RecipeError(f"{path}: 'base' must be a path to a recipe")
    merged, files = _read(path.parent / base, seen + (path,))
    return _merge(merged, raw), files + [path]


def _check(recipe: dict, where: str) -> None:
    def fail(key, why):
        raise RecipeError(f"{where}: [{key}] {why}")

    for table, keys in recipe.items():
        if table not in DEFAULTS or not isinstance(keys, dict):
            fail(table, f"is not a recipe table (expected tables {sorted(DEFAULTS)})")
        allowed = AUGMENT_KEYS if table == "augment" else set(DEFAULTS[table])
        for key in set(keys) - allowed:
            fail(f"{table}.{key}", f"is not a known key (expected one of {sorted(allowed)})")
    m, d, t, o, s = (recipe[k] for k in ("model", "data", "training", "optimizer", "schedule"))
    if m["architecture"] not in ARCHITECTURES:
        fail("model.architecture", f"must be one of {ARCHITECTURES}, got {m['architecture']!r}")
    if m["keypoints"] not in (68, 15):
        fail("model.keypoints", f"must be 68 or 15, got {m['keypoints']!r}")
    for key in ("train", "validation"):
        if not (isinstance(d[key], list) and d[key] and all(isinstance(x, str) for x in d[key])):
            fail(f"data.{key}", "must be a non-empty list of data-set names")
    for spec, k in d["repeat"].items():
        if spec not in d["train"] + d["fallback_train"] or not isinstance(k, int) or isinstance(k, bool) or k < 1:
            fail(f"data.repeat.{spec}", "must name a training data set and be a whole number >= 1")
    if recipe["loss"]["kind"] not in MaskedLoss.KINDS:
        fail("loss.kind", f"must be one of {MaskedLoss.KINDS}, got {recipe['loss']['kind']!r}")
    for key in ("epochs", "batch_size", "patience"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1:
            fail(f"training.{key}", f"must be a whole number >= 1, got {t[key]!r}")
    if type(t["frozen_bn_epochs"]) is not int or not 0 <= t["frozen_bn_epochs"] < t["epochs"]:
        fail("training.frozen_bn_epochs", f"must be a whole number from 0 to epochs - 1, got {t['frozen_bn_epochs']!r}")
    for key, v in {"optimizer.learning_rate": o["learning_rate"], "schedule.final_fraction": s["final_fraction"],
                   "optimizer.weight_decay": o["weight_decay"], "model.dropout": m["dropout"],
                   "schedule.warmup_epochs": s["warmup_epochs"]}.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            fail(key, f"must be a number >= 0, got {v!r}")
    if not 0 < o["learning_rate"] < 1 or m["dropout"] >= 1 or s["final_fraction"] > 1:
        fail("optimizer/model/schedule", "learning_rate must lie in (0, 1), dropout in [0, 1), final_fraction "
             "in [0, 1]")
    try:
        augment_params(recipe)
    except (TypeError, ValueError) as e:
        fail("augment", str(e))


def load(path) -> dict:
    """The recipe (or experiment) at ``path``, merged with its base and the defaults, checked; ``meta["sha256"]``
    hashes the recipe file and its bases byte for byte (a run records it, ``models/README.md`` shows it)."""
    path = Path(path)
    raw, files = _read(path)
    recipe = _merge(DEFAULTS, raw)
    _check(recipe, str(path))
    recipe["meta"] = {"name": path.stem, "path": _relative(path), "files": [_relative(f) for f in files],
                      "sha256": hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()}
    return recipe


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(config.ROOT).as_posix()
    except ValueError:
        return str(path)


def augment_params(recipe: dict) -> AugmentParams:
    """The recipe's ``[augment]`` table as :class:`helpers.augment.AugmentParams` (lists become tuples)."""
    table = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe["augment"].items()}
    return AugmentParams(**table)


def scaled(recipe: dict, profile: config.Profile) -> dict:
    """The recipe with the profile's sizes: epochs and patience (at least 5) scaled, faces per data set limited."""
    out = copy.deepcopy(recipe)
    t = out["training"]
    t["epochs"] = profile.epochs(t["epochs"])
    if t["frozen_bn_epochs"]:                  # scaled like the epochs, and at least one epoch before them
        t["frozen_bn_epochs"] = min(profile.epochs(t["frozen_bn_epochs"]), t["epochs"] - 1)
    t["patience"] = min(t["patience"], max(5, profile.epochs(t["patience"])))    # short runs still get 5
    out["meta"] = {**out["meta"], "profile": profile.name, "max_faces": profile.max_faces}
    return out


def same_settings(recipe: dict, settings: dict) -> bool:
    """Whether a (scaled) ``recipe`` asks for exactly the ``settings`` a run recorded (keys added since: defaults)."""
    body = {table: keys for table, keys in recipe.items() if table != "meta"}
    return body == {table: {**DEFAULTS.get(table, {}), **settings.get(table, {})} for table in body} and \
        set(settings) <= set(body)


def content_hash(recipe: dict) -> str:
    """A hash of every setting of a (scaled) recipe, independent of file layout and comments."""
    body = {k: v for k, v in recipe.items() if k != "meta"}
    body["profile"] = recipe["meta"].get("profile"), recipe["meta"].get("max_faces")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
