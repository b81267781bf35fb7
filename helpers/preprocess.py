"""From a photograph and its keypoints to a 96×96 gray face: one function a step, :func:`prepare` for all of them.
Coordinates are 0-based pixel centres; a crop ``(x0, y0, side)`` is pixels ``x0 .. x0+side-1`` × ``y0 .. y0+side-1``,
resized as OpenCV maps pixel centres: ``x_out = (x_in - x0 + 0.5) * size / side - 0.5``."""
import hashlib
import json
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
from tqdm import tqdm

from . import config
from .data import FaceCollection, as_rgb
from .schemes import Scheme, get_scheme

CROP_SCALE = 1.5          # crop side = CROP_SCALE × the longer side of the landmark box
PREPROCESS_VERSION = 3    # bump when the geometry or the loaders' rules change: it invalidates cached arrays


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray uint8 (H, W) from gray, RGB or RGBA (its alpha ignored), in any dtype :func:`helpers.data.as_rgb` takes."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 2:
        raise ValueError(f"expected a (H, W), (H, W, 3) or (H, W, 4) image, got shape {img.shape}")
    img = img[..., :3] if img.ndim == 3 and img.shape[2] == 4 else img
    return img if img.ndim == 2 and img.dtype == np.uint8 else cv2.cvtColor(as_rgb(img), cv2.COLOR_RGB2GRAY)


def keypoint_box(keypoints: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) bounding box of the non-missing keypoints of one face (K, 2)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if np.all(np.isnan(kp)):
        raise ValueError("cannot box a face whose keypoints are all missing")
    return np.concatenate([np.nanmin(kp, axis=0), np.nanmax(kp, axis=0)])


def box_to_crop(box, scale: float = CROP_SCALE, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The square crop ``(x0, y0, side)`` (integers), ``side = scale × max(box width, height)``, centred on the centre
    of ``box`` = (x0, y0, x1, y1) moved by ``shift`` × side (:mod:`helpers.detect` fits both for a detector's box)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"degenerate box {box}")
    side = max(1, int(round(scale * max(x1 - x0, y1 - y0))))
    cx, cy = (x0 + x1) / 2 + shift[0] * side, (y0 + y1) / 2 + shift[1] * side
    # pixel centres: the square of `side` pixels centred on (cx, cy)
    return np.array([int(np.floor(cx - (side - 1) / 2 + 0.5)), int(np.floor(cy - (side - 1) / 2 + 0.5)), side],
                    dtype=np.int64)


def crop_face(image: np.ndarray, crop, size: int = config.IMAGE_SIZE, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Cut ``crop`` = (x0, y0, side) out of ``image`` (padding beyond its edges) and resize it to size²."""
    gray = to_gray(image)
    (h, w), (x0, y0, side) = gray.shape, (int(v) for v in crop)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if ix1 <= ix0 or iy1 <= iy0:
        raise ValueError(f"crop {tuple(crop)} does not overlap the {w}x{h} image")
    patch = gray[iy0:iy1, ix0:ix1]
    pads = (iy0 - y0, y0 + side - iy1, ix0 - x0, x0 + side - ix1)
    if any(pads):
        patch = cv2.copyMakeBorder(patch, *pads, border)
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR)


def to_crop_coords(keypoints: np.ndarray, crop, size: int = config.IMAGE_SIZE) -> np.ndarray:
    """Image pixel coordinates → crop pixel coordinates (NaN stays NaN). ``crop`` may be (3,) or (N, 3)."""
    c = np.asarray(crop, dtype=np.float32)[..., None, :]          # (..., 1, 3): origin c[..., :2], side c[..., 2:]
    return ((np.asarray(keypoints, np.float32) - c[..., :2] + 0.5) * (size / c[..., 2:]) - 0.5).astype(np.float32)


def to_image_coords(keypoints: np.ndarray, crop, size: int = config.IMAGE_SIZE) -> np.ndarray:
    """Crop pixel coordinates → image pixel coordinates: the inverse of :func:`to_crop_coords`."""
    c = np.asarray(crop, dtype=np.float32)[..., None, :]
    return ((np.asarray(keypoints, np.float32) + 0.5) * (c[..., 2:] / size) - 0.5 + c[..., :2]).astype(np.float32)


def normalise_keypoints(keypoints: np.ndarray, size: int = config.IMAGE_SIZE) -> np.ndarray:
    """Crop pixels → [-1, 1]: the crop's outer edges map to ±1 (``(x + 0.5) / size * 2 - 1``)."""
    return ((np.asarray(keypoints, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)


def denormalise_keypoints(normalised: np.ndarray, size: int = config.IMAGE_SIZE) -> np.ndarray:
    """[-1, 1] → crop pixels: the inverse of :func:`normalise_keypoints`."""
    return ((np.asarray(normalised, dtype=np.float32) + 1.0) / 2.0 * size - 0.5).astype(np.float32)


@dataclass
class Faces(FaceCollection):
    """Preprocessed faces (all chapters after 02): ``images`` uint8 (N, size, size); ``keypoints`` float32 (N, K, 2)
    in crop pixels, NaN where missing; ``crops`` int64 (N, 3) = (x0, y0, side) in the original image; ``source``."""
    images: np.ndarray
    keypoints: np.ndarray
    names: np.ndarray
    identities: np.ndarray
    crops: np.ndarray
    scheme: Scheme
    source: str
    PER_FACE: ClassVar[tuple[str, ...]] = ("images", "keypoints", "names", "identities", "crops")

    def __repr__(self) -> str:
        return (f"Faces({self.source!r}: {len(self)} faces of {self.num_people} people, "
                f"{self.images.shape[1:]} images, {self.scheme.num_keypoints} keypoints)")

    def save(self, path) -> None:
        config.write_npz(path, compressed=True, images=self.images, keypoints=self.keypoints,
                         names=self.names.astype(str), identities=self.identities.astype(str), crops=self.crops,
                         scheme=self.scheme.name, source=self.source,
                         skipped=np.array([f"{n}\t{w}" for n, w in self.skipped], dtype=str),
                         warnings=np.array(self.warnings, dtype=str))

    @classmethod
    def load(cls, path) -> "Faces":
        with np.load(path, allow_pickle=False) as z:
            skipped = [tuple(s.split("\t", 1)) for s in z["skipped"].tolist()]
            return cls(z["images"], z["keypoints"], z["names"], z["identities"], z["crops"],
                       get_scheme(str(z["scheme"])), str(z["source"]), skipped=skipped, warnings=z["warnings"].tolist())


def prepare(dataset, size: int = config.IMAGE_SIZE, progress: bool = True) -> Faces:
    """Crop each face of a Dataset around its landmark box, resized to size²; Kaggle's (crops already) stay whole."""
    n, whole = len(dataset), dataset.name.partition(":")[0] == "kaggle"
    images, crops = np.empty((n, size, size), dtype=np.uint8), np.empty((n, 3), dtype=np.int64)
    for i in tqdm(range(n), desc=f"cropping {dataset.name}", disable=not progress, leave=False):
        side = max(dataset.images[i].shape[:2])
        crops[i] = (0, 0, side) if whole else box_to_crop(keypoint_box(dataset.keypoints[i]))
        images[i] = crop_face(dataset.images[i], crops[i], size)
    kps = to_crop_coords(dataset.keypoints, crops, size) if n else dataset.keypoints.copy()
    return Faces(images, kps, dataset.names.copy(), dataset.identities.copy(), crops, dataset.scheme,
                 dataset.name, skipped=list(dataset.skipped), warnings=list(dataset.warnings))


def cache_key(**params) -> str:
    """A short hash of the parameters (and the preprocessing version) that produced an array."""
    blob = json.dumps({**params, "version": PREPROCESS_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
