"""The one setup call at the top of every chapter: seeds, plot style, and the versions that produced it."""
from __future__ import annotations

import importlib
import os
import platform
import random

import numpy as np

from . import config
from .plots import set_style


def setup(seed: int = config.DEFAULT_SEED, deep_learning: bool = False) -> dict:
    """Seed every generator, set the plot style, print the versions (returned as a dict); ``deep_learning=True``
    also imports Keras (a few seconds) and seeds it with ``keras.utils.set_random_seed``."""
    random.seed(seed)
    np.random.seed(seed)
    set_style()
    names = ["numpy", "pandas", "cv2", "matplotlib", "seaborn", "sklearn"]
    if deep_learning:
        keras = config.import_keras()
        keras.utils.set_random_seed(seed)
        names += ["keras", os.environ.get("KERAS_BACKEND", "tensorflow")]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = "not installed"
    profile = config.get_profile()
    print(f"profile: {profile.name} | seed: {seed} | " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return versions
