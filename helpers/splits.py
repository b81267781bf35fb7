"""Identity-disjoint train / validation / test splits.

A person's split is a pure function of ``(seed, identity)``: a hash mapped to [0, 1) and cut at the split
fractions. So splits are seeded, reproducible on any machine, never put one person in two splits, and do not
change when faces or people are added to a data set. ``save_splits`` writes them as CSVs of file names under
``data/splits/`` (tracked by git, so readers see exactly which faces each number was measured on).

Rules per data set:
* ``youtube-faces-68``: the course's training and test CSVs are merged first (its own split shares all 347
  test people with training), then split 80 / 10 / 10 by person.
* ``300w/afw``: test only, a cross-data-set test; no split ever mixes it into training.
* ``300w/...`` (HELEN-train and other training subsets): 90 / 10 / 0 train / val by image.
* ``kaggle``: no person labels; 80 / 10 / 10 by row.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, data, preprocess
from .preprocess import Faces

SPLITS = ("train", "val", "test")


def fractions_for(spec: str) -> tuple[float, float, float]:
    if spec.startswith("300w") and Path(spec).name.lower().startswith("afw"):
        return (0.0, 0.0, 1.0)
    if spec.startswith("300w"):
        return (0.9, 0.1, 0.0)
    return (0.8, 0.1, 0.1)


def assign_splits(identities, fractions=(0.8, 0.1, 0.1), seed: int = config.DEFAULT_SEED) -> np.ndarray:
    """One of ``train`` / ``val`` / ``test`` per face, decided by its identity alone."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    cuts = np.cumsum(f)
    out = np.empty(len(identities), dtype=object)
    memo: dict[str, str] = {}
    for i, ident in enumerate(np.asarray(identities, dtype=str)):
        if ident not in memo:
            h = hashlib.sha256(f"{seed}:{ident}".encode()).digest()
            u = int.from_bytes(h[:8], "big") / 2**64
            memo[ident] = SPLITS[int(np.searchsorted(cuts, u, side="right"))] if u < cuts[-1] else SPLITS[-1]
        out[i] = memo[ident]
    return out.astype(str)


def splits_path(spec: str) -> Path:
    return config.SPLITS_DIR / (spec.replace("/", "_").replace(":", "_") + ".csv")


def save_splits(spec: str, names, identities, splits) -> Path:
    """Write ``name,identity,split`` rows (sorted by name) to ``data/splits/<spec>.csv``."""
    path = splits_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({"name": names, "identity": identities, "split": splits}).sort_values("name")
    df.to_csv(path, index=False)
    return path


def split_table(faces_by_split: dict[str, Faces]) -> pd.DataFrame:
    """Faces and people per split (and a check that no person is in two splits)."""
    rows = {s: {"faces": len(f), "people": f.num_people} for s, f in faces_by_split.items()}
    table = pd.DataFrame(rows).T
    people = [set(f.identities.tolist()) for f in faces_by_split.values()]
    shared = sum(len(a & b) for i, a in enumerate(people) for b in people[i + 1:])
    table.attrs["people_in_two_splits"] = shared
    return table


def _data_fingerprint(spec: str) -> list:
    """(path, size, mtime) of every file behind ``spec``: cheap, and changes whenever the data does."""
    if spec.startswith("300w:"):
        folder = Path(spec[5:]).expanduser()
    elif spec.startswith("300w"):
        folder = data.dataset_dir("300w") / spec[5:]
    else:
        folder = data.dataset_dir(spec)
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out.append((os.path.relpath(os.path.join(dirpath, f), folder), st.st_size, st.st_mtime_ns))
    return sorted(out)


def load_faces(spec: str, split: str | None = None, max_faces: int | None = None, size: int = config.IMAGE_SIZE,
               seed: int = config.DEFAULT_SEED, cache: bool = True, progress: bool = True):
    """Load, crop and split a data set in one call; the preprocessed arrays are cached as ``.npz``.

    Returns :class:`helpers.preprocess.Faces` for ``split`` (``train``/``val``/``test``), or for every face
    when ``split`` is ``None`` (then ``faces.split`` labels each face via :func:`split_of`).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    key = preprocess.cache_key(spec=spec, root=str(config.data_root()), max_faces=max_faces, size=size,
                               scale=preprocess.CROP_SCALE, files=_data_fingerprint(spec) if cache else None)
    path = config.CACHE_DIR / f"faces-{spec.replace('/', '_').replace(':', '_')[:60]}-{key}.npz"
    if cache and path.exists():
        faces = Faces.load(path)
    else:
        faces = preprocess.prepare(data.load(spec, max_faces=max_faces, progress=progress), size=size,
                                   progress=progress)
        faces.source = spec
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a private temporary name, then an atomic rename: concurrent builders never collide
            fd, tmp = tempfile.mkstemp(suffix=".npz", prefix=path.stem + ".", dir=path.parent)
            os.close(fd)
            try:
                faces.save(tmp)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    if split is None:
        return faces
    return faces.subset(split_of(faces, seed) == split)


def split_of(faces: Faces, seed: int = config.DEFAULT_SEED) -> np.ndarray:
    """The split of each face of ``faces`` (by its identity and data set's rule)."""
    return assign_splits(faces.identities, fractions_for(faces.source), seed)


def load_splits(spec: str, **kwargs) -> dict[str, Faces]:
    """``{"train": Faces, "val": Faces, "test": Faces}`` for a data set (empty splits included)."""
    faces = load_faces(spec, None, **kwargs)
    labels = split_of(faces)
    return {s: faces.subset(labels == s) for s in SPLITS}
