"""Paths, run profiles and small utilities. Paths come from this file's location, never the working directory (nbval
runs notebooks from ``notebooks/``); ``FKP_DATA_DIR``, ``FKP_FIGURES_DIR`` and ``FKP_PROFILE`` are read when called."""
import contextlib
import hashlib
import io
import os
import platform
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROJECT_DATA_DIR = ROOT / "data"
CACHE_DIR = PROJECT_DATA_DIR / "cache"
SPLITS_DIR = PROJECT_DATA_DIR / "splits"
FIGURES_DIR = ROOT / "figures"
MODELS_DIR = ROOT / "models"
RUNS_DIR = MODELS_DIR / "runs"          # checkpoints, backups and logs of training runs (git-ignored)

IMAGE_SIZE = 96          # side of the square grayscale crops the networks see
DEFAULT_SEED = 42
# TensorFlow's XLA auto-clustering, which `facekp train` turns on (benchmarks/training.py measures its gain)
XLA_FLAGS = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"


def machine() -> str:
    """The processor (its model name on Linux), architecture and CPU count, as runs and benchmarks record them:
    floating-point results, and so a trained model's weights, are reproducible on the same machine and backend."""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu} ({platform.machine()}), {os.cpu_count()} CPUs"


def shown(path: Path) -> Path:
    """``path`` relative to the repository root where it lies inside it (as messages and commands show it)."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def figures_dir() -> Path:
    """``$FKP_FIGURES_DIR`` if set (the tests' scratch folder: spares the committed figures), else ``figures/``."""
    env = os.environ.get("FKP_FIGURES_DIR")
    return Path(env).expanduser().resolve() if env else FIGURES_DIR


def data_root() -> Path:
    """``$FKP_DATA_DIR`` if set (a relative one from the project root), else the project's ``data/``."""
    env = os.environ.get("FKP_DATA_DIR")
    return (ROOT / Path(env).expanduser()).resolve() if env else PROJECT_DATA_DIR    # an absolute path replaces ROOT


@dataclass(frozen=True)
class Profile:
    """All sizes a chapter, a test or a training run uses. ``max_faces``: faces a training run reads per data set
    (``None``: all); ``epoch_fraction`` scales a recipe's epochs (and patience), at least 1, at most ``max_epochs``.
    Only training is scaled in the quick profile: what the chapters describe, draw and evaluate uses every face."""
    name: str
    max_faces: int | None
    epoch_fraction: float
    max_epochs: int | None
    batch_size: int              # batches shown in chapter 03 (a recipe sets its own)
    expansion_factor: int        # k of the offline dataset expansion (chapter 03)
    data_max_faces: int | None   # faces per data set the chapters describe and draw (None: all; only smoke cuts)
    eval_max_faces: int | None   # faces per evaluation set (None: all; only the smoke profile cuts evaluation short)
    benchmark_repeats: int
    video_sequences: tuple[int, int]   # synthetic sequences and their frames (chapter 09, benchmarks/video.py)

    def epochs(self, full: int) -> int:
        n = max(1, round(full * self.epoch_fraction))
        return min(n, self.max_epochs) if self.max_epochs else n


PROFILES: dict[str, Profile] = {      # smoke: seconds (CI); quick: minutes on a laptop; full: the thesis run
    "smoke": Profile("smoke", max_faces=120, epoch_fraction=0.02, max_epochs=2, batch_size=16, expansion_factor=2,
                     data_max_faces=120, eval_max_faces=40, benchmark_repeats=3, video_sequences=(2, 20)),
    "quick": Profile("quick", max_faces=1200, epoch_fraction=0.1, max_epochs=None, batch_size=32, expansion_factor=3,
                     data_max_faces=None, eval_max_faces=None, benchmark_repeats=20, video_sequences=(10, 50)),
    "full": Profile("full", max_faces=None, epoch_fraction=1.0, max_epochs=None, batch_size=32, expansion_factor=5,
                    data_max_faces=None, eval_max_faces=None, benchmark_repeats=100, video_sequences=(40, 100)),
}


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile called ``name`` (default: ``$FKP_PROFILE``, else ``quick``), with optional overrides."""
    name = (name or os.environ.get("FKP_PROFILE") or "quick").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; FKP_PROFILE must be one of {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


def sha256sum(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_atomic(path, data: bytes | str) -> Path:
    """Write ``data`` (``str``: UTF-8) to ``path`` via a temporary file and a rename: never half a file; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")   # concurrent writers never collide
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_npz(path, compressed: bool = False, **arrays) -> Path:
    """``np.savez`` (``compressed``: ``savez_compressed``) of ``arrays`` to ``path`` through :func:`write_atomic`."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return write_atomic(path, buf.getvalue())


def import_keras():
    """``import keras`` (returned) without TensorFlow's C++ start-up messages on stderr, which no setting turns off."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = None
    with open(os.devnull, "w") as devnull:
        with contextlib.suppress(OSError):      # no real stderr (some embedded kernels): nothing to silence
            saved = os.dup(2)                   # the C++ code writes to file descriptor 2 itself: /dev/null meanwhile
            os.dup2(devnull.fileno(), 2)
        try:
            import keras
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
    return keras
