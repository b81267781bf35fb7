"""A statistical shape model of the 68 points (Cootes et al., CVIU 1995): Procrustes-aligned training shapes, then PCA.
A face's distance in shape space flags implausible keypoints, projection repairs them (fit: ``facekp shape --fit``)."""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config

SHAPE_PATH = config.MODELS_DIR / "shape68.json"
TRAIN_SPECS = ("youtube-faces-68", "300w/helen-train", "300w/lfpw-train")


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (``A``: scale × rotation, no reflection): ``src @ A.T + t`` ≈ ``dst`` (Umeyama 1991);
    both (K, 2) without missing points."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    a, b = (s * d).sum(), (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()       # the complex-number solution
    scale_rot = np.array([[a, -b], [b, a]]) / max((s ** 2).sum(), 1e-12)
    return scale_rot, md - ms @ scale_rot.T


@dataclass
class ShapeModel:
    """``mean`` (K, 2) of unit size; ``components`` (m, 2K) orthonormal; ``variances`` (m,) along them;
    ``residual_variance``: per dimension, what the m components leave of the training shapes."""
    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float

    def _params(self, keypoints):
        kp = np.asarray(keypoints, np.float64)
        a, t = similarity(kp, self.mean)
        x = (kp @ a.T + t - self.mean).ravel()                  # the face in the mean's frame, minus the mean
        b = self.components @ x
        return b, x - b @ self.components, (a, t)

    def distance(self, keypoints) -> float:
        """Normalised Mahalanobis distance of a face (K, 2) to the training shapes, inside the model and in the
        residual (Moghaddam & Pentland 1997): about 1 for a typical training face, larger the stranger it is."""
        b, r, _ = self._params(keypoints)
        dof = self.mean.size - 4 - len(b)                        # similarity removes 4 degrees of freedom
        return float(np.sqrt(((b ** 2 / self.variances).sum() + (r ** 2).sum() / self.residual_variance)
                             / (len(b) + dof)))

    def project(self, keypoints, limit: float = 3.0) -> np.ndarray:
        """The closest face the model makes with parameters within ±``limit`` std devs, in the face's own pose."""
        b, _, (a, t) = self._params(keypoints)
        b = np.clip(b, -limit * np.sqrt(self.variances), limit * np.sqrt(self.variances))
        shape = self.mean + (b @ self.components).reshape(self.mean.shape)
        return ((shape - t) @ np.linalg.inv(a).T).astype(np.float32)

    def save(self, path=SHAPE_PATH) -> Path:
        return config.write_atomic(path, json.dumps({k: np.asarray(v).tolist() for k, v in vars(self).items()}) + "\n")

    @classmethod
    def load(cls, path=SHAPE_PATH) -> "ShapeModel":
        try:
            blob = json.loads(Path(path).read_text())
            return cls(*(np.asarray(blob[k], np.float64) for k in ("mean", "components", "variances")),
                       float(blob["residual_variance"]))
        except FileNotFoundError:
            raise FileNotFoundError(f"no shape model at {path}: fit it with `facekp shape --fit`") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a shape model ({type(e).__name__}: {e}); refit it with "
                             "`facekp shape --fit`") from None


def fit(keypoints: np.ndarray, variance_kept: float = 0.98, iterations: int = 10) -> ShapeModel:
    """A :class:`ShapeModel` of the complete faces (N, K, 2): components keeping ``variance_kept`` of the variance."""
    kp = np.asarray(keypoints, np.float64)
    kp = kp[np.isfinite(kp).all(axis=(1, 2))]
    if len(kp) < 10:
        raise ValueError(f"a shape model needs at least 10 complete faces, got {len(kp)}")
    mean = kp[0] - kp[0].mean(0)
    for _ in range(iterations):
        mean /= np.linalg.norm(mean)
        aligned = np.stack([k @ a.T + t for k in kp for a, t in [similarity(k, mean)]])
        mean = aligned.mean(0) - aligned.mean(0).mean(0)
    mean /= np.linalg.norm(mean)
    aligned = np.stack([k @ a.T + t for k in kp for a, t in [similarity(k, mean)]])
    x = (aligned - mean).reshape(len(kp), -1)
    _, sv, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    var = sv ** 2 / (len(kp) - 1)
    m = int(np.searchsorted(np.cumsum(var) / var.sum(), variance_kept) + 1)
    dof = mean.size - 4 - m
    return ShapeModel(mean, vt[:m], var[:m], float(var[m:].sum() / max(dof, 1)))
