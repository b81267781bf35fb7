"""Identity-disjoint train / validation / test splits, and the cached preprocessed faces of a data set. A person's
split is a hash of ``(seed, identity)`` cut at the split fractions: reproducible anywhere, stable when faces are added.
Rules: ``youtube-faces-68`` (both CSVs merged: they share all 347 test people) 80 / 10 / 10 by person; ``300w/afw``
test only; the other 300-W folders 90 / 10 / 0 by image; ``kaggle`` (no person labels) 80 / 10 / 10 by row."""
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, data, preprocess
from .preprocess import Faces

SPLITS = ("train", "val", "test")


def fractions_for(spec: str) -> tuple[float, float, float]:
    """(train, val, test) fractions of a data set spec, by the rules above."""
    kind, path = data.parse_spec(spec)
    if kind == "300w" and path.name == data.FOLDERS["300w"]:
        raise ValueError("split 300-W one folder at a time (300w/afw, 300w/helen-train, ...): AFW is test only")
    if kind == "300w":
        return (0.0, 0.0, 1.0) if path.name.lower().startswith("afw") else (0.9, 0.1, 0.0)
    return (0.8, 0.1, 0.1)


def assign_splits(identities, fractions=(0.8, 0.1, 0.1), seed: int = config.DEFAULT_SEED) -> np.ndarray:
    """One of ``train`` / ``val`` / ``test`` per face, decided by its identity alone."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    cuts, ids = np.cumsum(f), np.asarray(identities, dtype=str)
    u = {i: int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64 for i in np.unique(ids)}
    split = {i: SPLITS[min(int(np.searchsorted(cuts, v, side="right")), 2)] for i, v in u.items()}   # past 1: test
    return np.array([split[i] for i in ids], dtype=str)


def save_splits(spec: str, names, identities, splits) -> Path:
    """Write ``name,identity,split`` rows (sorted by name) to ``data/splits/<spec>.csv``, tracked by git."""
    path = config.SPLITS_DIR / (spec.replace("/", "_").replace(":", "_") + ".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"name": names, "identity": identities, "split": splits}).sort_values("name").to_csv(path, index=False)
    return path


def split_table(faces_by_split: dict[str, Faces]) -> pd.DataFrame:
    """Faces and people per split; ``attrs["people_in_two_splits"]`` checks that no person is in two."""
    table = pd.DataFrame({s: {"faces": len(f), "people": f.num_people} for s, f in faces_by_split.items()}).T
    people = [set(f.identities.tolist()) for f in faces_by_split.values()]
    table.attrs["people_in_two_splits"] = sum(len(a & b) for i, a in enumerate(people) for b in people[i + 1:])
    return table


def data_fingerprint(specs) -> str:
    """A sha256 hex digest of the names and bytes (not sizes and times) of the files behind ``specs`` (one or more)."""
    h = hashlib.sha256()
    for spec in [specs] if isinstance(specs, str) else specs:
        path = data.parse_spec(spec).path
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] * path.exists()
        h.update("".join(f"{f.relative_to(path.parent)}\t{config.sha256sum(f)}\n" for f in files).encode())
    return h.hexdigest()


def load_faces(spec: str, split: str | None = None, max_faces: int | None = None, seed: int = config.DEFAULT_SEED,
               progress: bool = True) -> Faces:
    """The :class:`Faces` of ``split`` (None: all) of a data set, cached under a key of its content and parameters."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    key = preprocess.cache_key(spec=spec, max_faces=max_faces, size=config.IMAGE_SIZE, scale=preprocess.CROP_SCALE,
                               data=data_fingerprint(spec))
    path, faces = config.CACHE_DIR / f"faces-{spec.replace('/', '_').replace(':', '_')[:60]}-{key}.npz", None
    if path.exists():
        try:
            faces = Faces.load(path)
        except Exception as e:                  # noqa: BLE001 - whatever broke the file, rebuilding mends it
            warnings.warn(f"ignoring the unreadable cache {path} ({type(e).__name__}: {e}); rebuilding it")
    if faces is None:
        faces = preprocess.prepare(data.load(spec, max_faces, progress=progress), progress=progress)
        faces.save(path)                        # written atomically: concurrent builders and readers are safe
    return faces if split is None else faces.subset(split_of(faces, seed) == split)


def split_of(faces: Faces, seed: int = config.DEFAULT_SEED) -> np.ndarray:
    return assign_splits(faces.identities, fractions_for(faces.source), seed)


def load_splits(spec: str, seed: int = config.DEFAULT_SEED, **kwargs) -> dict[str, Faces]:
    """``{"train": Faces, "val": Faces, "test": Faces}`` for a data set (empty splits included)."""
    faces = load_faces(spec, None, **kwargs)
    labels = split_of(faces, seed)
    return {s: faces.subset(labels == s) for s in SPLITS}
