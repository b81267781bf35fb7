"""One API, three real data sets: ``load(name) -> Dataset``.

* ``youtube-faces-68``: the Udacity course archive (CSV of 68 keypoints + image folders), YouTube Faces frames.
* ``300w``: folders of image + iBUG ``.pts`` pairs (``300w/helen-train``, ``300w/afw`` or ``300w:ANY/FOLDER``).
* ``kaggle``: the thesis' original 96×96 grayscale set, 15 keypoints (``training.csv`` or ``training.zip``).

Bad input never crashes a load and is never dropped silently: unreadable images are skipped and listed in
``Dataset.skipped``; keypoints outside their image are listed in ``Dataset.warnings``; a file with the wrong
schema raises :class:`DataFormatError` naming the file and the problem; a missing data set raises
:class:`DatasetNotFoundError` saying where it looked, where the data comes from and how to point
``FKP_DATA_DIR`` at it.
"""
from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import ClassVar

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from . import config
from .schemes import SCHEME_15, SCHEME_68, Scheme

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


# --------------------------------------------------------------------------------------------------------------
# The data set type
# --------------------------------------------------------------------------------------------------------------
class FaceCollection:
    """What :class:`Dataset` and :class:`helpers.preprocess.Faces` share: one entry per face in the fields named
    by ``PER_FACE`` (``images`` first), person labels in ``identities``, and the load's ``skipped``/``warnings``."""

    PER_FACE: ClassVar[tuple[str, ...]] = ()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_people(self) -> int:
        return len(set(self.identities.tolist()))

    def subset(self, index):
        """The faces at ``index`` (integer positions or a boolean mask), as a new object of the same class."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        picked = {f: ([v[i] for i in index] if isinstance(v, list) else v[index])
                  for f in self.PER_FACE for v in [getattr(self, f)]}
        return replace(self, **picked, skipped=list(self.skipped), warnings=list(self.warnings))


@dataclass
class Dataset(FaceCollection):
    """Faces with keypoints, as loaded from disk.

    ``images`` is a list of RGB uint8 arrays of varying size (or (96, 96) grayscale for Kaggle);
    ``keypoints`` is float32 (N, K, 2) in 0-based pixel coordinates of each image, NaN where missing.
    ``identities`` names the person (or, where the data set has no person labels, the image) each face
    belongs to: splits are made on it.
    """

    name: str
    images: list[np.ndarray]
    keypoints: np.ndarray
    names: np.ndarray
    identities: np.ndarray
    scheme: Scheme
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    PER_FACE: ClassVar[tuple[str, ...]] = ("images", "keypoints", "names", "identities")

    def __post_init__(self):
        n = len(self.images)
        if self.keypoints.shape != (n, self.scheme.num_keypoints, 2):
            raise ValueError(f"{self.name}: keypoints {self.keypoints.shape} do not match {n} images of "
                             f"scheme {self.scheme.name}")
        if len(self.names) != n or len(self.identities) != n:
            raise ValueError(f"{self.name}: names/identities must have one entry per image")

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: {len(self)} faces of {self.num_people} people, "
                f"{self.scheme.num_keypoints} keypoints, {len(self.skipped)} skipped)")

    def report(self) -> str:
        """A short, human-readable account of what was loaded and what was not."""
        lines = [repr(self)]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s): "
                         + ", ".join(f"{n} ({why})" for n, why in self.skipped[:5])
                         + (" ..." if len(self.skipped) > 5 else ""))
        for w in self.warnings[:5]:
            lines.append(f"  warning: {w}")
        if len(self.warnings) > 5:
            lines.append(f"  ... and {len(self.warnings) - 5} more warnings")
        return "\n".join(lines)


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not where the project looked for it."""


class DataFormatError(ValueError):
    """A data file exists but does not have the expected schema."""


# --------------------------------------------------------------------------------------------------------------
# The registry: where each data set lives, where it comes from, its licence
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str                 # below the data root
    scheme: Scheme
    description: str
    origin: str                 # where users get it
    licence: str
    url: str | None = None      # public archive the download code fetches
    sha256: str | None = None   # published checksum of that archive, when one exists


DATASETS: dict[str, DatasetInfo] = {
    "youtube-faces-68": DatasetInfo(
        "youtube-faces-68", "youtube-faces-68", SCHEME_68,
        "YouTube Faces frames with 68 tracked keypoints (Udacity CVND 'Facial Keypoint Detection' archive)",
        "Wolf, Hassner & Maoz, 'Face recognition in unconstrained videos with matched background similarity', "
        "CVPR 2011; archive of the Udacity Computer Vision Nanodegree",
        "YouTube Faces Database terms (research use)",
        url="https://s3.amazonaws.com/video.udacity-data.com/topher/2018/May/5aea1b91_train-test-data/"
            "train-test-data.zip",
    ),
    "300w": DatasetInfo(
        "300w", "300w-subset", SCHEME_68,
        "iBUG 300-W faces with 68 human-annotated keypoints (subsets: helen-train, afw)",
        "Sagonas et al., '300 Faces In-the-Wild Challenge', 2013; https://ibug.doc.ic.ac.uk/resources/300-W/ "
        "(registration required)",
        "research use only, no commercial use; image copyright with the photographers",
    ),
    "kaggle": DatasetInfo(
        "kaggle", "kaggle", SCHEME_15,
        "Kaggle 'Facial Keypoints Detection': 96x96 grayscale faces, 15 keypoints (the thesis' data set)",
        "https://www.kaggle.com/c/facial-keypoints-detection/data (Kaggle account; "
        "`kaggle competitions download -c facial-keypoints-detection`)",
        "Kaggle competition rules (research and education)",
    ),
}


def dataset_dir(name: str, root: Path | None = None) -> Path:
    return Path(root or config.data_root()) / DATASETS[name].folder


def _not_found(name: str, looked: Path, extra: str = "") -> DatasetNotFoundError:
    info = DATASETS[name]
    return DatasetNotFoundError(
        f"Data set '{name}' not found: looked in {looked}.\n"
        f"  It comes from: {info.origin}\n"
        + (f"  Public archive: {info.url}  (helpers.data.download('{name}') fetches it)\n" if info.url else "")
        + (extra and f"  {extra}\n")
        + f"  Set FKP_DATA_DIR to the folder that holds '{info.folder}/' (now: {config.data_root()})."
    )


# --------------------------------------------------------------------------------------------------------------
# Download, checksum, safe extraction
# --------------------------------------------------------------------------------------------------------------
def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (atomically, with a progress bar) and verify its sha256.

    ``url`` may be a ``file://`` URL (tests use local files). With ``sha256=None`` no checksum was published:
    the file's checksum is recorded next to it (``dest.sha256``) on first download and checked on every later
    call, so a changed or corrupted archive is noticed. An existing ``dest`` that passes its check is reused.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    record = dest.with_name(dest.name + ".sha256")
    expected = sha256 or (record.read_text().split()[0] if record.exists() else None)
    if dest.exists() and expected and sha256sum(dest) == expected:
        return dest
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
    digest = sha256sum(tmp)
    if expected and digest != expected:
        tmp.unlink()
        raise OSError(f"Checksum mismatch for {url}: expected sha256 {expected}, got {digest}. "
                      f"The download was deleted; try again, or delete {record} if the archive changed upstream.")
    tmp.replace(dest)
    if not sha256:
        record.write_text(f"{digest}  {dest.name}\n")
    return dest


def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a zip archive into ``dest``, refusing members with absolute paths or ``..`` components."""
    dest = Path(dest).resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for m in members:
            p = PurePosixPath(m.filename.replace("\\", "/"))
            if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", m.filename):
                raise DataFormatError(f"{archive}: refusing to extract unsafe member path {m.filename!r}")
            if not (dest / p).resolve().is_relative_to(dest):
                raise DataFormatError(f"{archive}: member {m.filename!r} would land outside {dest}")
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for m in members:
            if m.filename.startswith("__MACOSX/"):
                continue
            zf.extract(m, dest)
            out.append(dest / m.filename)
    return out


def download(name: str, root: Path | None = None, url: str | None = None, progress: bool = True) -> Path:
    """Fetch a data set into ``root`` (default: the data root) and return its folder.

    ``youtube-faces-68``: the course archive (checksum-verified, cached under ``data/downloads``, safely
    extracted). ``kaggle``: through the ``kaggle`` CLI when installed and configured. ``300w``: needs
    registration at iBUG, so this explains where to get it.
    """
    info = DATASETS[name]
    target = dataset_dir(name, root)
    if name == "youtube-faces-68":
        archive = download_file(url or info.url, config.PROJECT_DATA_DIR / "downloads" / "train-test-data.zip",
                                info.sha256, progress=progress)
        staging = target.with_name(target.name + ".extracting")
        shutil.rmtree(staging, ignore_errors=True)
        safe_extract(archive, staging)
        # the archive holds training/, test/ and the two CSVs at its top level
        inner = next((p.parent for p in staging.rglob("training_frames_keypoints.csv")), None)
        if inner is None:
            raise DataFormatError(f"{archive}: no training_frames_keypoints.csv inside")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(inner), target)
        shutil.rmtree(staging, ignore_errors=True)
        return target
    if name == "kaggle":
        if shutil.which("kaggle") is None:
            raise _not_found(name, target, "The `kaggle` CLI is not installed: `pip install kaggle`, put your API "
                             f"token in ~/.kaggle/kaggle.json, or place training.csv / training.zip in {target}.")
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["kaggle", "competitions", "download", "-c", "facial-keypoints-detection", "-p",
                        str(target)], check=True)
        for z in target.glob("*.zip"):
            if z.name != "training.zip":
                safe_extract(z, target)
        return target
    raise _not_found(name, target, "300-W requires registration: download it from iBUG and unpack the subset "
                     "folders (e.g. helen-train/, afw/) of image + .pts pairs there.")


# --------------------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------------------
def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises ``ValueError`` when it cannot be decoded."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_pts(path: str | Path) -> np.ndarray:
    """Parse an iBUG ``.pts`` file; returns (n_points, 2) float32 in **0-based** pixels (the file is 1-based)."""
    path = Path(path)
    text = path.read_text(errors="replace")
    m = re.search(r"n_points\s*:\s*(\d+)", text)
    body = re.search(r"\{(.*?)\}", text, re.S)
    if not m or not body:
        raise DataFormatError(f"{path}: not an iBUG .pts file (needs 'n_points:' and a {{ ... }} block)")
    n = int(m.group(1))
    try:
        values = [float(v) for v in body.group(1).split()]
    except ValueError as e:
        raise DataFormatError(f"{path}: non-numeric coordinate ({e})") from None
    if len(values) != 2 * n:
        raise DataFormatError(f"{path}: header says {n} points but the block holds {len(values) / 2:g}")
    return np.asarray(values, dtype=np.float32).reshape(n, 2) - 1.0


def _outside(kps: np.ndarray, shape: tuple[int, ...], tol: float = 0.5) -> int:
    h, w = shape[:2]
    x, y = kps[:, 0], kps[:, 1]
    bad = (x < -tol) | (y < -tol) | (x > w - 1 + tol) | (y > h - 1 + tol)
    return int(np.sum(bad & ~np.isnan(x)))


def _assemble(name, source, scheme, records, skipped, progress) -> Dataset:
    """Read the images of ``records`` [(file name, path, keypoints, identity)], skipping unreadable ones."""
    images, kps, names, ids, warnings = [], [], [], [], []
    for fname, path, kp, ident in tqdm(records, desc=f"reading {name}", disable=not progress, leave=False):
        try:
            img = read_image(path)
        except (OSError, ValueError) as e:
            skipped.append((fname, str(e)))
            continue
        n_out = _outside(kp, img.shape)
        if n_out:
            warnings.append(f"{fname}: {n_out} keypoint(s) outside the {img.shape[1]}x{img.shape[0]} image")
        images.append(img)
        kps.append(kp)
        names.append(fname)
        ids.append(ident)
    k = scheme.num_keypoints
    return Dataset(name, images, np.asarray(kps, dtype=np.float32).reshape(-1, k, 2), np.asarray(names, dtype=str),
                   np.asarray(ids, dtype=str), scheme, source, skipped, warnings)


def youtube_identity(file_name: str) -> str:
    """``Person_Name_12.jpg`` (or ``training/Person_Name_12.jpg``) → ``Person_Name`` (the clip's person)."""
    return re.sub(r"_\d+$", "", Path(file_name).stem)


def _read_keypoint_csv(path: Path, n_values: int) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: not a readable CSV ({e})") from None
    if df.shape[1] != n_values + 1:
        raise DataFormatError(f"{path}: expected a file-name column and {n_values} keypoint columns "
                              f"(x0,y0,...), found {df.shape[1]} columns")
    values = df.iloc[:, 1:]
    non_numeric = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if non_numeric:
        raise DataFormatError(f"{path}: keypoint column(s) {non_numeric[:5]} are not numeric")
    return df


def load_youtube_faces(root: Path | None = None, max_faces: int | None = None, parts=("training", "test"),
                       progress: bool = True) -> Dataset:
    """The course archive: both of its CSVs merged (its own split shares every test person with training)."""
    folder = dataset_dir("youtube-faces-68", root)
    records, skipped = [], []
    for part in parts:
        csv = folder / f"{part}_frames_keypoints.csv"
        if not csv.exists():
            raise _not_found("youtube-faces-68", csv)
        df = _read_keypoint_csv(csv, 136)
        for fname, row in zip(df.iloc[:, 0].astype(str), df.iloc[:, 1:].to_numpy(np.float32)):
            path = folder / part / fname
            if not path.exists():
                skipped.append((f"{part}/{fname}", f"listed in {csv.name} but missing from {part}/"))
                continue
            # both CSVs reuse the same 770 file names for different frames: names are kept as part/file
            records.append((f"{part}/{fname}", path, row.reshape(68, 2), youtube_identity(fname)))
    records = _limit(records, max_faces)
    return _assemble("youtube-faces-68", str(folder), SCHEME_68, records, skipped, progress)


def _limit(records: list, max_faces: int | None) -> list:
    """At most ``max_faces`` records, taken evenly over the (sorted) list so every part is represented."""
    if max_faces is None or len(records) <= max_faces:
        return records
    idx = np.linspace(0, len(records) - 1, max_faces).round().astype(int)
    return [records[i] for i in np.unique(idx)]


def load_300w(folder: str | Path, max_faces: int | None = None, progress: bool = True, name: str | None = None
              ) -> Dataset:
    """Any folder of image + ``.pts`` pairs (searched recursively). Identity = file stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _not_found("300w", folder)
    records, skipped = [], []
    for pts in sorted(folder.rglob("*.pts")):
        image = next((pts.with_suffix(s) for s in IMAGE_SUFFIXES + tuple(x.upper() for x in IMAGE_SUFFIXES)
                      if pts.with_suffix(s).exists()), None)
        rel = str(pts.relative_to(folder).with_suffix(""))
        if image is None:
            skipped.append((str(pts.relative_to(folder)), "no image next to the .pts file"))
            continue
        kp = read_pts(pts)
        if kp.shape != (68, 2):
            raise DataFormatError(f"{pts}: {kp.shape[0]} points, expected 68")
        records.append((image.name, image, kp, rel))
    if not records and not skipped:
        raise _not_found("300w", folder, "The folder holds no .pts files.")
    records = _limit(records, max_faces)
    return _assemble(name or f"300w:{folder.name}", str(folder), SCHEME_68, records, skipped, progress)


def load_kaggle(path: str | Path | None = None, max_faces: int | None = None, root: Path | None = None) -> Dataset:
    """The Kaggle CSV (or a zip holding it): 30 keypoint columns + ``Image`` (9216 space-separated pixels).

    Empty keypoint cells are missing (NaN) and kept: the masked loss learns from incomplete rows.
    Kaggle gives no person labels, so each row is its own identity.
    """
    if path is None:
        folder = dataset_dir("kaggle", root)
        path = next((folder / f for f in ("training.csv", "training.zip") if (folder / f).exists()), folder)
    path = Path(path)
    if not path.is_file():
        raise _not_found("kaggle", path, "Place training.csv or training.zip from Kaggle there.")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            csvs = [n for n in zf.namelist() if n.endswith(".csv") and not n.startswith("__MACOSX")]
            if len(csvs) != 1:
                raise DataFormatError(f"{path}: expected exactly one CSV inside, found {csvs}")
            df = pd.read_csv(io.BytesIO(zf.read(csvs[0])))
    else:
        df = pd.read_csv(path)
    columns = [f"{n}_{a}" for n in SCHEME_15.names for a in "xy"]
    missing = [c for c in columns + ["Image"] if c not in df.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing[:4]}{' ...' if len(missing) > 4 else ''}; "
                              "expected the 30 Kaggle keypoint columns and 'Image'")
    if max_faces is not None:
        df = df.iloc[:max_faces]
    images, keep, skipped, warnings = [], [], [], []
    for i, pixels in enumerate(df["Image"].astype(str)):
        try:
            arr = np.array(pixels.split(), dtype=np.float32)
            if arr.size != 96 * 96 or np.any((arr < 0) | (arr > 255)):
                raise ValueError(f"{arr.size} pixel values in 0-255 (expected 9216)")
        except ValueError as e:
            skipped.append((f"row {i}", f"bad Image field: {e}"))
            continue
        images.append(arr.reshape(96, 96).astype(np.uint8))
        keep.append(i)
    kps = df.iloc[keep][columns].to_numpy(np.float32).reshape(-1, 15, 2)
    for j, kp in zip(keep, kps):
        n_out = _outside(kp, (96, 96))
        if n_out:
            warnings.append(f"row {j}: {n_out} keypoint(s) outside the 96x96 image")
    names = np.asarray([f"row_{i:05d}" for i in keep], dtype=str)
    return Dataset("kaggle", images, kps, names, names.copy(), SCHEME_15, str(path), skipped, warnings)


def index(spec: str, root: Path | None = None) -> pd.DataFrame:
    """Names and identities of every face of a data set, without reading an image (cheap: counts, splits).

    Columns: ``name``, ``identity``, ``part`` (the course's ``training``/``test`` for YouTube-Faces).
    """
    if spec == "youtube-faces-68":
        folder = dataset_dir(spec, root)
        frames = []
        for part in ("training", "test"):
            csv = folder / f"{part}_frames_keypoints.csv"
            if not csv.exists():
                raise _not_found(spec, csv)
            files = _read_keypoint_csv(csv, 136).iloc[:, 0].astype(str)
            frames.append(pd.DataFrame({"name": part + "/" + files, "identity": files.map(youtube_identity),
                                        "part": part}))
        return pd.concat(frames, ignore_index=True)
    if spec.startswith("300w"):
        folder = Path(spec[5:]).expanduser() if spec.startswith("300w:") else dataset_dir("300w", root) / spec[5:]
        if not folder.is_dir():
            raise _not_found("300w", folder)
        stems = [str(p.relative_to(folder).with_suffix("")) for p in sorted(folder.rglob("*.pts"))]
        return pd.DataFrame({"name": stems, "identity": stems, "part": folder.name})
    ds = load(spec, root=root)
    return pd.DataFrame({"name": ds.names, "identity": ds.identities, "part": spec})


def available() -> list[str]:
    """The data set specs found under the data root (e.g. ``youtube-faces-68``, ``300w/afw``)."""
    root = config.data_root()
    found = []
    if (dataset_dir("youtube-faces-68", root) / "training_frames_keypoints.csv").exists():
        found.append("youtube-faces-68")
    w = dataset_dir("300w", root)
    if w.is_dir():
        found += [f"300w/{d.name}" for d in sorted(w.iterdir()) if d.is_dir() and any(d.glob("*.pts"))]
    k = dataset_dir("kaggle", root)
    if any((k / f).exists() for f in ("training.csv", "training.zip")):
        found.append("kaggle")
    return found


def load(spec: str, max_faces: int | None = None, root: Path | None = None, progress: bool = True) -> Dataset:
    """Load a data set by name.

    ``spec``: ``"youtube-faces-68"``, ``"kaggle"``, ``"300w/helen-train"``, ``"300w/afw"``, ``"300w"`` (every
    subset), or ``"300w:PATH"`` for any folder of image + ``.pts`` pairs.
    """
    if spec == "youtube-faces-68":
        return load_youtube_faces(root, max_faces, progress=progress)
    if spec == "kaggle":
        return load_kaggle(max_faces=max_faces, root=root)
    if spec.startswith("300w:"):
        return load_300w(Path(spec[5:]).expanduser(), max_faces, progress)
    if spec == "300w" or spec.startswith("300w/"):
        sub = spec[5:]
        folder = dataset_dir("300w", root) / sub
        return load_300w(folder, max_faces, progress, name=spec)
    raise ValueError(f"Unknown data set {spec!r}; use one of {sorted(DATASETS)}, '300w/SUBSET' or '300w:PATH'")
