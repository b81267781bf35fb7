"""Project-wide pytest configuration.

* Notebooks need the data sets: without them (no ``FKP_DATA_DIR``, nothing downloaded) they are skipped with
  a message saying so, and the unit tests still run. Chapters 08-11 also need the data of :data:`CHAPTER_NEEDS`;
  each is skipped, naming what it lacks, where that is missing.
* Hypothesis draws the same examples on CI (``CI`` set), so a failure there can be replayed.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

from helpers import config as fkp_config
from helpers import data as fkp_data

_VIDEOS = ["videos/talking_head_1.mp4", "videos/talking_head_2.mp4"]        # `facekp download videos`
_300W = ["300w/afw", "300w/helen-train", "300w/lfpw-train"]                  # iBUG 300-W, on registration
CHAPTER_NEEDS = {"08_": _300W[:1], "09_": _300W[1:] + _VIDEOS, "10_": _300W, "11_": _300W + _VIDEOS}

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(session, config, items):
    root, found = fkp_config.data_root(), fkp_data.available()
    for item in items:
        name = item.path.name
        if not name.endswith(".ipynb"):
            continue
        if "youtube-faces-68" not in found:
            item.add_marker(pytest.mark.skip(reason=f"notebooks need the data sets, none found under {root} "
                                                    "(set FKP_DATA_DIR or run `make data`)"))
            continue
        needs = next((n for prefix, n in CHAPTER_NEEDS.items() if name.startswith(prefix)), [])
        missing = [n for n in needs if n not in found and not (root / n).is_file()]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"{name} needs {', '.join(missing)} under {root} "
                                                    "(see README.md, Data)"))
