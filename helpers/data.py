"""Three data sets, one API: ``load(spec) -> Dataset`` (:func:`parse_spec`); one image reader, :func:`read_image`.
Unusable faces are listed in ``Dataset.skipped``, keypoints outside their image in ``Dataset.warnings``."""
import errno
import io
import re
import zipfile
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, NamedTuple

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from . import config
from .schemes import SCHEME_15, SCHEME_68, Scheme

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")   # a GIF: its first frame
MAX_PIXELS = 250_000_000          # read_image refuses larger images (about 15800 × 15800), before decoding


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not where the project looked; the message says where that was, its origin and ``FKP_DATA_DIR``."""


class DataFormatError(ValueError):
    """A data file exists but does not have the expected schema."""


class ImageReadError(ValueError):
    """A file that is not a readable image: missing, empty, truncated, not an image or over the pixel limit."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path, self.reason = Path(path), reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FaceCollection:
    """Base of :class:`Dataset` and :class:`helpers.preprocess.Faces`: ``PER_FACE`` fields hold one entry per face."""
    PER_FACE: ClassVar[tuple[str, ...]] = ()
    _: KW_ONLY
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_people(self) -> int:
        return len(set(self.identities.tolist()))

    def skipped_records(self) -> list[dict]:
        """``[{"path", "reason"}]`` of what the load skipped: the batch report of ``facekp`` and its JSON."""
        return [{"path": str(n), "reason": str(r)} for n, r in self.skipped]

    def subset(self, index):
        """The faces at ``index`` (integer positions or a boolean mask), as a new object of the same class."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        picked = {f: ([v[i] for i in index] if isinstance(v, list) else v[index])
                  for f in self.PER_FACE for v in [getattr(self, f)]}
        return replace(self, **picked, skipped=list(self.skipped), warnings=list(self.warnings))


@dataclass
class Dataset(FaceCollection):
    """Faces as loaded: ``images`` RGB uint8 of any size ((96, 96) gray for Kaggle); ``keypoints`` float32 (N, K, 2)
    in 0-based pixels, NaN where missing; ``identities`` the person (else the image) of each face: splits use it."""
    name: str
    images: list[np.ndarray]
    keypoints: np.ndarray
    names: np.ndarray
    identities: np.ndarray
    scheme: Scheme
    source: str
    PER_FACE: ClassVar[tuple[str, ...]] = ("images", "keypoints", "names", "identities")

    def __post_init__(self):
        n, k = len(self.images), self.scheme.num_keypoints
        if self.keypoints.shape != (n, k, 2) or len(self.names) != n or len(self.identities) != n:
            raise ValueError(f"{self.name}: {n} images need keypoints of shape ({n}, {k}, 2), {n} names and {n} "
                             f"identities; got {self.keypoints.shape}, {len(self.names)}, {len(self.identities)}")

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: {len(self)} faces of {self.num_people} people, "
                f"{self.scheme.num_keypoints} keypoints, {len(self.skipped)} skipped)")

    def report(self) -> str:
        """A short, human-readable account of what was loaded and what was not."""
        lines = [repr(self)]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} face(s): " + ", ".join(
                f"{n} ({why})" for n, why in self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else ""))
        lines += [f"  warning: {w}" for w in self.warnings[:5]]
        if len(self.warnings) > 5:
            lines.append(f"  ... and {len(self.warnings) - 5} more warnings")
        return "\n".join(lines)


FOLDERS = {"youtube-faces-68": "youtube-faces-68", "300w": "300w-subset", "kaggle": "kaggle"}   # in the data root
YOUTUBE_URL = ("https://s3.amazonaws.com/video.udacity-data.com/topher/2018/May/5aea1b91_train-test-data/"
               "train-test-data.zip")
ORIGINS = {"youtube-faces-68": "the Udacity CV Nanodegree's archive of YouTube Faces (Wolf et al., CVPR 2011), "
                               f"{YOUTUBE_URL} (`facekp download` fetches it)",
           "300w": "iBUG 300-W (Sagonas et al. 2013), https://ibug.doc.ic.ac.uk/resources/300-W/, on registration",
           "kaggle": "https://www.kaggle.com/c/facial-keypoints-detection/data (an account; `kaggle competitions "
                     "download -c facial-keypoints-detection`)"}
Spec = NamedTuple("Spec", [("kind", str), ("path", Path)])    # a parsed spec: a key of FOLDERS, the files' path


def parse_spec(spec: str, root: Path | None = None) -> Spec:
    """Data set specs, below the data root (or ``root``): ``youtube-faces-68`` (two CSVs, 68 keypoints); ``300w`` or
    ``300w/SUBSET`` (``afw``, ``helen-train``, ``lfpw-train``: image + ``.pts`` pairs); ``kaggle`` (``training.csv``:
    96×96 gray, 15 keypoints); ``KIND:PATH``, any folder (or Kaggle CSV) of that kind. Else ``ValueError``."""
    kind, colon, rest = spec.partition(":")
    if not colon:
        kind, _, rest = spec.partition("/")
    if kind not in FOLDERS or (colon and not rest) or (rest and not colon and kind != "300w"):
        raise ValueError(f"Unknown data set {spec!r}; use youtube-faces-68, kaggle, 300w, 300w/SUBSET or KIND:PATH")
    return Spec(kind, Path(rest).expanduser() if colon else Path(root or config.data_root()) / FOLDERS[kind] / rest)


def not_found(kind: str, looked: Path, extra: str = "") -> DatasetNotFoundError:
    """The error: where it looked, ``extra``, the origin and FKP_DATA_DIR (``.short``: the first two only)."""
    short = "\n  ".join([f"Data set '{kind}' not found: looked in {looked}."] + [extra] * bool(extra))
    e = DatasetNotFoundError(f"{short}\n  It comes from: {ORIGINS[kind]}\n  Set FKP_DATA_DIR to the folder that "
                             f"holds '{FOLDERS[kind]}/' (now: {config.data_root()}).")
    e.short = short
    return e


def available() -> list[str]:
    """The data set specs found under the data root (e.g. ``youtube-faces-68``, ``300w/afw``)."""
    found, w = [], parse_spec("300w").path
    if (parse_spec("youtube-faces-68").path / "training_frames_keypoints.csv").exists():
        found.append("youtube-faces-68")
    found += [f"300w/{d.name}" for d in sorted(w.glob("*/")) if any(d.glob("*.pts"))]
    if any((parse_spec("kaggle").path / f).exists() for f in ("training.csv", "training.zip")):
        found.append("kaggle")
    return found


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any image array → RGB uint8 (H, W, 3): gray (H, W) or (H, W, 1), gray + alpha, RGB or RGBA; bool, uint8,
    uint16 (scaled by 1/257), other integers (by their maximum) or floats in [0, 1]. Alpha is laid on white."""
    img = np.asarray(image)
    img = img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (2, 3, 4)):
        raise ValueError(f"expected a (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) image, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"empty image of shape {img.shape}")
    if img.dtype.kind not in "biuf":
        raise ValueError(f"unsupported image dtype {img.dtype}")
    if img.dtype != np.uint8:
        scale = np.iinfo(img.dtype).max if img.dtype.kind in "iu" else 1.0
        img = (np.clip(np.nan_to_num(img.astype(np.float64) / scale), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] in (2, 4):                     # alpha, laid on white
        alpha = img[..., -1:] / np.float32(255.0)
        img = (img[..., :-1] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        img = np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=2)
    return np.ascontiguousarray(img)


def _pillow_pixels(im) -> np.ndarray:             # a loaded Pillow image → an array as_rgb accepts
    if im.mode.startswith("I;16"):
        return np.asarray(im, dtype=np.uint16)
    if im.mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float32)
        return arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(im)
    return np.asarray(im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB"))


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), upright by its EXIF orientation; over ``max_pixels``: refused before
    decoding. OpenCV decodes 16-bit PNGs and what Pillow does not know. Raises :class:`ImageReadError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        why = {errno.ENOENT: "no such file", errno.EISDIR: "is a folder, not an image"}.get(e.errno, str(e))
        raise ImageReadError(path, why) from None
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    arr, old, Image.MAX_IMAGE_PIXELS = None, Image.MAX_IMAGE_PIXELS, None     # our limit replaces Pillow's
    try:
        with Image.open(io.BytesIO(data)) as im:                    # reads the header only
            if im.width * im.height > max_pixels:
                raise ImageReadError(path, f"{im.width}x{im.height} image is over the {max_pixels:,}-pixel limit")
            if not (data[:8] == b"\x89PNG\r\n\x1a\n" and data[24:25] == b"\x10"):     # not a 16-bit PNG
                arr = _pillow_pixels(ImageOps.exif_transpose(im))      # a transposed or copied, decoded image
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        pass                                                         # not a Pillow format: OpenCV below
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"truncated or corrupt image data ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
    if arr is None:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None or arr.size == 0:
            raise ImageReadError(path, f"not an image (no decodable image data in its {len(data)} bytes)")
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ImageReadError(path, f"{arr.shape[1]}x{arr.shape[0]} image is over the {max_pixels:,}-pixel limit")
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return as_rgb(arr)


def read_pts(path: str | Path) -> np.ndarray:
    """Parse an iBUG ``.pts`` file; returns (n_points, 2) float32 in **0-based** pixels (the file is 1-based)."""
    text = Path(path).read_text(errors="replace")
    m, body = re.search(r"n_points\s*:\s*(\d+)", text), re.search(r"\{(.*?)\}", text, re.S)
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


class _Face(NamedTuple):
    name: str                           # as in Dataset.names
    image: Path | np.ndarray | None     # the file, or Kaggle's pixels
    keypoints: np.ndarray
    identity: str
    part: str                           # the course's training/test, the 300-W folder, or kaggle
    missing: str = ""                   # why the image is missing, if it is


def youtube_identity(file_name: str) -> str:
    """``Person_Name_12.jpg`` (or ``training/Person_Name_12.jpg``) → ``Person_Name`` (the clip's person)."""
    return re.sub(r"_\d+$", "", Path(file_name).stem)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile) as e:     # ParserError is a ValueError
        raise DataFormatError(f"{path}: not a readable CSV, or zip of one CSV ({e})") from None


def _keypoints(df: pd.DataFrame, columns, path: Path) -> np.ndarray:
    if non_numeric := [c for c in columns if not pd.api.types.is_numeric_dtype(df[c])]:
        raise DataFormatError(f"{path}: keypoint column(s) {non_numeric[:5]} are not numeric")
    return df[columns].to_numpy(np.float32).reshape(len(df), -1, 2)


def _youtube_faces(folder: Path) -> list[_Face]:
    """Both CSVs of the course archive, merged: its own split shares every test person with training."""
    faces = []
    for part in ("training", "test"):
        csv = folder / f"{part}_frames_keypoints.csv"
        if not csv.exists():
            raise not_found("youtube-faces-68", csv)
        df = _read_csv(csv)
        if df.shape[1] != 137:
            raise DataFormatError(f"{csv}: expected a file-name column and 136 keypoint columns (x0,y0,...), "
                                  f"found {df.shape[1]} columns")
        for fname, kp in zip(df.iloc[:, 0].astype(str), _keypoints(df, df.columns[1:], csv)):
            path = folder / part / fname          # both CSVs reuse 770 file names: names are part/file
            faces.append(_Face(f"{part}/{fname}", path, kp, youtube_identity(fname), part,
                               "" if path.exists() else f"listed in {csv.name} but missing from {part}/"))
    return faces


def _300w_faces(folder: Path) -> list[_Face]:
    """Each ``.pts`` below ``folder`` and the image beside it (identity: its stem); broken or unpaired: missing."""
    if not folder.is_dir():
        raise not_found("300w", folder)
    faces, paired = [], set()
    for pts in sorted(folder.rglob("*.pts")):
        try:
            kp, why = read_pts(pts), ""
            if kp.shape != (68, 2):
                why = f"{pts.name}: {kp.shape[0]} points, expected 68"
        except (DataFormatError, OSError) as e:
            kp, why = None, str(e)
        image = next((p for s in IMAGE_SUFFIXES for p in (pts.with_suffix(s), pts.with_suffix(s.upper()))
                      if p.exists()), None)
        paired.add(image)
        rel = pts.relative_to(folder)
        faces.append(_Face(image.name if image else str(rel), image, kp if not why else np.full((68, 2), np.nan),
                           str(rel.with_suffix("")), folder.name,
                           why or ("" if image else "no image next to the .pts file")))
    faces += [_Face(str(p.relative_to(folder)), None, np.full((68, 2), np.nan), p.stem, folder.name,
                    "no .pts file next to the image") for p in sorted(folder.rglob("*"))
              if p.suffix.lower() in IMAGE_SUFFIXES and p not in paired and p.is_file()]
    if not faces:
        raise not_found("300w", folder, "The folder holds no .pts files.")
    return faces


def _kaggle_faces(path: Path) -> list[_Face]:
    """Kaggle's ``training.csv`` (or a zip of it): 30 keypoint columns, empty where a point is missing (NaN:
    incomplete rows are kept whole), and ``Image``, 9216 space-separated pixels. Each row is its own identity."""
    if path.is_dir():
        path = next((path / f for f in ("training.csv", "training.zip") if (path / f).exists()), path)
    if not path.is_file():
        raise not_found("kaggle", path, "Place training.csv or training.zip from Kaggle there.")
    df = _read_csv(path)
    columns = [f"{n}_{a}" for n in SCHEME_15.names for a in "xy"]
    if missing := [c for c in columns + ["Image"] if c not in df.columns]:
        raise DataFormatError(f"{path}: missing column(s) {missing[:4]}{' ...' if len(missing) > 4 else ''}; "
                              "expected the 30 Kaggle keypoint columns and 'Image'")
    names, images = [f"row_{i:05d}" for i in range(len(df))], [_pixels(p) for p in df["Image"].fillna("").astype(str)]
    return [_Face(n, im, kp, n, "kaggle", "" if im is not None else "bad Image field: not 9216 pixel values in 0-255")
            for n, im, kp in zip(names, images, _keypoints(df, columns, path))]


def _pixels(text: str) -> np.ndarray | None:
    """Kaggle's 9216 space-separated pixels as a 96×96 uint8 image; None if they are not that."""
    try:
        p = np.array(text.split(), dtype=np.float32)
    except ValueError:
        return None
    return p.reshape(96, 96).astype(np.uint8) if p.size == 96 * 96 and 0 <= p.min() and p.max() <= 255 else None


def keypoint_problem(kp: np.ndarray, shape: tuple[int, ...], scheme: Scheme, allow_missing: bool,
                     margin: float = 0.5) -> str:
    """Why keypoints (K, 2) in an image of ``shape`` are unusable (infinite, NaN unless ``allow_missing``, beyond
    ``margin`` × the image size outside it, the normaliser's missing, all in one place), or ``""``."""
    h, w = shape[:2]
    bad = np.flatnonzero(np.isinf(kp).any(axis=1) | (np.isnan(kp).any(axis=1) & ~allow_missing))
    if len(bad):
        return f"point {bad[0]} is {kp[bad[0]].tolist()}: coordinates must be finite" + \
            ("" if allow_missing else " (this data set has no missing points)")
    far = np.flatnonzero(((kp < -margin * np.array([w, h])) | (kp > (1 + margin) * np.array([w, h]))).any(axis=1))
    if len(far):
        return f"point {far[0]} at {kp[far[0]].round(1).tolist()} is far outside the {w}x{h} image"
    if np.isnan(kp[[i for g in scheme.normaliser for i in g]]).any():
        return f"the points of the normaliser ({scheme.normaliser_name}) are missing"
    span = np.nanmax(kp, axis=0) - np.nanmin(kp, axis=0)
    return "" if span.max() >= 1.0 else "all keypoints lie within one pixel (a degenerate face)"


def _faces(spec: str, root: Path | None) -> tuple[Spec, list[_Face]]:
    where = parse_spec(spec, root)
    read = {"youtube-faces-68": _youtube_faces, "300w": _300w_faces, "kaggle": _kaggle_faces}[where.kind]
    try:
        return where, read(where.path)
    except DatasetNotFoundError as e:
        if ":" in spec:             # a folder the user named: FKP_DATA_DIR and the origin are beside the point
            raise DatasetNotFoundError(e.short) from None
        raise


def load(spec: str, max_faces: int | None = None, root: Path | None = None, progress: bool = True,
         max_pixels: int = MAX_PIXELS) -> Dataset:
    """Load a data set by spec, at most ``max_faces`` faces taken evenly over it; unreadable images are skipped."""
    where, faces = _faces(spec, root)
    skipped = [(f.name, f.missing) for f in faces if f.missing]
    faces = [f for f in faces if not f.missing]
    if max_faces is not None and len(faces) > max_faces:
        faces = [faces[i] for i in np.unique(np.linspace(0, len(faces) - 1, max_faces).round().astype(int))]
    images, keep, warnings, scheme = [], [], [], SCHEME_15 if where.kind == "kaggle" else SCHEME_68
    for f in tqdm(faces, desc=f"reading {spec}", disable=not progress, leave=False):
        try:
            image = f.image if isinstance(f.image, np.ndarray) else read_image(f.image, max_pixels)
        except ImageReadError as e:
            skipped.append((f.name, e.reason))
            continue
        if why := keypoint_problem(f.keypoints, image.shape, scheme, allow_missing=where.kind == "kaggle"):
            skipped.append((f.name, why))
            continue
        images.append(image)
        keep.append(f)
        (h, w), (x, y) = image.shape[:2], f.keypoints.T        # outside by more than half a pixel
        if n := int(np.sum(((x < -0.5) | (y < -0.5) | (x > w - 0.5) | (y > h - 0.5)) & ~np.isnan(x))):
            warnings.append(f"{f.name}: {n} keypoint(s) outside the {w}x{h} image")
    kps = np.asarray([f.keypoints for f in keep], dtype=np.float32).reshape(-1, scheme.num_keypoints, 2)
    return Dataset(spec, images, kps, np.asarray([f.name for f in keep], dtype=str),
                   np.asarray([f.identity for f in keep], dtype=str), scheme, str(where.path),
                   skipped=skipped, warnings=warnings)


def index(spec: str, root: Path | None = None) -> pd.DataFrame:
    """``name``, ``identity`` and ``part`` of every face of a data set, from its annotations alone (no image read)."""
    where, faces = _faces(spec, root)
    return pd.DataFrame({"name": [f.identity if where.kind == "300w" else f.name for f in faces],
                         "identity": [f.identity for f in faces], "part": [f.part for f in faces]})
