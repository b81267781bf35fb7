"""Project-wide pytest configuration.

* Notebooks need the data sets: without them (no ``FKP_DATA_DIR``, nothing downloaded) they are skipped with
  a message saying so, and the unit tests still run.
* Hypothesis draws the same examples on CI (``CI`` set), so a failure there can be replayed.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

from helpers import config as fkp_config

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(session, config, items):
    root = fkp_config.data_root()
    if (root / "youtube-faces-68" / "training_frames_keypoints.csv").exists():
        return
    skip = pytest.mark.skip(reason=f"notebooks need the data sets, none found under {root} "
                                   "(set FKP_DATA_DIR or run `make data`)")
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(skip)
