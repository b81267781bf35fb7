"""Shared fixtures: tiny data sets written by the tests themselves."""
from __future__ import annotations

from pathlib import Path

import pytest

from .support import face_68, write_face, write_pts


@pytest.fixture
def tiny_youtube(tmp_path) -> Path:
    """A course-layout YouTube-Faces folder: 3 people in training, 2 in test (one shared), 1 missing image."""
    root = tmp_path / "root"
    folder = root / "youtube-faces-68"
    rows = {"training": [("Ann_Lee_00.jpg", 0), ("Ann_Lee_01.jpg", 1), ("Bob_Ray_10.jpg", 2), ("Cy_Di_05.jpg", 3)],
            "test": [("Ann_Lee_30.jpg", 4), ("Eve_Ox_02.jpg", 5), ("Gone_Man_01.jpg", 6)]}
    for part, items in rows.items():
        lines = ["," + ",".join(str(i) for i in range(136))]
        for name, seed in items:
            kp = face_68(seed=seed, jitter=1.0)
            if name != "Gone_Man_01.jpg":
                write_face(folder / part / name, kp, seed=seed)
            lines.append(name + "," + ",".join(f"{v:.1f}" for v in kp.ravel()))
        (folder / f"{part}_frames_keypoints.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_300w(tmp_path) -> Path:
    folder = tmp_path / "afw"
    for i in range(4):
        kp = face_68(seed=10 + i, jitter=1.0)
        write_face(folder / f"img{i}_1.jpg", kp, seed=i)
        write_pts(folder / f"img{i}_1.pts", kp)
    return folder
