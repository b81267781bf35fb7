"""The one setup call at the top of every chapter: seeds, plot style, and the versions that produced it."""
import importlib
import logging
import os
import platform
import random

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import config


def setup(seed: int = config.DEFAULT_SEED, deep_learning: bool = False) -> dict:
    """Seed every generator, set the plot style, print and return the versions; ``deep_learning``: Keras too (slow)."""
    random.seed(seed)
    np.random.seed(seed)
    sns.set_theme(context="notebook", style="whitegrid")                # the project's plot style
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "axes.titlesize": 11, "image.cmap": "gray",
                         "figure.autolayout": False})
    names = ["numpy", "pandas", "cv2", "matplotlib", "seaborn", "sklearn"]
    if deep_learning:
        keras = config.import_keras()
        keras.utils.set_random_seed(seed)
        # a chapter that evaluates several models traces one graph each, which TensorFlow's logger calls "retracing"
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
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


def count(n: int, word: str, plural: str | None = None) -> str:
    """``n`` and the word, in the plural unless ``n`` is 1: the chapters' prose rendered from numbers."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def rounded(frame: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """``frame`` for display: numbers with ``decimals`` decimals (no "-0.00"), and "—" where a value does not exist
    (not "NaN")."""
    def cell(v):
        if pd.isna(v):
            return "—"
        return f"{round(v, decimals) + 0.0:.{decimals}f}" if isinstance(v, float) else v   # + 0.0: -0.0 → 0.0
    return frame.map(cell)
